"""The long run: sessions opened and closed continuously through the real worker, for an hour.

    uv run python bench/soak.py                         # 60 minutes, 50 sessions at once
    uv run python bench/soak.py --minutes 5 --sessions 20

An embedded ``nats-server``, the worker in this process (local Whisper tiny.en, every default but
``STT_SESSION_IDLE_TIMEOUT``) and a lean client that keeps no results. Sessions of 10-90 s of
recorded speech at real time, ``--sessions`` at once, each ending one of five ways: streamed and
ended; abandoned mid-stream to the idle timeout; bad messages among its chunks; ``configure``
and ``finalize`` mid-stream; opened and ended at once. Every ``--sample-s`` it samples this
process's resident memory, open descriptors, threads, asyncio tasks, live sessions and the
worker's per-session tables (:func:`held`); at the end it prints each one's slope per hour after
the warm-up (the first ``--warmup`` minutes) and what is left at rest once every session closed,
and exits 1 when something grew (:func:`verdict`): memory by more than
``--max-rss-mb-per-hour``, or, at rest, a table not empty, more tasks or descriptors than before
the first session. JSON in ``{out}/soak.json``.

``tests/test_soak.py`` runs the same sessions in waves for about a minute in CI (counts only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
from nats.aio.client import Client as NATS  # noqa: E402

from bench.speech import pcm16, utterances  # noqa: E402
from stt_service.audio import WavAudio  # noqa: E402
from stt_service.commands.client import stream_audio  # noqa: E402
from stt_service.runner.worker import Worker  # noqa: E402

KINDS = ("ended", "abandoned", "bad messages", "configure+finalize", "empty")


def held(worker: Worker) -> dict[str, int]:
    """What the worker keeps: asyncio tasks, descriptors, threads, and every per-session table."""
    models = worker.models
    return {
        "tasks": len(asyncio.all_tasks()),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "sessions": len(worker.sessions),
        "closing": len(worker._closing),
        "limits.ended": len(worker.limits._ended),
        "limits.refused": len(worker.limits._refused),
        "voice.waiting": len(models.voice._waiting),
        "turns.waiting": len(models.turns._waiting) if models.turns is not None else 0,
    }


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def publish(nc: NATS, subject: str, message: dict[str, Any] | bytes) -> None:
    data = message if isinstance(message, bytes) else msgpack.packb(message, use_bin_type=True)
    await nc.publish(subject, data)


async def one(
    nc: NATS, input_subject: str, sid: str, kind: int, audio: WavAudio, speed: float = 1.0
) -> None:
    """A session that ends the ``kind``-th of the five ways (:data:`KINDS`)."""
    subject = f"{input_subject}.{sid}"

    async def stream(start: bool = True, end: bool = True) -> None:
        await stream_audio(
            nc, sid, audio, input_subject=input_subject, speed=speed, send_start=start, send_end=end
        )

    if kind == 0:
        await stream()
    elif kind == 1:
        await stream(end=False)
    elif kind == 2:
        await publish(nc, subject, {"type": "start"})
        await publish(nc, subject, b"\xc1 not msgpack")
        await publish(nc, subject, {"type": "chunk", "audio_b64": "%%%"})
        await publish(nc, subject, {"type": "nonsense"})
        await stream(start=False)
    elif kind == 3:
        await publish(nc, subject, {"type": "start"})
        await publish(nc, subject, {"type": "configure", "keyterms": ["Dashwood"]})
        await stream(start=False, end=False)
        await publish(nc, subject, {"type": "finalize"})
        await publish(nc, subject, {"type": "end"})
    else:
        await publish(nc, subject, {"type": "start", "state": "responding"})
        await publish(nc, subject, {"type": "end"})
    await nc.flush()


def slope_per_hour(t_s: list[float], values: list[float]) -> float:
    if len(t_s) < 2 or max(t_s) == min(t_s):
        return 0.0
    return float(np.polyfit(np.asarray(t_s) / 3600, np.asarray(values), 1)[0])


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    from stt_service.backends import make_recognizer
    from stt_service.bus.embedded import EmbeddedNats
    from stt_service.config import load_settings
    from stt_service.runner.serve import inlet_for

    speech = [u.samples for u in utterances()]
    rng = random.Random(0)
    with EmbeddedNats() as server:
        settings = load_settings(nats_url=server.url, stt_session_idle_timeout=args.idle_timeout)
        recognizer = make_recognizer(settings)
        worker = Worker(settings, recognizer, None, inlet_for(settings))
        await worker.start()
        nc = NATS()
        await nc.connect(server.url)
        received: dict[str, int] = {}

        async def count(msg: Any) -> None:
            kind = str(msgpack.unpackb(msg.data).get("type"))
            received[kind] = received.get(kind, 0) + 1

        await nc.subscribe(f"{settings.stt_output_subject}.>", cb=count)
        t0 = time.monotonic()
        end_at = t0 + args.minutes * 60
        samples: list[dict[str, float]] = []
        started = [0] * len(KINDS)
        n = 0

        async def session() -> None:
            nonlocal n
            while time.monotonic() < end_at:
                n += 1
                kind = rng.randrange(len(KINDS))
                started[kind] += 1
                seconds = rng.uniform(10, 90)
                picks = [speech[rng.randrange(len(speech))] for _ in range(8)]
                audio = joined_for(picks, seconds)
                try:
                    await one(nc, settings.stt_input_subject, f"soak-{n}", kind, audio)
                except Exception as exc:  # a soak goes on; the count says it
                    print(f"  session soak-{n}: {exc}", file=sys.stderr)

        async def sample() -> None:
            while time.monotonic() < end_at + args.sample_s:
                s = {"t_s": time.monotonic() - t0, "rss_mb": rss_mb(), **held(worker)}
                samples.append(s)
                print(
                    f"  {s['t_s'] / 60:5.1f} min  RSS {s['rss_mb']:6.1f} MB  fds {s['fds']}  "
                    f"threads {s['threads']}  tasks {s['tasks']}  sessions {s['sessions']}  "
                    f"opened {worker.stats.sessions_opened}",
                    flush=True,
                )
                await asyncio.sleep(args.sample_s)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(session() for _ in range(args.sessions)))
        await sampler
        for _ in range(int(args.idle_timeout * 10) + 100):  # the abandoned ones time out
            if not worker.sessions and not worker._closing and not worker.limits._ended:
                break
            await asyncio.sleep(0.1)
        rest = {"t_s": time.monotonic() - t0, "rss_mb": rss_mb(), **held(worker)}
        opened, closed = worker.stats.sessions_opened, worker.stats.sessions_closed
        await nc.close()
        await worker.stop()
    warm = [s for s in samples if s["t_s"] >= args.warmup * 60] or samples
    keys = [k for k in samples[0] if k != "t_s"]
    slopes = {k: slope_per_hour([s["t_s"] for s in warm], [s[k] for s in warm]) for k in keys}
    return {
        "minutes": args.minutes,
        "sessions_at_once": args.sessions,
        "sessions": n,
        "by_kind": dict(zip(KINDS, started, strict=True)),
        "opened": opened,
        "closed": closed,
        "received": received,
        "slopes_per_hour": {k: round(v, 2) for k, v in slopes.items()},
        "first_after_warmup": warm[0],
        "last": samples[-1],
        "before": samples[0],  # at rest, before the first session
        "after": rest,  # at rest, every session closed
        "samples": samples,
    }


def joined_for(picks: list[np.ndarray], seconds: float) -> WavAudio:
    """Utterances with 0.6 s between them, cut to ``seconds``."""
    gap = np.zeros(9600, dtype=np.int16)
    x = np.concatenate([p for u in picks for p in (u, gap)])
    while x.size < seconds * 16000:
        x = np.concatenate([x, x])
    return pcm16(x[: int(seconds * 16000)])


def verdict(s: dict[str, Any], max_rss: float) -> list[str]:
    """What grew: memory under load past its bound; at rest after the run, a per-session table
    not empty, more tasks or descriptors than before the first session, more threads than
    under load."""
    grew = []
    if s["slopes_per_hour"]["rss_mb"] > max_rss:
        grew.append(f"RSS {s['slopes_per_hour']['rss_mb']:+.1f} MB/h (bound {max_rss:g})")
    before, after = s["before"], s["after"]
    for k in ("sessions", "closing", "limits.ended", "voice.waiting", "turns.waiting"):
        if after[k]:
            grew.append(f"{k}: {after[k]:g} left after every session closed")
    for k, slack in (("tasks", 0), ("fds", 2)):
        if after[k] > before[k] + slack:
            grew.append(f"{k}: {before[k]:g} before the run, {after[k]:g} after it")
    most = max(x["threads"] for x in s["samples"])
    if after["threads"] > most:
        grew.append(f"threads: {after['threads']:g} after the run, {most:g} at most under load")
    if s["opened"] != s["closed"]:
        grew.append(f"sessions opened {s['opened']}, closed {s['closed']}")
    return grew


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--sessions", type=int, default=50, help="sessions at once")
    p.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=5.0, help="minutes left out of the slopes")
    p.add_argument("--idle-timeout", type=float, default=5.0, help="STT_SESSION_IDLE_TIMEOUT")
    p.add_argument("--max-rss-mb-per-hour", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    args.warmup = min(args.warmup, args.minutes / 3)
    print(
        f"soak: {args.minutes:g} min, {args.sessions} sessions at once, a sample every "
        f"{args.sample_s:g} s ...",
        flush=True,
    )
    s = asyncio.run(soak(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(s, indent=1))
    print(f"\n{s['sessions']} sessions {s['by_kind']}: opened {s['opened']}, closed {s['closed']}")
    print(f"messages received: {s['received']}")
    print("| measure | before | after the warm-up | at the end | slope per hour | after, at rest |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, v in s["slopes_per_hour"].items():
        row = (s["before"][k], s["first_after_warmup"][k], s["last"][k])
        print(f"| {k} | {row[0]:g} | {row[1]:g} | {row[2]:g} | {v:+.2f} | {s['after'][k]:g} |")
    grew = verdict(s, args.max_rss_mb_per_hour)
    for line in grew:
        print(f"GREW: {line}")
    print(f"\nresults: {args.out / 'soak.json'}")
    sys.exit(1 if grew else 0)


if __name__ == "__main__":
    main()
