"""Fixtures: a real nats-server on a free loopback port, the real worker and the real model."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgpack
import nats
import pytest
from nats.aio.client import Client as NATS

from stt_service.audio import WavAudio
from stt_service.backends import make_recognizer
from stt_service.bus.embedded import EmbeddedNats
from stt_service.commands.client import ResultCollector, SessionResults, stream_audio
from stt_service.config import Settings, load_settings
from stt_service.runner.serve import inlet_for
from stt_service.runner.worker import Worker
from stt_service.telemetry import Telemetry


@pytest.fixture
def aws_test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for the standard AWS chain, from the environment as a container gets them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEMULATOR")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "emulator-secret")


@pytest.fixture
def nats_server() -> Any:
    with EmbeddedNats() as server:
        yield server


class Harness:
    """A running service plus a client connection that collects every published message."""

    def __init__(self, settings: Settings, worker: Worker, nc: NATS, collector: ResultCollector):
        self.settings = settings
        self.worker = worker
        self.nc = nc
        self.collector = collector

    def results(self, sid: str) -> SessionResults:
        return self.collector.results(sid)

    async def publish(self, sid: str, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else msgpack.packb(message, use_bin_type=True)
        await self.nc.publish(f"{self.settings.stt_input_subject}.{sid}", data)
        await self.nc.flush()

    async def stream(
        self, sid: str, audio: WavAudio, *, speed: float = 6.0, wait: bool = True, **kw: Any
    ) -> SessionResults:
        """Stream ``audio`` as session ``sid`` (start, chunks, end) and wait for it to close."""
        await stream_audio(
            self.nc, sid, audio, input_subject=self.settings.stt_input_subject, speed=speed, **kw
        )
        if wait:
            await self.wait_closed(sid)
        return self.results(sid)

    async def wait_closed(self, sid: str, timeout: float = 90.0) -> None:
        """Until the session is gone and its last results have been published and received."""
        deadline = time.monotonic() + timeout
        await asyncio.sleep(0.1)
        while sid in self.worker.sessions or self.worker.is_closing(sid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {sid} still open after {timeout} s")
            await asyncio.sleep(0.05)
        await self.nc.flush()
        await asyncio.sleep(0.1)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_service(
    url: str, telemetry: Callable[[str], Telemetry] | None = None, **overrides: Any
) -> AsyncIterator[Harness]:
    """The worker on ``url``; ``telemetry(backend_name)`` gives it recording providers."""
    settings = load_settings(nats_url=url, **overrides)
    recognizer = make_recognizer(settings)
    worker = Worker(
        settings,
        recognizer,
        telemetry(recognizer.name) if telemetry else None,
        inlet_for(settings),
    )
    await worker.start()
    nc = await nats.connect(url)
    collector = await ResultCollector(nc, settings.stt_output_subject).start()
    try:
        yield Harness(settings, worker, nc, collector)
    finally:
        await nc.close()
        await worker.stop()


@pytest.fixture
def service(nats_server: EmbeddedNats) -> Callable[..., AbstractAsyncContextManager[Harness]]:
    """``async with service(**settings_overrides) as h:`` -- the worker on a fresh nats-server."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[Harness]:
        return running_service(nats_server.url, **overrides)

    return make
