"""JetStream mode against core mode: the latency it adds, and how long a failover takes.

    uv run python bench/jetstream.py                          # both parts, defaults below
    uv run python bench/jetstream.py --sessions 1,50,200 --duration 20 --skip-failover
    uv run python bench/jetstream.py --skip-latency --kills 5

**Latency** (per mode and session count): one ``stt-service serve`` (local Whisper tiny.en) on a
fresh ``nats-server -js``; N sessions publish 100 ms chunks at real time for ``--duration`` s of
low background noise (the VAD and the session core run on every chunk; the model is not asked,
so the figures are the message path's, not the recogniser's). Reported: the chunk lag (the
chunk's client ``timestamp`` to the worker handling it, from the worker's ``worker stats:`` line
at SIGTERM: core mode delivers straight from the subscription, JetStream mode through the stream
and an ordered consumer) and the worker's CPU; and the round trip of a one-message session (an
``end`` for a session never started, answered with an ``error``) sent every 0.25 s during the
run: the path a session's first message takes (JetStream mode reads the session's checkpoint
first).

**Failover**: three replicas in JetStream mode, six sessions of looped speech at real time. The
replica serving most of them is killed (SIGKILL); the time from the kill to the next message
published for any of its sessions is the failover time (lease expiry, then the new owner's
replay). The replica is restarted and the replicas rebalance before the next kill.
Results go to ``--out`` (JSON) and a table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import nats
import numpy as np
from nats.aio.msg import Msg

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE.parent))

from common import pct_ms, proc_cpu_seconds  # noqa: E402
from workerlog import parse_worker_stats  # noqa: E402

from stt_service.audio import read_wav  # noqa: E402
from stt_service.bus.embedded import EmbeddedNats  # noqa: E402
from stt_service.commands.client import stream_audio  # noqa: E402
from stt_service.jetstream import partition_owners  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
PARTITIONS = 16


class Worker:
    def __init__(self, url: str, mode: str, sessions: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STT_")}
        env.update(
            NATS_URL=url,
            STT_MODE=mode,
            STT_HEALTH_PORT="0",
            STT_MAX_SESSIONS=str(sessions + 50),
            STT_JS_PARTITIONS=str(PARTITIONS),
            PYTHONUNBUFFERED="1",
        )
        self.mode = mode
        self.lines: list[str] = []
        self._env = env

    async def start(self) -> Worker:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stt_service.commands.cli",
            "serve",
            env=self._env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        await self.wait_for("listening on")
        if self.mode == "jetstream":
            await self.wait_for("partitions: took")
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    async def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + "".join(self.lines[-30:]))
            await asyncio.sleep(0.05)

    def sessions(self) -> set[str]:
        found = set()
        for line in self.lines:
            m = re.search(r"session (\S+) (opened|resumed)", line)
            if m:
                found.add(m.group(1))
        return found

    async def stop(self) -> str:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 60)
        await self._reader
        return next((ln for ln in self.lines if "worker stats:" in ln), "")

    def kill(self) -> None:
        self.proc.kill()


def noise(seconds: float) -> bytes:
    rng = np.random.default_rng(1)
    return (rng.normal(0, 30, int(16000 * seconds))).astype(np.int16).tobytes()


def lag_from(stats: str) -> dict[str, float]:
    lag = parse_worker_stats(stats).get("chunk_lag", {})
    return {k: lag[k] for k in ("p50", "p99") if k in lag}


async def probe_loop(url: str, stop: asyncio.Event, rtts: list[float]) -> None:
    nc = await nats.connect(url)
    i = 0
    while not stop.is_set():
        sid = f"probe-{os.getpid()}-{i}"
        i += 1
        got = asyncio.Event()

        async def on_msg(msg: Msg, got: asyncio.Event = got) -> None:
            got.set()

        sub = await nc.subscribe(f"ai.voice.transcription.{sid}", cb=on_msg)
        t0 = time.monotonic()
        await nc.publish(f"ai.voice.stream.{sid}", msgpack.packb({"type": "end"}))
        try:
            await asyncio.wait_for(got.wait(), 5)
            rtts.append(time.monotonic() - t0)
        except TimeoutError:
            pass
        await sub.unsubscribe()
        await asyncio.sleep(0.25)
    await nc.close()


async def latency_level(mode: str, sessions: int, duration: float) -> dict[str, Any]:
    from stt_service.audio import WavAudio

    with EmbeddedNats(jetstream=True) as server:
        worker = await Worker(server.url, mode, sessions).start()
        nc = await nats.connect(server.url)
        audio = WavAudio(noise(duration), 16000, 1)
        stop = asyncio.Event()
        rtts: list[float] = []
        prober = asyncio.create_task(probe_loop(server.url, stop, rtts))
        cpu0, t0 = proc_cpu_seconds(worker.proc.pid), time.monotonic()

        async def one(i: int) -> None:
            await asyncio.sleep(0.1 * i / sessions)  # spread the chunk times over 100 ms
            await stream_audio(nc, f"lat-{i}", audio, speed=1.0)

        await asyncio.gather(*(one(i) for i in range(sessions)))
        cpu = (proc_cpu_seconds(worker.proc.pid) - cpu0) / (time.monotonic() - t0)
        stop.set()
        await prober
        await nc.close()
        stats = await worker.stop()
    return {
        "mode": mode,
        "sessions": sessions,
        "chunk_lag_ms": lag_from(stats),
        "open_round_trip_ms": pct_ms(rtts),
        "worker_cpu_cores": round(cpu, 3),
    }


async def balanced(nc: Any, replicas: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kv = await nc.jetstream().key_value("STT_AUDIO_leases")
        values = list((await partition_owners(kv)).values())
        if len(values) == replicas and sum(values) == PARTITIONS and max(values) - min(values) <= 1:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("replicas did not share the partitions")


async def failover(kills: int) -> list[float | None]:
    speech = read_wav(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav")
    times: list[float | None] = []
    with EmbeddedNats(jetstream=True) as server:
        workers = [await Worker(server.url, "jetstream", 10).start() for _ in range(3)]
        nc = await nats.connect(server.url)
        last: dict[str, float] = {}

        async def on_result(msg: Msg) -> None:
            last[msg.subject.rsplit(".", 1)[-1]] = time.monotonic()

        await nc.subscribe("ai.voice.transcription.*", cb=on_result)
        for k in range(kills):
            await balanced(nc, 3)
            sids = [f"fo-{k}-{i}" for i in range(6)]
            streams = asyncio.gather(
                *(stream_audio(nc, s, speech, speed=1.0, loop=True, duration=16) for s in sids)
            )
            await asyncio.sleep(6.0)
            victim = max(workers, key=lambda w: len(w.sessions() & set(sids)))
            moved = victim.sessions() & set(sids)
            victim.kill()
            killed = time.monotonic()
            await victim.proc.wait()
            await victim._reader
            took: float | None = None
            while took is None and time.monotonic() - killed < 30:
                if any(last.get(s, 0) > killed for s in moved):
                    took = time.monotonic() - killed
                await asyncio.sleep(0.01)
            times.append(None if took is None else round(took, 2))
            print(f"  kill {k + 1}: {len(moved)} sessions moved, first message after {took} s")
            await streams
            workers.remove(victim)
            workers.append(await Worker(server.url, "jetstream", 10).start())
        await nc.close()
        for w in workers:
            await w.stop()
    return times


async def main(args: argparse.Namespace) -> None:
    levels = [int(n) for n in args.sessions.split(",")]
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "duration_s": args.duration,
        "latency": [],
        "failover_s": [],
    }
    if not args.skip_latency:
        for n in levels:
            for mode in ("core", "jetstream"):
                r = await latency_level(mode, n, args.duration)
                print(f"  {mode:9s} N={n:4d}: {r}", flush=True)
                results["latency"].append(r)
    if not args.skip_failover:
        results["failover_s"] = await failover(args.kills)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{results['machine']}")
    if results["latency"]:
        print(
            "| sessions | mode | chunk lag p50 / p99 (ms) "
            "| session open round trip p50 / p95 (ms) | worker CPU (cores) |"
        )
        print("| --- | --- | --- | --- | --- |")
        for r in results["latency"]:
            lag, rt = r["chunk_lag_ms"], r["open_round_trip_ms"]
            print(
                f"| {r['sessions']} | {r['mode']} | {lag.get('p50')} / {lag.get('p99')} | "
                f"{rt.get('p50')} / {rt.get('p95')} | {r['worker_cpu_cores']} |"
            )
    if results["failover_s"]:
        print(
            f"failover (SIGKILL to the next message of a moved session): {results['failover_s']} s"
        )
    print(f"results: {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sessions", default="1,50,200", help="comma-separated session counts")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of audio per session")
    ap.add_argument("--kills", type=int, default=3, help="failovers to time")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-failover", action="store_true")
    ap.add_argument("--out", default="bench/results/jetstream.json")
    asyncio.run(main(ap.parse_args()))
