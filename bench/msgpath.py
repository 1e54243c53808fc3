"""Message-path benchmark: the service's own cost per audio chunk, against a bare subscriber.

    uv run python bench/msgpath.py --sessions 100,500,1000 --duration 20
    uv run python bench/msgpath.py --sessions 50 --duration 5 --baseline-duration 3   # quick look
    uv run --with py-spy python bench/msgpath.py --sessions 1000 --duration 10 \\
        --skip-baseline --profile                                  # where the worker spends time

Everything runs in separate processes on one embedded ``nats-server``, so each one's CPU is its
own (read from ``/proc``):

1. **Ceiling** (baseline a): a bare nats-py subscriber on ``ai.voice.stream.*`` that only
   msgpack-decodes each message, fed by a publisher that sends the same chunk messages the
   client sends (100 ms of 16 kHz int16 PCM as ``{"type": "chunk", "audio": bin, "timestamp"}``)
   as fast as the subscriber takes them. The subscriber acknowledges every few hundred decoded
   messages and the publisher keeps at most a window of unacknowledged ones in flight, so the
   subscriber always has a backlog but nats-server never cuts it off as a slow consumer. The
   ceiling is what the subscriber decoded per second over the measuring window.
2. **Worker ceiling** (``--saturate`` seconds): the same publisher against the worker (Flux on
   the emulator, as below) with ``--saturate-sessions`` open sessions. The acknowledgement is
   the worker's own answer to an ``end`` for a session that was never started, sent after every
   few hundred chunks: it handles one subscription in order, so the answer means everything
   before it was handled. The worker refuses a chunk (``backend_overloaded``, cheaply) while
   that session's audio waits for the recognizer, and saturated it does refuse many: the
   ceiling is the chunks it *accepted* per second, against the bare subscriber's, with the
   chunks it took (accepted or refused) beside it. Accepted audio may still wait in the worker
   (``STT_MAX_BUFFERED_AUDIO_BYTES`` per session), so over a short window this is an upper
   bound on the rate that reaches the model.
3. **Service path** (baseline c): per ``--sessions`` level, a fresh SageMaker emulator serving the
   Deepgram Flux emulator (no model delay: it answers each audio frame at once; it has no other
   mode, and its per-frame loudness analysis is left as it is), and a fresh worker
   (``stt-service serve``, ``STT_BACKEND=flux``) that reaches it through the real AWS SDK
   (HTTP/2, TLS with the emulator's throwaway CA). Publisher processes drive N real-time sessions
   on one shared clock: ``start``, then a 100 ms chunk of looped LibriVox speech every 100 ms
   (session i offset by i/N of 100 ms, so starts are staggered over the first 100 ms; with
   ``--ramp R`` the starts also spread over R seconds, N/R sessions a second), then ``end``.
   A probe like the one above says when the worker has handled the backlog (if any); then the
   worker is stopped with SIGTERM and its ``worker stats:`` log line gives chunk
   handling time and chunk lag (handled minus the chunk's client ``timestamp``) percentiles, and
   the messages it took: chunks published minus chunks handled is what was dropped. The results
   published on ``ai.voice.transcription.*`` are counted by type (``error`` by code), and the
   emulator reports how much audio reached the model. hypercorn serves at most 100 concurrent
   HTTP/2 streams per connection, and the worker opens every stream on one connection, so the
   emulator's limit is raised to the session count + 100 (``--emulator-h2-streams 100``
   restores it: sessions past the 100th then wait for a free stream, and those that wait over
   the worker's 10 s connect timeout fail with ``backend_unavailable``).

On a small machine the publishers, nats-server, the emulator and the worker share the cores:
the CPU of each is reported (the worker's also by thread), with the publishers' own send lag
(how late they were against the schedule) and the busy cores of the whole machine, so a result
that the load generator, the emulator or other work on the machine limited can be told apart.

The bar per level: p99 chunk lag under 20 ms (``--lag-limit``), nothing dropped (every chunk
handled, all audio reached the model, no error results); and the worker's ceiling at least half
the bare subscriber's. Figures go to ``--out`` (default ``bench/results/msgpath.json``, the
worker logs beside it) and a Markdown table on stdout; ``bench/chart.py`` draws them.
``--profile`` samples the worker and the emulator with py-spy during the worker-ceiling phase
and the last level and prints their hottest functions (needs ``py-spy`` on PATH, as above).

This file is the driver (arguments, the run, the table); the child processes are in
``msgpath_roles.py`` and the phases in ``msgpath_phases.py``, on parts the benches share
(``children.py``, ``common.py``, ``workerlog.py``, ``pyspy.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.msgpath_phases import LevelResult, run_ceiling, run_level, run_saturation  # noqa: E402
from bench.msgpath_roles import (  # noqa: E402
    CHUNK_S,
    role_bare_sub,
    role_blast,
    role_emulator,
    role_publish,
)
from stt_service.bus.embedded import EmbeddedNats  # noqa: E402


def table(
    ceiling: dict[str, Any] | None,
    saturation: dict[str, Any] | None,
    runs: list[LevelResult],
    lag_limit: float,
) -> str:
    lines = []
    if ceiling:
        lines.append(
            f"Ceiling (bare nats-py subscriber, decode only): {ceiling['msgs_per_s']} msgs/s at "
            f"{ceiling['cpu_cores']} cores = {ceiling['msgs_per_cpu_s']} msgs per CPU-second "
            f"(blaster {ceiling['blaster']['cpu_cores']} cores, nats-server "
            f"{ceiling['nats_cpu_cores']} cores)"
        )
    if saturation:
        share = saturation.get("share_of_ceiling")
        lines.append(
            f"Worker ceiling ({saturation['sessions']} sessions on the emulator, chunks as fast as "
            f"it takes them): {saturation.get('accepted_per_s')} chunks/s accepted"
            + (
                f" = {share:.1%} of the bare subscriber's (bar: 50%: "
                f"{'met' if share >= 0.5 else '**missed**'})"
                if share is not None
                else ""
            )
            + f"; {saturation['msgs_per_s']} chunks/s taken, {saturation.get('refused')} "
            f"refused as overload; worker {saturation['worker_cpu_cores']} cores "
            f"({saturation['worker_msgs_per_cpu_s']} msgs per CPU-second), emulator "
            f"{saturation['emulator_cpu_cores']} cores"
        )
    if lines:
        lines.append("")
    lines.append(
        "| sessions | chunks/s offered | chunk handling p50 / p99 ms | "
        "chunk lag p50 / p99 / max ms | backlog at end s | dropped | error results | "
        "worker CPU cores (main thread) | worker msgs per CPU-s | worker peak RSS MB | "
        "emulator CPU cores | publisher CPU cores, send lag p99 ms | busy cores: machine "
        f"(not ours) | p99 lag < {lag_limit * 1000:g} ms, nothing dropped |"
    )
    lines.append("| " + " | ".join(["---"] * 14) + " |")
    for r in runs:
        h, g = r.chunk_handling_ms, r.chunk_lag_ms
        errors = ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "0"
        verdict = "yes" if r.meets_lag and r.meets_no_drop else "**no**"
        if not r.publisher_kept_up:
            verdict += " (publisher behind)"
        backlog = "not caught up" if r.backlog_s is None else f"{r.backlog_s:g}"
        main = r.worker_threads_cpu_cores.get("main (Python)")
        lines.append(
            f"| {r.sessions} | {r.offered_chunks_per_s:g} | {h.get('p50')} / {h.get('p99')} | "
            f"{g.get('p50')} / {g.get('p99')} / {g.get('max')} | {backlog} | {r.dropped} | "
            f"{errors} | {r.worker_cpu_cores} ({main}) | {r.worker_msgs_per_cpu_s} | "
            f"{r.worker_peak_rss_mb} | {r.emulator_cpu_cores} | {r.publisher_cpu_cores}, "
            f"{r.publisher_send_lag_ms.get('p99')} | {r.machine_busy_cores} "
            f"({r.other_cpu_cores}) | {verdict} |"
        )
    for r in runs:
        if r.vad:
            v = r.vad
            lines.append(
                f"\n{r.sessions} sessions, voice detector (Silero): {v['frames']} frames in "
                f"{v['calls']} calls, mean batch {v['mean_batch']:g}, {v['us_per_frame']} us of "
                f"CPU a frame: {v['ms_per_audio_s']:g} ms per second of a speaking session's audio"
            )
    return "\n".join(lines)


async def orchestrate(args: argparse.Namespace) -> None:
    levels = [int(x) for x in args.sessions.split(",") if x.strip() and int(x) > 0]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}; load average {os.getloadavg()[0]:.2f}", flush=True)
    out = Path(args.out)
    ceiling: dict[str, Any] | None = None
    saturation: dict[str, Any] | None = None
    runs: list[LevelResult] = []
    with EmbeddedNats() as server:
        proc = getattr(server, "_proc", None)  # for nats-server's CPU (None: not reported)
        nats_pid = proc.pid if proc is not None else None
        if not args.skip_baseline:
            ceiling = await run_ceiling(server.url, nats_pid, args.baseline_duration)
        if args.saturate > 0:
            saturation = await run_saturation(server.url, nats_pid, args, ceiling)
        for i, n in enumerate(levels):
            profile = args.profile and i == len(levels) - 1
            runs.append(await run_level(n, server.url, nats_pid, args, profile))

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": machine,
                "settings": {
                    "duration_s": args.duration,
                    "speed": args.speed,
                    "ramp_s": args.ramp,
                    "state": args.state,
                    "publishers": args.publishers,
                    "lag_limit_ms": args.lag_limit * 1000,
                    "emulator_h2_streams": args.emulator_h2_streams,
                },
                "ceiling": ceiling,
                "worker_ceiling": saturation,
                "runs": [asdict(r) for r in runs],
            },
            indent=2,
        )
    )
    print()
    print(table(ceiling, saturation, runs, args.lag_limit))
    if saturation:
        print_profiles(f"the worker-ceiling phase ({saturation['sessions']} sessions)", saturation)
    for r in runs:
        if r.worker_log:
            print(f"\nworker log at N={r.sessions} (warnings and errors, by kind):")
            for text, count in r.worker_log.items():
                print(f"  {count:6d}  {text}")
        print_profiles(f"N={r.sessions}", {"profile": r.profile})
    print(f"\nresults: {out}")


def print_profiles(where: str, holder: dict[str, Any]) -> None:
    for name, prof in (holder.get("profile") or {}).items():
        if not prof:
            continue
        print(f"\npy-spy, {name} in {where} ({prof['samples']} samples), self time:")
        for f, share in prof["self"].items():
            print(f"  {share:5.1f}%  {f}")
        print("  inclusive:")
        for f, share in prof["inclusive"].items():
            print(f"  {share:5.1f}%  {f}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sessions", default="100,500,1000", help="comma-separated session counts")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of audio per session")
    ap.add_argument("--speed", type=float, default=1.0, help="x real time (more chunks per s)")
    ap.add_argument("--publishers", type=int, default=1, help="publisher processes")
    ap.add_argument(
        "--ramp",
        type=float,
        default=CHUNK_S,
        help="seconds over which the sessions start (and end), evenly; the default starts "
        "them all within one chunk period",
    )
    ap.add_argument(
        "--state",
        choices=["listening", "responding"],
        default="listening",
        help="the sessions' state: responding arms barge-in, so the voice detector (Silero) runs "
        "on every frame; each session says responding again every second after its interrupts",
    )
    ap.add_argument("--lag-limit", type=float, default=0.02, help="seconds: the p99 chunk lag bar")
    ap.add_argument(
        "--catch-up",
        type=float,
        default=60.0,
        help="seconds to wait after publishing for the worker to handle its backlog",
    )
    ap.add_argument("--baseline-duration", type=float, default=10.0, help="ceiling window, s")
    ap.add_argument("--skip-baseline", action="store_true", help="no bare-subscriber ceiling")
    ap.add_argument(
        "--saturate",
        type=float,
        default=10.0,
        help="seconds of the worker-ceiling phase (chunks as fast as it takes them); 0: skip",
    )
    ap.add_argument("--saturate-sessions", type=int, default=100, help="sessions in that phase")
    ap.add_argument(
        "--emulator-h2-streams",
        type=int,
        default=0,
        help="the emulator's HTTP/2 concurrent-stream limit per connection (hypercorn's default "
        "is 100; default here: the session count + 100, so the message path is what is measured)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the worker-ceiling phase and the last level (needs py-spy on PATH)",
    )
    ap.add_argument("--profile-top", type=int, default=15, help="functions shown per profile")
    ap.add_argument("--out", default="bench/results/msgpath.json", help="the JSON results file")
    # the child processes' roles (internal)
    ap.add_argument(
        "--role",
        choices=["bare-sub", "blast", "publish", "emulator"],
        help=argparse.SUPPRESS,
    )
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--total", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--h2-streams", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.role is None:
        asyncio.run(orchestrate(args))
        return
    roles = {
        "bare-sub": role_bare_sub,
        "blast": role_blast,
        "publish": role_publish,
        "emulator": role_emulator,
    }
    if args.role == "publish":
        args.sessions = int(args.sessions)
    asyncio.run(roles[args.role](args))


if __name__ == "__main__":
    main()
