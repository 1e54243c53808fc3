"""``stt-service``: the command line's parser, and the dispatch to its subcommands.

The subcommands live by what they do: running the service (:mod:`.serve_demo`: ``serve``,
``demo``, ``web``), talking to a running one (:mod:`.send_tail`: ``send``, ``tail``) and
operating it (:mod:`.operate`: ``partitions``, ``list-endpoints``, ``emulate``), with
``healthcheck`` in :mod:`.healthcheck`; what they share is in :mod:`.common`. The console script
enters through :mod:`.entry`; ``python -m stt_service.commands.cli`` runs :func:`main` here.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from .client import DEFAULT_INPUT, DEFAULT_OUTPUT, format_message
from .healthcheck import add_healthcheck_arguments, cmd_healthcheck
from .operate import cmd_emulate, cmd_list_endpoints, cmd_partitions
from .send_tail import cmd_send, cmd_tail
from .serve_demo import cmd_demo, cmd_serve, cmd_web

# what other code imports from here (tests: format_message), and the subcommands, by name
__all__ = [
    "build_parser",
    "cmd_demo",
    "cmd_emulate",
    "cmd_healthcheck",
    "cmd_list_endpoints",
    "cmd_partitions",
    "cmd_send",
    "cmd_serve",
    "cmd_tail",
    "cmd_web",
    "format_message",
    "main",
]


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
    sp.add_argument(
        "--playback",
        default=None,
        metavar="WAV",
        help="mono WAV of what the agent plays meanwhile, sent as the echo reference",
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
    sp.add_argument(
        "--stall-after",
        type=float,
        default=0,
        metavar="S",
        help="hang each emulator's first stream after S seconds of audio: open, reading, silent "
        "(the service's watchdog, STT_STALL_TIMEOUT_S, replaces it)",
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
