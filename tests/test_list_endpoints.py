"""``stt-service list-endpoints``: boto3 against a local stand-in for SageMaker's ListEndpoints."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

ENDPOINTS = [
    {
        "EndpointName": "flux-prod",
        "EndpointStatus": "InService",
        "CreationTime": 1772374925.0,
        "LastModifiedTime": 1772701902.0,
    },
    {
        "EndpointName": "flux-dev",
        "EndpointStatus": "Creating",
        "CreationTime": 1773129613.0,
        "LastModifiedTime": 1773129613.0,
    },
    {
        "EndpointName": "nova-3-eu",
        "EndpointStatus": "InService",
        "CreationTime": 1770000000.0,
        "LastModifiedTime": 1771000000.0,
    },
]


class ListEndpoints(BaseHTTPRequestHandler):
    """The awsJson1_1 protocol boto3 speaks: POST / with X-Amz-Target, two results a page."""

    calls: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        assert self.headers["X-Amz-Target"] == "SageMaker.ListEndpoints"
        assert "Credential=AKIDLIST/" in self.headers["Authorization"]  # SigV4-signed
        self.calls.append(body)
        rows = [e for e in ENDPOINTS if body.get("StatusEquals") in (None, e["EndpointStatus"])]
        start = int(body.get("NextToken", "0"))
        page: dict[str, Any] = {
            "Endpoints": [
                {**e, "EndpointArn": f"arn:aws:sagemaker:us-west-2:0:endpoint/{e['EndpointName']}"}
                for e in rows[start : start + 2]
            ]
        }
        if start + 2 < len(rows):
            page["NextToken"] = str(start + 2)
        data = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sagemaker_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ListEndpoints)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ListEndpoints.calls = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def run(url: str, *args: str, creds: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    if creds:
        env |= {"AWS_ACCESS_KEY_ID": "AKIDLIST", "AWS_SECRET_ACCESS_KEY": "secret"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "stt_service.commands.cli",
            "list-endpoints",
            "--endpoint-url",
            url,
            *args,
        ],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )


def test_all_pages_as_a_table(sagemaker_api: str) -> None:
    out = run(sagemaker_api, "--region", "us-west-2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "SageMaker Endpoints  [us-west-2]"
    rows = [line.split() for line in lines if line.startswith(("flux", "nova"))]
    assert [r[:2] for r in rows] == [
        ["flux-prod", "InService"],
        ["flux-dev", "Creating"],
        ["nova-3-eu", "InService"],
    ]
    assert rows[0][2:4] == ["2026-03-01", "14:22:05"]  # CreationTime, in UTC
    assert lines[-1] == "3 endpoint(s)"
    assert len(ListEndpoints.calls) == 2  # followed NextToken


def test_status_filter(sagemaker_api: str) -> None:
    out = run(sagemaker_api, "--status", "inservice")
    assert out.returncode == 0, out.stderr
    assert ListEndpoints.calls[0]["StatusEquals"] == "InService"
    assert "flux-dev" not in out.stdout and out.stdout.rstrip().endswith("2 endpoint(s)")


def test_missing_credentials_is_one_clear_line(sagemaker_api: str) -> None:
    out = run(sagemaker_api, creds=False)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "credentials" in out.stderr.lower()
    assert "Traceback" not in out.stderr
