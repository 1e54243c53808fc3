"""``stt-service demo --web`` and ``stt-service web``: talk to the service from a browser.

``demo --web`` runs everything on this machine: an embedded nats-server that also listens for
WebSocket clients, the worker on the embedded defaults, and the page (:mod:`.webpage`);
it prints the page's URL and every session's results until Ctrl-C. ``web`` serves the page alone
for a running deployment, whose NATS server has a ``websocket`` listener (``--nats-ws``).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..bus.embedded import EmbeddedNats
from ..bus.natsconn import connect_nats
from ..config import Settings
from ..config.nats import redact_url
from .client import ResultCollector, SessionResults, format_message
from .webpage import PageServer

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _until_signal() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _say_where(page: PageServer, host: str) -> None:
    print(f"\n  open {page.url} in a browser, allow the microphone and speak", flush=True)
    if host not in LOCAL_HOSTS:
        print(
            "  (browsers give the microphone only to pages on localhost or https: from another "
            "machine, tunnel the port, e.g. ssh -L)",
            flush=True,
        )
    print("  Ctrl-C stops\n", flush=True)


async def web_demo(
    nats_url: str | None,
    nats_ws: str | None,
    host: str,
    port: int,
    settings_for: Callable[[str], Settings],
) -> int:
    """The whole service and the page on this machine (embedded NATS unless ``nats_url``)."""
    from ..backends import make_recognizer
    from ..runner.serve import inlet_for
    from ..runner.worker import Worker

    if nats_url and not nats_ws:
        print(
            "stt-service demo --web: with --nats-url, give --nats-ws too (the WebSocket listener "
            "of that NATS server, e.g. ws://127.0.0.1:8080)",
            file=sys.stderr,
        )
        return 2
    server: EmbeddedNats | None = None
    if not nats_url:
        server = EmbeddedNats(websocket=True).start()
        nats_url, nats_ws = server.url, server.ws_url
    assert nats_ws is not None
    settings = settings_for(nats_url)
    print(f"stt-service {__version__} demo --web")
    print(f"  NATS      {redact_url(nats_url)}, {nats_ws} for the browser")
    recognizer = make_recognizer(settings)
    describe = getattr(recognizer, "describe", None)
    print(f"  model     {describe() if describe else settings.stt_backend}, loading…", flush=True)
    worker = Worker(settings, recognizer, inlet=inlet_for(settings))
    nc: Any = None
    page: PageServer | None = None
    t0 = time.monotonic()

    def show(res: SessionResults, m: dict[str, Any]) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] [{res.session_id}] {format_message(m)}", flush=True)

    try:
        began = time.perf_counter()
        await worker.start()
        print(f"  ready in {time.perf_counter() - began:.1f} s")
        nc = await connect_nats(settings.nats, url=nats_url, name="stt-web-demo")
        await ResultCollector(nc, settings.stt_output_subject, show).start("*")
        config = {
            "nats_ws": nats_ws,
            "input_subject": settings.stt_input_subject,
            "output_subject": settings.stt_output_subject,
            "backend": recognizer.name,
        }
        page = PageServer(host, port, config).start()
        _say_where(page, host)
        await _until_signal().wait()
        print("\nstopping: the open sessions get their last finals", flush=True)
        await worker.drain()
        return 0
    except RuntimeError as exc:  # a port in use, the model or NATS unavailable: one line
        print(f"stt-service demo --web: {exc}", file=sys.stderr)
        return 1
    finally:
        if page is not None:
            page.stop()
        if nc is not None:
            await nc.close()
        if not worker.draining:  # drain() stopped it
            await worker.stop()
        if server is not None:
            server.stop()


async def page_only(
    nats_ws: str, host: str, port: int, input_subject: str, output_subject: str
) -> int:
    """The page alone, for a deployment whose NATS server listens for WebSocket clients."""
    config = {"nats_ws": nats_ws, "input_subject": input_subject, "output_subject": output_subject}
    try:
        page = PageServer(host, port, config).start()
    except RuntimeError as exc:
        print(f"stt-service web: {exc}", file=sys.stderr)
        return 1
    print(f"stt-service {__version__} web: the page for NATS at {nats_ws}")
    _say_where(page, host)
    try:
        await _until_signal().wait()
    finally:
        page.stop()
    return 0
