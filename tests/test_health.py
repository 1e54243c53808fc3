"""``/healthz`` and ``/readyz`` as Kubernetes and the container HEALTHCHECK see them: through
start-up, a drain with a session mid-utterance, a recognizer that is down, and a busy port."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import httpx
import nats
import pytest

from stt_service.backends import make_recognizer, whisper_http
from stt_service.bus.embedded import EmbeddedNats, free_port
from stt_service.commands.client import ResultCollector, normalize_text, stream_audio
from stt_service.config import load_settings
from stt_service.runner.health import HealthServer
from stt_service.runner.worker import Worker

from .speech import pcm16, utterance

pytestmark = pytest.mark.slow


async def get(port: int, path: str) -> tuple[int, str]:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{port}{path}", timeout=5)
        return r.status_code, r.text


def test_routes() -> None:
    server = HealthServer("127.0.0.1", 0, lambda: ["draining"])
    assert server.answer("GET", "/healthz") == (200, "ok\n")
    assert server.answer("GET", "/readyz?verbose=1") == (503, "not ready: draining\n")
    assert server.answer("POST", "/readyz")[0] == 405
    assert server.answer("GET", "/")[0] == 404


async def test_health_through_start_and_a_drain(nats_server: EmbeddedNats) -> None:
    settings = load_settings(nats_url=nats_server.url, stt_chunk_timeout=5.0)
    worker = Worker(settings, make_recognizer(settings))
    health = HealthServer("127.0.0.1", 0, worker.readiness)
    await health.start()
    try:
        # before the worker started: alive, but not ready, and it says why
        assert await get(health.port, "/healthz") == (200, "ok\n")
        status, body = await get(health.port, "/readyz")
        assert status == 503 and "not connected to NATS" in body and "not ready" in body
        await worker.start()
        assert await get(health.port, "/readyz") == (200, "ready\n")

        nc = await nats.connect(nats_server.url)
        collector = await ResultCollector(nc).start()
        u = utterance("0870")
        half = pcm16(u.samples[: u.samples.size // 2])  # mid-utterance, no end
        await stream_audio(nc, "drain-1", half, speed=0, send_end=False)
        await asyncio.sleep(0.5)
        drain = asyncio.create_task(worker.drain())
        await asyncio.sleep(0)
        # draining: still alive, no longer ready; the final is still being decoded
        assert await get(health.port, "/healthz") == (200, "ok\n")
        status, body = await get(health.port, "/readyz")
        assert status == 503 and "draining" in body
        await drain
        await asyncio.sleep(0.2)
        res = collector.results("drain-1")
        await nc.close()
    finally:
        await health.aclose()
    assert len(res.finals) == 1
    assert "mister john dashwood" in normalize_text(res.finals[0]["transcript"])


async def test_readyz_follows_a_whisper_server_going_up(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(whisper_http, "REPROBE_S", 0.2)
    port = free_port()
    settings = load_settings(
        nats_url=nats_server.url, stt_backend="whisper-http", whisper_url=f"http://127.0.0.1:{port}"
    )
    worker = Worker(settings, make_recognizer(settings))
    await worker.start()
    health = HealthServer("127.0.0.1", 0, worker.readiness)
    await health.start()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    try:
        status, body = await get(health.port, "/readyz")
        assert status == 503 and "whisper-http not ready" in body
        server = await asyncio.start_server(answer, "127.0.0.1", port)  # the server comes up
        async with server:
            for _ in range(50):
                await asyncio.sleep(0.1)
                if (await get(health.port, "/readyz"))[0] == 200:
                    break
            assert await get(health.port, "/readyz") == (200, "ready\n")
    finally:
        await health.aclose()
        await worker.stop()


def test_serve_with_its_health_port_taken_fails_with_one_line() -> None:
    with socket.socket() as busy, EmbeddedNats() as server:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STT_")}
        env.update(
            NATS_URL=server.url,
            STT_HEALTH_HOST="127.0.0.1",
            STT_HEALTH_PORT=str(port),
            STT_BACKEND="whisper-http",
            WHISPER_URL="http://127.0.0.1:9",
        )
        proc = subprocess.run(
            [sys.executable, "-m", "stt_service.commands.cli", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("stt-service: cannot serve health checks on 127.0.0.1:")
    assert "STT_HEALTH_PORT" in last


async def test_healthcheck_command_exit_codes() -> None:
    """``stt-service healthcheck``, the container HEALTHCHECK: 0 only on a 200."""
    health = HealthServer("127.0.0.1", 0, lambda: ["draining"])
    await health.start()

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # as the console script runs it
            [
                sys.executable,
                "-c",
                "from stt_service.commands.entry import main; main()",
                "healthcheck",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

    try:
        base = f"http://127.0.0.1:{health.port}"
        alive = await asyncio.to_thread(check, "--url", f"{base}/healthz")
        ready = await asyncio.to_thread(check, "--url", f"{base}/readyz")
        dead = await asyncio.to_thread(
            check, "--url", f"http://127.0.0.1:{free_port()}/healthz", "--timeout", "0.5"
        )
    finally:
        await health.aclose()
    assert alive.returncode == 0 and "200 ok" in alive.stdout
    assert ready.returncode == 1 and "503 not ready: draining" in ready.stderr
    assert dead.returncode == 1 and "no answer" in dead.stderr


def test_healthcheck_loads_no_heavy_module() -> None:
    """It runs every few seconds in each container: the NATS client, pydantic and numpy (half a
    second of CPU to import) stay unloaded."""
    url = f"http://127.0.0.1:{free_port()}/"
    probe = (
        "import sys\n"
        "from stt_service.commands.entry import main\n"
        "try:\n"
        f"    main(['healthcheck', '--url', '{url}', '--timeout', '0.2'])\n"
        "except SystemExit as exit:\n"
        "    heavy = ('nats', 'numpy', 'pydantic')\n"
        "    print(exit.code, sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.stdout.split("\n")[-2:] == ["1 []", ""], (out.stdout, out.stderr)
