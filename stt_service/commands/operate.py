"""``stt-service partitions``, ``list-endpoints`` and ``emulate``: operate a deployment.

``partitions`` shows JetStream mode's audio stream and which replica serves which partition;
``list-endpoints`` lists a region's SageMaker endpoints (:mod:`.endpoints`); ``emulate`` runs
local stand-ins for SageMaker, Deepgram's API and a realtime ASR server, for testing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from ..bus.natsconn import connect_nats
from ..config.nats import redact_url
from .common import _settings


# --- partitions -----------------------------------------------------------------------------------
def cmd_partitions(args: argparse.Namespace) -> int:
    return asyncio.run(_partitions(args))


async def _partitions(args: argparse.Namespace) -> int:
    """JetStream mode at a glance: the audio stream, and which replica serves which partition."""
    from nats.js.errors import NotFoundError

    from ..jetstream import Layout, lease_table, partition_of

    settings = _settings(args)
    layout = Layout.from_settings(settings)
    try:
        nc = await connect_nats(settings.nats, name="stt-service-partitions")
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


# --- emulate --------------------------------------------------------------------------------------
def cmd_emulate(args: argparse.Namespace) -> int:
    try:
        from ..emulator.realtime import RealtimeFaults, RealtimeServer
        from ..emulator.sagemaker import Fault, SageMakerEmulator
        from ..emulator.websocket import DeepgramWebSocketEmulator
    except ImportError as exc:
        print(
            f"stt-service emulate: needs hypercorn and trustme: install stt-service[emulator] "
            f"({exc})",
            file=sys.stderr,
        )
        return 2
    script = args.script or ["hello world"]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    stall = round(args.stall_after * 16000) * 2 if args.stall_after > 0 else None
    faults = [Fault(after_bytes=stall, stream_error="stall")] if stall else []

    async def run() -> None:
        async with (
            SageMakerEmulator(script=script, port=args.port, faults=faults) as sm,
            DeepgramWebSocketEmulator(
                script=script, api_key=args.api_key, port=args.ws_port, stall_after_bytes=stall
            ) as ws,
            RealtimeServer(
                port=args.realtime_port, faults=RealtimeFaults(stall_after_bytes=[stall])
            ) as rt,
        ):
            print(
                "Deepgram emulators (Flux on v2/listen, Nova on v1/listen); no speech recognition:"
            )
            print("each turn of speech energy is answered with the next --script line.")
            if stall:
                print(
                    f"The first stream of each emulator hangs after {args.stall_after:g} s of "
                    "audio (open, reading, silent): the service replaces it (STT_STALL_TIMEOUT_S)."
                )
            print()
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
