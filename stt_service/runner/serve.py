"""``stt-service serve``: the runner, its way in, health checks, signals."""

from __future__ import annotations

import asyncio
import logging
import signal

from ..config import Settings
from ..jetstream.inlet import JetStreamInlet
from .health import HealthServer
from .inlet import CoreInlet, Inlet
from .worker import Worker

log = logging.getLogger(__name__)


def inlet_for(settings: Settings) -> Inlet:
    """The way in of ``STT_MODE``: the core subscription, or JetStream mode's partitions."""
    return JetStreamInlet() if settings.stt_mode == "jetstream" else CoreInlet()


async def run_until_signal(worker: Worker) -> None:
    """Health checks, run until SIGTERM/SIGINT, then drain and return."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    health: HealthServer | None = None
    settings = worker.settings
    if settings.stt_health_port:
        # up before the model loads: /healthz answers, /readyz says what is missing
        health = HealthServer(settings.stt_health_host, settings.stt_health_port, worker.readiness)
        await health.start()
    try:
        await worker.start()
        await stop.wait()
        log.info("signal received")
        await worker.drain()
    finally:
        if health is not None:
            await health.aclose()
