"""``stt-service serve``, ``demo`` and ``web``: run the service, or try it out on this machine.

``serve`` runs the worker as configured from the environment; ``demo`` runs an embedded NATS server,
the worker and a bundled speech sample (or, with ``--web``, the live page of :mod:`.webdemo`);
``web`` serves the live page alone, for a running deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from ..audio import read_wav
from ..bus.natsconn import connect_nats
from ..config import Settings
from ..config.nats import redact_url
from .client import (
    ResultCollector,
    SessionResults,
    StreamTiming,
    format_message,
    stream_audio,
    word_error_rate,
)
from .common import _settings, _setup_logging

log = logging.getLogger("stt_service")


# --- serve ----------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _setup_logging(settings.stt_log_level, settings.stt_log_format)
    from ..backends import make_recognizer
    from ..runner.serve import inlet_for, run_until_signal
    from ..runner.worker import Worker
    from ..telemetry import Telemetry, build_providers

    recognizer = make_recognizer(settings)
    if settings.otel_enabled:
        telemetry = Telemetry(*build_providers(settings.telemetry), backend=recognizer.name)
    else:
        telemetry = Telemetry(backend=recognizer.name)
    worker = Worker(settings, recognizer, telemetry, inlet_for(settings))
    try:
        asyncio.run(run_until_signal(worker))
    except RuntimeError as exc:  # model or NATS unavailable: one clear line
        print(f"stt-service: {exc}", file=sys.stderr)
        return 1
    finally:
        telemetry.shutdown()  # export the spans of the sessions the drain closed
    log.info("stopped")
    return 0


# --- demo -----------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    _setup_logging("WARNING" if not args.verbose else "INFO")
    if args.web:
        from .webdemo import web_demo

        def settings_for(url: str) -> Settings:
            return _settings(args, nats_url=url)

        return asyncio.run(
            web_demo(args.nats_url, args.nats_ws, args.host, args.port, settings_for)
        )
    try:
        return asyncio.run(_demo(args))
    except RuntimeError as exc:  # NATS refused (credentials, TLS) or the model: one clear line
        print(f"stt-service: {exc}", file=sys.stderr)
        return 1


def cmd_web(args: argparse.Namespace) -> int:
    _setup_logging("WARNING")
    from .webdemo import page_only

    return asyncio.run(
        page_only(args.nats_ws, args.host, args.port, args.input_subject, args.output_subject)
    )


async def _demo(args: argparse.Namespace) -> int:
    from ..backends import make_recognizer
    from ..bus.embedded import EmbeddedNats
    from ..runner.serve import inlet_for
    from ..runner.worker import Worker

    data = resources.files("stt_service") / "data"
    wav_path = Path(args.file) if args.file else Path(str(data / "sample.wav"))
    reference = None if args.file else (data / "sample.txt").read_text()
    audio = read_wav(wav_path)

    server: EmbeddedNats | None = None
    url = args.nats_url
    if not url:
        server = EmbeddedNats().start()
        url = server.url
    settings = _settings(args, nats_url=url)
    print(f"stt-service {__version__} demo")
    print(f"  NATS      {redact_url(url)}" + (" (embedded nats-server)" if server else ""))
    recognizer = make_recognizer(settings)
    describe = getattr(recognizer, "describe", None)
    model = describe() if describe else settings.stt_backend
    print(f"  model     {model}, loading…", flush=True)
    worker = Worker(settings, recognizer, inlet=inlet_for(settings))
    nc = None
    try:
        t_load = time.perf_counter()
        await worker.start()
        print(f"  ready in {time.perf_counter() - t_load:.1f} s")
        nc = await connect_nats(settings.nats, url=url, name="stt-demo")
        sid = f"demo-{uuid.uuid4().hex[:6]}"
        timing = StreamTiming()
        t0 = time.monotonic()

        def show(res: SessionResults, m: dict[str, Any]) -> None:
            latency = None
            if m.get("is_final") and m.get("audio_end") is not None:
                sent = timing.sent_at(float(m["audio_end"]))
                latency = (res.arrivals[-1] - sent) * 1000 if sent else None
            print(f"[{time.monotonic() - t0:5.1f}s] {format_message(m, latency)}", flush=True)

        collector = await ResultCollector(nc, settings.stt_output_subject, show).start(sid)
        pace = "at real-time pace" if args.speed == 1 else f"at {args.speed:g}x real time"
        print(
            f"  streaming {wav_path.name} ({audio.duration:.1f} s, {audio.sample_rate} Hz) "
            f"{pace} as session {sid}\n",
            flush=True,
        )
        await stream_audio(
            nc,
            sid,
            audio,
            input_subject=settings.stt_input_subject,
            speed=args.speed,
            timing=timing,
        )
        res = collector.results(sid)
        deadline = time.monotonic() + 30
        while worker.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await worker.wait_closed()
        await asyncio.sleep(0.2)
        print()
        print(
            f"done: {len(res.finals)} final(s), {len(res.partials)} partial(s), "
            f"{len(res.errors)} error(s) in {time.monotonic() - t0:.1f} s"
        )
        if reference is not None:
            wer = word_error_rate(reference, res.text)
            print(f"word error rate against the reference transcript: {100 * wer:.1f}%")
        return 0 if res.finals and not res.errors else 1
    finally:
        if nc is not None:
            await nc.close()
        await worker.stop()
        if server is not None:
            server.stop()
