"""``stt-service``: serve, demo, send, tail."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__
from .audio import read_wav
from .client import (
    DEFAULT_INPUT,
    DEFAULT_OUTPUT,
    ResultCollector,
    SessionResults,
    StreamTiming,
    format_message,
    stream_audio,
    word_error_rate,
)
from .config import ConfigError, Settings, load_settings
from .healthcheck import add_healthcheck_arguments, cmd_healthcheck
from .natsauth import nats_options, redact_url
from .natsconn import connect_nats

log = logging.getLogger("stt_service")


def _setup_logging(level: str, fmt: str = "text") -> None:
    from .telemetry import setup_logging

    setup_logging(level, fmt)


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    if getattr(args, "nats_url", None):
        overrides["nats_url"] = args.nats_url
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        print(f"stt-service: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _nats_url(args: argparse.Namespace) -> str:
    return str(args.nats_url or os.environ.get("NATS_URL") or "nats://127.0.0.1:4222")


# --- serve ----------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _setup_logging(settings.stt_log_level, settings.stt_log_format)
    from .backends import make_recognizer
    from .serve import inlet_for, run_until_signal
    from .telemetry import Telemetry, build_providers
    from .worker import Worker

    recognizer = make_recognizer(settings)
    if settings.otel_enabled:
        telemetry = Telemetry(*build_providers(settings), backend=recognizer.name)
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
    return asyncio.run(_demo(args))


def cmd_web(args: argparse.Namespace) -> int:
    _setup_logging("WARNING")
    from .webdemo import page_only

    return asyncio.run(
        page_only(args.nats_ws, args.host, args.port, args.input_subject, args.output_subject)
    )


async def _demo(args: argparse.Namespace) -> int:
    import nats

    from .backends import make_recognizer
    from .embedded import EmbeddedNats
    from .serve import inlet_for
    from .worker import Worker

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
    print(f"  NATS      {url}" + (" (embedded nats-server)" if server else ""))
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
        nc = await nats.connect(url, **nats_options(settings))
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


# --- send -----------------------------------------------------------------------------------------
def cmd_send(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    if bool(args.file) == bool(args.mic):
        print("stt-service send: give a WAV file or --mic (one of them)", file=sys.stderr)
        return 2
    mic = None
    audio = None
    try:
        if args.mic:
            from .mic import Microphone

            mic = Microphone(args.device, args.chunk_ms)
        else:
            audio = read_wav(args.file)
    except (OSError, ValueError, RuntimeError) as exc:  # MicrophoneError: one line
        print(f"stt-service send: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_send(args, audio, mic))
    except KeyboardInterrupt:
        return 130


async def _send(args: argparse.Namespace, audio: Any, mic: Any = None) -> int:
    url = _nats_url(args)
    try:  # the service's own connect: credentials and TLS from the environment, one-line errors
        nc = await connect_nats(_settings(args), url=url, name="stt-service-send")
    except RuntimeError as exc:
        print(f"stt-service send: {exc}", file=sys.stderr)
        return 1
    prefix = args.session_prefix or f"{'mic' if mic else 'send'}-{uuid.uuid4().hex[:6]}"
    ids = [f"{prefix}-{i + 1}" for i in range(1 if mic else args.sessions)]
    label = {sid: f"[{sid[len(prefix) + 1 :] if args.sessions > 1 else sid}]" for sid in ids}
    timings: dict[str, StreamTiming] = {}
    latencies: dict[str, list[float]] = {sid: [] for sid in ids}

    def show(res: SessionResults, m: dict[str, Any]) -> None:
        latency = None
        t = timings.get(res.session_id)
        if m.get("is_final") and t is not None and m.get("audio_end") is not None:
            sent = t.sent_at(float(m["audio_end"]))
            if sent is not None:
                latency = (res.arrivals[-1] - sent) * 1000
                latencies[res.session_id].append(latency)
        if m.get("is_partial") and args.quiet_partials:
            return
        print(
            f"{label.get(res.session_id, res.session_id)} {format_message(m, latency)}", flush=True
        )

    collector = ResultCollector(nc, args.output_subject, show)
    await collector.start("*")
    duration = args.duration
    if mic is not None:
        total = duration or float("inf")
        print(
            f"listening to {mic.name} ({mic.rate} Hz) as session {ids[0]} on {redact_url(url)}; "
            "speak, and Ctrl-C to end the session",
            flush=True,
        )
    else:
        total = duration or (float("inf") if args.loop else audio.duration)
        print(
            f"sending {Path(args.file).name} ({audio.duration:.1f} s, {audio.sample_rate} Hz, "
            f"{audio.channels} ch) to {args.sessions} session(s) on {redact_url(url)}, "
            f"{args.chunk_ms} ms chunks at {args.speed:g}x",
            flush=True,
        )
    last_report = [time.monotonic()]

    def progress(sent_s: float) -> None:
        now = time.monotonic()
        if now - last_report[0] >= 5:
            last_report[0] = now
            finals = sum(len(collector.results(s).finals) for s in ids)
            print(
                f"… {sent_s:.0f}{'' if total == float('inf') else f'/{total:.0f}'} s sent per "
                f"session, {finals} final(s) so far",
                flush=True,
            )

    stop = asyncio.Event()  # Ctrl-C ends the microphone's session; a second one, everything

    def interrupted() -> None:
        print("\nending the session (its last final follows; Ctrl-C again to quit now)")
        stop.set()
        asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    async def one(i: int, sid: str) -> None:
        timings[sid] = StreamTiming()
        if mic is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, interrupted)
            await mic.stream(
                nc,
                sid,
                input_subject=args.input_subject,
                stop=stop,
                state=args.state,
                duration=duration,
                timing=timings[sid],
                progress=progress,
            )
            return
        await stream_audio(
            nc,
            sid,
            audio,
            input_subject=args.input_subject,
            chunk_ms=args.chunk_ms,
            speed=args.speed,
            state=args.state,
            loop=args.loop,
            duration=duration,
            progress=progress if i == 0 else None,
            timing=timings[sid],
        )

    tasks = [one(i, sid) for i, sid in enumerate(ids)]
    t0 = time.monotonic()
    try:
        await asyncio.gather(*tasks)
        # results for the end of the audio: wait until every session went quiet
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            last = max(
                (r.arrivals[-1] for r in collector.sessions.values() if r.arrivals), default=0
            )
            if last and time.monotonic() - last > 4.0:
                break
    except asyncio.CancelledError:
        pass
    finally:
        await nc.close()
    print(f"\nsummary ({time.monotonic() - t0:.1f} s):")
    print(
        f"{'session':<24} {'finals':>6} {'partials':>8} {'interrupts':>10} {'taken back':>10} "
        f"{'errors':>6} {'final latency p50':>18}"
    )
    bad = 0
    for sid in ids:
        r = collector.results(sid)
        lat = sorted(latencies[sid])
        p50 = f"{lat[len(lat) // 2]:.0f} ms" if lat else "-"
        bad += len(r.errors)
        print(
            f"{sid:<24} {len(r.finals):>6} {len(r.partials):>8} {len(r.interrupts):>10} "
            f"{len(r.cancelled_interrupts):>10} {len(r.errors):>6} {p50:>18}"
        )
    return 1 if bad else 0


# --- tail -----------------------------------------------------------------------------------------
def cmd_tail(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_tail(args))
    except KeyboardInterrupt:
        return 0


async def _tail(args: argparse.Namespace) -> int:
    url = _nats_url(args)
    try:
        nc = await connect_nats(_settings(args), url=url, name="stt-service-tail")
    except RuntimeError as exc:
        print(f"stt-service tail: {exc}", file=sys.stderr)
        return 1
    count = [0]
    done = asyncio.Event()

    def show(res: SessionResults, m: dict[str, Any]) -> None:
        if args.finals and m.get("is_partial"):
            return
        count[0] += 1
        if args.json:
            print(json.dumps({"session": res.session_id, **m}, default=repr), flush=True)
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(m.get("timestamp", time.time())))
            print(f"{stamp} [{res.session_id}] {format_message(m)}", flush=True)
        if args.count and count[0] >= args.count:
            done.set()

    session = args.session or "*"
    await ResultCollector(nc, args.output_subject, show).start(session)
    print(
        f"tailing {args.output_subject}.{session} on {redact_url(url)} (Ctrl+C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        if args.duration:
            await asyncio.wait_for(done.wait(), args.duration)
        else:
            await done.wait()
    except TimeoutError:
        pass
    finally:
        await nc.close()
    return 0


# --- partitions -----------------------------------------------------------------------------------
def cmd_partitions(args: argparse.Namespace) -> int:
    return asyncio.run(_partitions(args))


async def _partitions(args: argparse.Namespace) -> int:
    """JetStream mode at a glance: the audio stream, and which replica serves which partition."""
    from nats.js.errors import NotFoundError

    from .jetstream import Layout, lease_table, partition_of

    settings = _settings(args)
    layout = Layout.from_settings(settings)
    try:
        nc = await connect_nats(settings, name="stt-service-partitions")
    except RuntimeError as exc:
        print(f"stt-service partitions: {exc}", file=sys.stderr)
        return 1
    try:
        js = nc.jetstream(timeout=5.0)
        try:
            info = await js.stream_info(layout.stream)
            leases = await js.key_value(layout.leases)
            state = await js.key_value(layout.state)
        except NotFoundError:
            print(
                f"no stream {layout.stream} or its buckets on {redact_url(settings.nats_url)}: "
                "no replica has run with STT_MODE=jetstream here (or STT_JS_STREAM differs)",
                file=sys.stderr,
            )
            return 1
        except Exception as exc:
            print(f"stt-service partitions: {str(exc) or type(exc).__name__}", file=sys.stderr)
            return 1
        partitions = settings.stt_js_partitions
        transform = info.config.subject_transform
        if transform is not None and "partition(" in transform.dest:
            partitions = int(transform.dest.split("partition(", 1)[1].split(",", 1)[0])
        owners, alive = await lease_table(leases)
        floors: dict[int, int] = {}
        for k in range(partitions):
            with contextlib.suppress(NotFoundError):
                floors[k] = int((await state.get(f"p.{k}")).value or b"0")
        st, cfg = info.state, info.config
        print(
            f"stream {layout.stream} on {redact_url(settings.nats_url)}: {st.messages:,} "
            f"messages, {st.bytes / 1e6:.1f} MB (keeps {cfg.max_age or 0:g} s / "
            f"{(cfg.max_bytes or 0) / 1024**3:.1f} GiB), {partitions} partitions"
        )
        print(f"{len(alive)} replica(s) alive")
        for r in sorted(alive | set(owners.values())):
            held = sorted(k for k, o in owners.items() if o == r)
            behind = sum(max(0, st.last_seq + 1 - floors.get(k, st.last_seq + 1)) for k in held)
            ending = "" if r in alive else " (not renewing: lease ending)"
            print(
                f"  {r}: {len(held)} partition(s) {' '.join(map(str, held)) or '-'}; "
                f"a replay would re-read up to {behind:,} messages{ending}"
            )
        free = [k for k in range(partitions) if k not in owners]
        print(f"unserved partitions: {' '.join(map(str, free)) if free else 'none'}")
        if args.session:
            k = partition_of(args.session, partitions)
            print(f"session {args.session}: partition {k}, served by {owners.get(k, 'nobody')}")
        return 0 if not free else 3
    finally:
        await nc.close()


# --- list-endpoints -------------------------------------------------------------------------------
def cmd_list_endpoints(args: argparse.Namespace) -> int:
    try:
        from .endpoints import format_table, list_endpoints

        endpoints = list_endpoints(args.region, args.status, args.endpoint_url)
    except ImportError as exc:
        print(
            f"stt-service list-endpoints: needs boto3: install stt-service[sagemaker] ({exc})",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # botocore's errors: no credentials, access denied, no network
        print(f"stt-service list-endpoints: {exc}", file=sys.stderr)
        return 1
    print(format_table(endpoints, args.region))
    return 0


# --- healthcheck ----------------------------------------------------------------------------------
# --- emulate --------------------------------------------------------------------------------------
def cmd_emulate(args: argparse.Namespace) -> int:
    try:
        from .emulator.realtime import RealtimeServer
        from .emulator.sagemaker import SageMakerEmulator
        from .emulator.websocket import DeepgramWebSocketEmulator
    except ImportError as exc:
        print(
            f"stt-service emulate: needs hypercorn and trustme: install stt-service[emulator] "
            f"({exc})",
            file=sys.stderr,
        )
        return 2
    script = args.script or ["hello world"]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        async with (
            SageMakerEmulator(script=script, port=args.port) as sm,
            DeepgramWebSocketEmulator(script=script, api_key=args.api_key, port=args.ws_port) as ws,
            RealtimeServer(port=args.realtime_port) as rt,
        ):
            print(
                "Deepgram emulators (Flux on v2/listen, Nova on v1/listen); no speech recognition:"
            )
            print("each turn of speech energy is answered with the next --script line.\n")
            print(f"SageMaker bidirectional streaming on {sm.url} (any endpoint name):")
            print(f"  export AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2={sm.url}")
            print(f"  export AWS_CA_BUNDLE={sm.ca_path}")
            print("  export SAGEMAKER_ENDPOINT_NAME=emulated AWS_REGION=us-east-1")
            print("  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test  # any")
            print(f"Deepgram's hosted API on {ws.url}:")
            print(f"  export DEEPGRAM_URL={ws.url} DEEPGRAM_API_KEY={args.api_key}")
            print("then: STT_BACKEND=flux (or nova) stt-service serve.\n")
            print(
                "A realtime ASR server (vLLM Realtime and OpenAI Realtime; it recognises speech "
                "with the bundled Whisper tiny.en):"
            )
            print(f"  export STT_BACKEND=realtime REALTIME_URL={rt.url}")
            print("  export REALTIME_DIALECT=vllm  # or openai")
            print("or on the SageMaker emulator above: unset REALTIME_URL (no invocation path).")
            print("Ctrl-C stops.", flush=True)
            if args.duration:
                await asyncio.sleep(args.duration)
            else:
                await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


# --- argument parsing -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stt-service",
        description="Streaming speech-to-text over NATS (see README.md for the protocol).",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def nats_opt(sp: argparse.ArgumentParser, help_: str) -> None:
        sp.add_argument("--nats-url", default=None, help=help_)

    def web_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--host", default="127.0.0.1", help="the page's address (127.0.0.1)")
        sp.add_argument("--port", type=int, default=8000, help="the page's port (8000; 0: any)")
        if sp.prog.endswith("demo"):
            sp.add_argument(
                "--nats-ws", default=None, help="with --nats-url: its WebSocket URL, for the page"
            )

    sp = sub.add_parser("serve", help="run the worker, configured from the environment")
    nats_opt(sp, "NATS server URL (default: $NATS_URL)")
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("demo", help="embedded NATS + worker + a bundled speech sample, live")
    nats_opt(sp, "use this NATS server instead of starting an embedded one")
    sp.add_argument("--file", help="a 16-bit PCM WAV file instead of the bundled sample")
    sp.add_argument("--speed", type=float, default=1.0, help="x real time (default 1)")
    sp.add_argument("-v", "--verbose", action="store_true", help="show the service's log")
    sp.add_argument(
        "--web", action="store_true", help="talk to it: serve a live page for the browser's mic"
    )
    web_opts(sp)
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("web", help="serve the live page for a running deployment's NATS")
    sp.add_argument(
        "--nats-ws", required=True, help="the NATS server's WebSocket URL (ws://host:port)"
    )
    web_opts(sp)
    sp.add_argument("--input-subject", default=os.environ.get("STT_INPUT_SUBJECT", DEFAULT_INPUT))
    sp.add_argument(
        "--output-subject", default=os.environ.get("STT_OUTPUT_SUBJECT", DEFAULT_OUTPUT)
    )
    sp.set_defaults(func=cmd_web)

    sp = sub.add_parser(
        "send", help="stream a WAV file (or the microphone) to the service and print the results"
    )
    sp.add_argument(
        "file", nargs="?", help="16-bit PCM WAV file (any rate 8-48 kHz, mono or stereo)"
    )
    sp.add_argument("--mic", action="store_true", help="stream the microphone (Ctrl-C ends)")
    sp.add_argument("--device", default=None, help="with --mic: the input device, name or index")
    nats_opt(sp, "NATS server URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    sp.add_argument("--sessions", type=int, default=1, help="concurrent sessions (default 1)")
    sp.add_argument("--loop", action="store_true", help="repeat the file until --duration")
    sp.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    sp.add_argument("--chunk-ms", type=int, default=100, help="chunk length (default 100 ms)")
    sp.add_argument("--speed", type=float, default=1.0, help="x real time; 0: as fast as possible")
    sp.add_argument(
        "--state",
        choices=["listening", "responding"],
        default="listening",
        help="initial session state (responding: speech barges in)",
    )
    sp.add_argument("--session-prefix", default=None, help="session id prefix")
    sp.add_argument("--wait", type=float, default=30.0, help="max seconds to wait for results")
    sp.add_argument("--quiet-partials", action="store_true", help="print finals only")
    sp.add_argument("--input-subject", default=os.environ.get("STT_INPUT_SUBJECT", DEFAULT_INPUT))
    sp.add_argument(
        "--output-subject", default=os.environ.get("STT_OUTPUT_SUBJECT", DEFAULT_OUTPUT)
    )
    sp.set_defaults(func=cmd_send)

    sp = sub.add_parser("tail", help="print the results published for one or all sessions")
    sp.add_argument("session", nargs="?", help="session id (default: all)")
    nats_opt(sp, "NATS server URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    sp.add_argument("--json", action="store_true", help="one JSON object per line")
    sp.add_argument("--count", type=int, default=0, help="exit after N messages")
    sp.add_argument("--duration", type=float, default=0, help="exit after S seconds")
    sp.add_argument(
        "--finals",
        action="store_true",
        help="skip partials: finals, interrupts (and those taken back) and errors only",
    )
    sp.add_argument(
        "--output-subject", default=os.environ.get("STT_OUTPUT_SUBJECT", DEFAULT_OUTPUT)
    )
    sp.set_defaults(func=cmd_tail)
    sp = sub.add_parser(
        "partitions",
        help="JetStream mode: the audio stream, and which replica serves which partition",
    )
    sp.add_argument("session", nargs="?", help="also say which replica serves this session")
    nats_opt(sp, "NATS server URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    sp.set_defaults(func=cmd_partitions)
    sp = sub.add_parser(
        "healthcheck", help="exit 0 when the local serve answers /healthz (container HEALTHCHECK)"
    )
    add_healthcheck_arguments(sp)
    sp.set_defaults(func=cmd_healthcheck)
    sp = sub.add_parser("list-endpoints", help="list the SageMaker endpoints of a region")
    sp.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or "us-east-1",
        help="AWS region (default: $AWS_REGION or us-east-1)",
    )
    from .endpoints import STATUSES

    sp.add_argument(
        "--status", choices=sorted(STATUSES), default=None, help="only endpoints in this state"
    )
    sp.add_argument(
        "--endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL_SAGEMAKER"),
        help="SageMaker API URL (default: AWS's; $AWS_ENDPOINT_URL_SAGEMAKER)",
    )
    sp.set_defaults(func=cmd_list_endpoints)

    sp = sub.add_parser(
        "emulate",
        help="local stand-ins for SageMaker, Deepgram's API and a realtime ASR server (testing)",
    )
    sp.add_argument("--port", type=int, default=8443, help="SageMaker emulator port (8443)")
    sp.add_argument("--ws-port", type=int, default=8444, help="WebSocket emulator port (8444)")
    sp.add_argument("--api-key", default="test-key", help="the key the WebSocket one accepts")
    sp.add_argument(
        "--realtime-port", type=int, default=8445, help="realtime ASR server port (8445)"
    )
    sp.add_argument(
        "--script", action="append", help="what the model 'hears' in each turn (repeatable)"
    )
    sp.add_argument("--duration", type=float, default=0, help="exit after S seconds")
    sp.set_defaults(func=cmd_emulate)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if getattr(args, "sessions", 1) < 1:
        print("stt-service: --sessions must be at least 1", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
