"""The message-path bench's phases: the bare subscriber's ceiling, the worker's ceiling when
flooded, and one level of N real-time sessions through the worker to the emulator."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from bench.children import Child  # noqa: E402
from bench.common import (  # noqa: E402
    machine_busy_seconds,
    proc_cpu_seconds,
    self_cpu_seconds,
    thread_cpu_seconds,
)
from bench.msgpath_roles import CHUNK_BYTES, CHUNK_S, INPUT, OUTPUT  # noqa: E402
from bench.pyspy import start_profiles, top_functions  # noqa: E402
from bench.workerlog import STATS_LINE, parse_worker_stats, summarize_log  # noqa: E402

MSGPATH = Path(__file__).resolve().with_name("msgpath.py")


def start_role(name: str, role: str, *extra: str) -> Awaitable[Child]:
    """A child process of ``bench/msgpath.py --role ROLE``."""
    return Child.start(name, [sys.executable, str(MSGPATH), "--role", role, *extra])


async def run_ceiling(nats_url: str, nats_pid: int | None, seconds: float) -> dict[str, Any]:
    print(
        f"baseline (a): bare nats-py subscriber, decode only; measuring {seconds:g} s ...",
        flush=True,
    )
    sub = await start_role(
        "bare subscriber", "bare-sub", "--url", nats_url, "--duration", str(seconds)
    )
    await sub.wait_for("READY", 30)
    nats_cpu0, busy0, t0 = proc_cpu_seconds(nats_pid or 0), machine_busy_seconds(), time.monotonic()
    blast = await start_role("blaster", "blast", "--url", nats_url, "--duration", str(seconds + 30))
    result = await sub.wait_for("RESULT", seconds + 60)
    sent = await blast.wait_for("RESULT", 30)
    elapsed = time.monotonic() - t0
    result["nats_cpu_cores"] = round((proc_cpu_seconds(nats_pid or 0) - nats_cpu0) / elapsed, 3)
    result["machine_busy_cores"] = round((machine_busy_seconds() - busy0) / elapsed, 3)
    await sub.stop(10)
    await blast.stop(10)
    result["blaster"] = sent
    print(
        f"  ceiling: {result['msgs_per_s']} msgs/s decoded, subscriber "
        f"{result['cpu_cores']} cores ({result['msgs_per_cpu_s']} msgs per CPU-second); "
        f"blaster {sent['cpu_cores']} cores, nats-server {result['nats_cpu_cores']} cores",
        flush=True,
    )
    return result


@dataclass
class LevelResult:
    sessions: int
    duration_s: float
    speed: float
    chunks_published: int = 0
    messages_published: int = 0
    worker_messages: int | None = None
    chunks_handled: int | None = None
    dropped: int | None = None
    chunk_handling_ms: dict[str, float] = field(default_factory=dict)
    chunk_lag_ms: dict[str, float] = field(default_factory=dict)
    offered_chunks_per_s: float = 0.0  # chunks published per second
    backlog_s: float | None = None  # publishing done -> the worker had handled it all (probe)
    worker_msgs_per_cpu_s: float | None = None
    publisher_send_lag_ms: dict[str, float] = field(default_factory=dict)
    publisher_late_over_20ms: int = 0
    results: dict[str, int] = field(default_factory=dict)  # published to the client, by type
    errors: dict[str, int] = field(default_factory=dict)  # error results, by code
    backend_audio_ratio: float | None = None  # audio bytes the model got / bytes published
    emulator: dict[str, Any] = field(default_factory=dict)
    worker_cpu_cores: float = 0.0
    worker_threads_cpu_cores: dict[str, float] = field(default_factory=dict)  # by thread name
    worker_peak_rss_mb: float = 0.0
    emulator_cpu_cores: float = 0.0
    emulator_peak_rss_mb: float = 0.0
    publisher_cpu_cores: float = 0.0
    nats_cpu_cores: float = 0.0
    orchestrator_cpu_cores: float = 0.0
    machine_busy_cores: float = 0.0
    other_cpu_cores: float = 0.0  # busy cores not ours: anything else running on the machine
    worker_log: dict[str, int] = field(default_factory=dict)
    worker_stats_line: str = ""
    vad: dict[str, Any] = field(default_factory=dict)  # Silero in the worker (parse_worker_stats)
    meets_lag: bool = False
    meets_no_drop: bool = False
    publisher_kept_up: bool = False
    profile: dict[str, Any] = field(default_factory=dict)


def worker_env(nats_url: str, emulator: dict[str, Any], sessions: int) -> dict[str, str]:
    return {
        "NATS_URL": nats_url,
        "STT_BACKEND": "flux",
        "DEEPGRAM_TRANSPORT": "sagemaker",
        "SAGEMAKER_ENDPOINT_NAME": "msgpath",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2": emulator["url"],
        "AWS_CA_BUNDLE": emulator["ca"],
        "AWS_ACCESS_KEY_ID": "msgpath-bench",
        "AWS_SECRET_ACCESS_KEY": "msgpath-bench",
        "STT_MAX_SESSIONS": str(sessions + 10),
        "STT_DRAIN_TIMEOUT": "30",
        "STT_LOG_LEVEL": "INFO",
    }


class OutputCounter:
    """Counts what the worker publishes on ``ai.voice.transcription.*``: types, error codes."""

    def __init__(self) -> None:
        self.types: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()

    async def on_msg(self, msg: Msg) -> None:
        if msg.subject.endswith("." + PROBE_SESSION):
            return
        try:
            obj = msgpack.unpackb(msg.data, raw=False)
        except Exception:
            self.types["undecodable"] += 1
            return
        kind = obj.get("type", "transcript")
        if kind == "transcript":
            kind = "final" if obj.get("is_final") else "partial"
        self.types[kind] += 1
        if kind == "error":
            self.errors[str(obj.get("code"))] += 1


PROBE_SESSION = "msgpath-probe"


async def probe(nc: Any, timeout: float) -> float | None:
    """Seconds until the worker answers an ``end`` for a session it never saw: it handles one
    subscription in order, so by then it has handled everything published before. None: no
    answer within ``timeout``."""
    answered = asyncio.Event()

    async def on_reply(msg: Msg) -> None:
        answered.set()

    sub = await nc.subscribe(f"{OUTPUT}.{PROBE_SESSION}", cb=on_reply)
    t0 = time.monotonic()
    await nc.publish(f"{INPUT}.{PROBE_SESSION}", msgpack.packb({"type": "end"}))
    await nc.flush()
    try:
        await asyncio.wait_for(answered.wait(), timeout)
        return round(time.monotonic() - t0, 3)
    except TimeoutError:
        return None
    finally:
        await sub.unsubscribe()


async def start_service(
    sessions: int, nats_url: str, args: argparse.Namespace
) -> tuple[Child, Child]:
    """A fresh emulator, and a worker (``stt-service serve``) that streams to it; both ready."""
    streams = args.emulator_h2_streams or sessions + 100
    emu = await start_role("emulator", "emulator", "--h2-streams", str(streams))
    worker: Child | None = None
    try:
        where = await emu.wait_for("READY", 60)
        t0 = time.monotonic()
        worker = await Child.start(
            "worker",
            [sys.executable, "-m", "stt_service.commands.cli", "serve"],
            worker_env(nats_url, where, sessions),
        )
        await worker.wait_for("listening", 120)
    except BaseException:
        if worker is not None:
            await worker.stop(10)
        await emu.stop(10)
        raise
    print(f"  worker ready in {time.monotonic() - t0:.1f} s", flush=True)
    return emu, worker


async def run_level(
    n: int, nats_url: str, nats_pid: int | None, args: argparse.Namespace, profile: bool
) -> LevelResult:
    r = LevelResult(sessions=n, duration_s=args.duration, speed=args.speed)
    print(f"N={n}: starting the emulator and the worker ...", flush=True)
    emu, worker = await start_service(n, nats_url, args)
    nc = None
    publishers: list[Child] = []
    probes = 0
    try:
        counter = OutputCounter()
        nc = await nats.connect(nats_url)
        await nc.subscribe(f"{OUTPUT}.*", cb=counter.on_msg)
        await nc.flush()

        lead = 2.0  # publishers import numpy and read the speech files meanwhile
        t0_epoch = time.time() + lead
        split = [round(i * n / args.publishers) for i in range(args.publishers + 1)]
        for p in range(args.publishers):
            first, count = split[p], split[p + 1] - split[p]
            if count == 0:
                continue
            publishers.append(
                await start_role(
                    f"publisher {p}",
                    "publish",
                    *("--url", nats_url, "--total", str(n), "--first", str(first)),
                    *("--sessions", str(count), "--duration", str(args.duration)),
                    *("--speed", str(args.speed), "--t0", repr(t0_epoch)),
                    *("--ramp", str(args.ramp), "--state", args.state),
                )
            )
        await asyncio.sleep(max(0.0, t0_epoch - time.time()))
        print(
            f"  streaming {n} real-time session(s) of 100 ms chunks for {args.duration:g} s"
            + (f" at {args.speed:g}x" if args.speed != 1 else "")
            + (f", starting over {args.ramp:g} s" if args.ramp > CHUNK_S else "")
            + f" from {len(publishers)} publisher process(es) ...",
            flush=True,
        )
        others = [worker, emu]
        cpu0 = {c.name: c.cpu_seconds() for c in others}
        threads0 = thread_cpu_seconds(worker.pid)
        nats_cpu0, self_cpu0, busy0 = (
            proc_cpu_seconds(nats_pid or 0),
            self_cpu_seconds(),
            machine_busy_seconds(),
        )
        t0 = time.monotonic()
        spy: asyncio.subprocess.Process | None = None
        spy_files: dict[str, Path] = {}
        if profile:
            spy, spy_files = await start_profiles(
                {"worker": worker.pid, "emulator": emu.pid},
                args.duration,
                Path(args.out).parent,
                str(n),
            )

        async def watch() -> None:
            last = (t0, worker.cpu_seconds(), emu.cpu_seconds())
            while True:
                await asyncio.sleep(5.0)
                for c in others:
                    c.sample_rss()
                now, w, e = time.monotonic(), worker.cpu_seconds(), emu.cpu_seconds()
                dt = now - last[0]
                print(
                    f"  t={now - t0:4.0f} s: worker {(w - last[1]) / dt:.2f} cores, emulator "
                    f"{(e - last[2]) / dt:.2f} cores, {sum(counter.types.values())} results "
                    f"({counter.types['error']} errors)",
                    flush=True,
                )
                last = (now, w, e)

        watcher = asyncio.create_task(watch())
        reports = [
            await p.wait_for("RESULT", (args.duration + args.ramp) / args.speed + 120)
            for p in publishers
        ]
        elapsed = time.monotonic() - t0
        watcher.cancel()
        for c in others:
            c.sample_rss()
        r.worker_cpu_cores = round((worker.cpu_seconds() - cpu0["worker"]) / elapsed, 3)
        r.emulator_cpu_cores = round((emu.cpu_seconds() - cpu0["emulator"]) / elapsed, 3)
        r.worker_threads_cpu_cores = {
            name: round((sec - threads0.get(name, 0.0)) / elapsed, 3)
            for name, sec in sorted(thread_cpu_seconds(worker.pid).items(), key=lambda x: -x[1])
        }
        r.nats_cpu_cores = round((proc_cpu_seconds(nats_pid or 0) - nats_cpu0) / elapsed, 3)
        r.orchestrator_cpu_cores = round((self_cpu_seconds() - self_cpu0) / elapsed, 3)
        r.machine_busy_cores = round((machine_busy_seconds() - busy0) / elapsed, 3)
        r.publisher_cpu_cores = round(sum(x["cpu_s"] for x in reports) / elapsed, 3)
        ours = (
            r.worker_cpu_cores
            + r.emulator_cpu_cores
            + r.nats_cpu_cores
            + r.orchestrator_cpu_cores
            + r.publisher_cpu_cores
        )
        r.other_cpu_cores = round(max(0.0, r.machine_busy_cores - ours), 3)
        worker_cpu_s = worker.cpu_seconds() - cpu0["worker"]
        r.chunks_published = sum(x["chunks"] for x in reports)
        r.messages_published = sum(x["messages"] for x in reports)
        r.publisher_late_over_20ms = sum(x["late_over_20ms"] for x in reports)
        # the slowest publisher's figures (with one publisher: its own)
        r.publisher_send_lag_ms = max(
            (x["send_lag_ms"] for x in reports), key=lambda d: d.get("p99", 0), default={}
        )
        # the schedule's rate (whether the publishers kept to it: their send lag)
        r.offered_chunks_per_s = round(r.chunks_published / (args.duration / args.speed), 1)
        if spy is not None:
            await spy.wait()
        print(
            f"  published; waiting (up to {args.catch_up:g} s) for the worker to handle it all ...",
            flush=True,
        )
        r.backlog_s = await probe(nc, args.catch_up)
        probes = 1
        if r.backlog_s is None:
            print(f"  the worker had not caught up after {args.catch_up:g} s", flush=True)
        else:
            print(f"  caught up {r.backlog_s:.2f} s after the last chunk was published", flush=True)
        await asyncio.sleep(2.0)  # the last results
        print("  SIGTERM to the worker (drain) ...", flush=True)
        r.worker_peak_rss_mb = round(worker.peak_rss_kb / 1024, 1)
        r.emulator_peak_rss_mb = round(emu.peak_rss_kb / 1024, 1)
        await worker.stop(90)
        await asyncio.sleep(0.5)  # the last results the drain published
        await nc.close()
        nc = None
        emu_stats = (
            emu.reports.get("RESULT")
            if emu.proc.returncode is not None
            else await stop_emulator(emu)
        )
        r.emulator = emu_stats or {}
        if profile:
            r.profile = {
                name: top_functions(path, args.profile_top) for name, path in spy_files.items()
            }
    finally:
        if nc is not None:
            await nc.close()
        for publisher in publishers:
            await publisher.stop(10)
        await worker.stop(90)
        await emu.stop(20)

    log_path = Path(args.out).with_name(f"msgpath-worker-{n}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("\n".join(worker.log) + "\n")
    stats_line = next((x for x in reversed(worker.log) if STATS_LINE in x), "")
    stats = parse_worker_stats(stats_line) if stats_line else {}
    r.worker_stats_line = stats.get("line", "")
    r.worker_messages = stats.get("messages")
    r.chunks_handled = stats.get("chunk_lag_count", stats.get("chunk_handling_count"))
    if r.chunks_handled is not None:
        r.dropped = r.chunks_published - r.chunks_handled
        if worker_cpu_s > 0:
            r.worker_msgs_per_cpu_s = round((r.worker_messages or 0) / worker_cpu_s)
    r.chunk_handling_ms = stats.get("chunk_handling", {})
    r.chunk_lag_ms = stats.get("chunk_lag", {})
    r.vad = stats.get("vad", {})
    r.results = dict(counter.types)
    r.errors = dict(counter.errors)
    r.worker_log = summarize_log(worker.log, (PROBE_SESSION, "session probe-"))
    if r.emulator.get("audio_bytes") is not None and r.chunks_published:
        r.backend_audio_ratio = round(
            r.emulator["audio_bytes"] / (r.chunks_published * CHUNK_BYTES), 4
        )
    r.meets_lag = bool(r.chunk_lag_ms) and r.chunk_lag_ms["p99"] < args.lag_limit * 1000
    r.meets_no_drop = (
        r.dropped == 0
        and r.worker_messages == r.messages_published + probes
        and not r.errors
        and (r.backend_audio_ratio or 0) >= 0.999
    )
    r.publisher_kept_up = (r.publisher_send_lag_ms.get("p99") or 0) < args.lag_limit * 1000
    if not stats_line:
        print("  the worker logged no 'worker stats:' line; its log ends:", flush=True)
        for line in worker.log[-10:]:
            print(f"    {line}", flush=True)
    print(f"  {json.dumps(short(r))}", flush=True)
    return r


async def run_saturation(
    nats_url: str, nats_pid: int | None, args: argparse.Namespace, ceiling: dict[str, Any] | None
) -> dict[str, Any]:
    """The worker's own ceiling: the baseline's blaster against the worker (acknowledged by
    its replies to probe messages) with ``--saturate-sessions`` sessions on the emulator."""
    n, seconds = args.saturate_sessions, args.saturate
    print(
        f"worker ceiling: {n} sessions, chunks as fast as the worker takes them "
        f"(flux on the emulator); measuring {seconds:g} s ...",
        flush=True,
    )
    emu, worker = await start_service(n, nats_url, args)
    out: dict[str, Any] = {"sessions": n}
    try:
        cpu0, emu0, t0 = worker.cpu_seconds(), emu.cpu_seconds(), time.monotonic()
        nats0, busy0 = proc_cpu_seconds(nats_pid or 0), machine_busy_seconds()
        blast = await start_role(
            "probe blaster",
            "blast",
            *("--probe", "--url", nats_url, "--total", str(n), "--duration", str(seconds)),
        )
        spy: asyncio.subprocess.Process | None = None
        spy_files: dict[str, Path] = {}
        if args.profile:
            spy, spy_files = await start_profiles(
                {"worker": worker.pid, "emulator": emu.pid},
                seconds,
                Path(args.out).parent,
                "saturate",
            )
        report = await blast.wait_for("RESULT", seconds + 120)
        elapsed = time.monotonic() - t0
        if spy is not None:
            await spy.wait()
            out["profile"] = {
                name: top_functions(path, args.profile_top) for name, path in spy_files.items()
            }
        worker_cpu_s = worker.cpu_seconds() - cpu0
        out.update(
            worker_cpu_cores=round(worker_cpu_s / elapsed, 3),
            emulator_cpu_cores=round((emu.cpu_seconds() - emu0) / elapsed, 3),
            nats_cpu_cores=round((proc_cpu_seconds(nats_pid or 0) - nats0) / elapsed, 3),
            machine_busy_cores=round((machine_busy_seconds() - busy0) / elapsed, 3),
            blaster=report,
            msgs_per_s=report.get("msgs_per_s"),
        )
        worker.sample_rss()
        out["worker_peak_rss_mb"] = round(worker.peak_rss_kb / 1024, 1)
        await blast.stop(10)
        await asyncio.sleep(1.0)
        await worker.stop(90)
        out["emulator"] = await stop_emulator(emu) or {}
    finally:
        await worker.stop(90)
        await emu.stop(20)
    stats_line = next((x for x in reversed(worker.log) if STATS_LINE in x), "")
    stats = parse_worker_stats(stats_line) if stats_line else {}
    handled = stats.get("chunk_lag_count")
    out.update(
        chunks_sent=report.get("sent"),
        chunks_handled=handled,
        chunk_handling_ms=stats.get("chunk_handling", {}),
        worker_msgs_per_cpu_s=round((stats.get("messages") or 0) / worker_cpu_s)
        if worker_cpu_s
        else None,
        worker_log=summarize_log(worker.log, (PROBE_SESSION, "session probe-")),
        worker_stats_line=stats.get("line", ""),
    )
    Path(args.out).with_name("msgpath-worker-saturate.log").write_text("\n".join(worker.log))
    # Chunks the worker took but refused (``backend_overloaded``: that session's audio was
    # waiting for the recognizer) are answered cheaply and never reach the model: the ceiling
    # is the chunks it accepted, the taken figure beside it
    sent = report.get("sent") or 0
    if handled is not None and sent and out["msgs_per_s"]:
        out["accepted_per_s"] = round(out["msgs_per_s"] * min(handled, sent) / sent)
        out["refused"] = sent - handled
    if ceiling and out.get("accepted_per_s"):
        out["share_of_ceiling"] = round(out["accepted_per_s"] / ceiling["msgs_per_s"], 4)
    print(
        f"  worker ceiling: {out.get('accepted_per_s')} chunks/s accepted"
        + (
            f" ({out['share_of_ceiling']:.1%} of the bare subscriber's)"
            if "share_of_ceiling" in out
            else ""
        )
        + f"; {out['msgs_per_s']} chunks/s taken, {out.get('refused')} of them refused as "
        f"overload; worker {out['worker_cpu_cores']} cores, emulator "
        f"{out['emulator_cpu_cores']} cores",
        flush=True,
    )
    return out


async def stop_emulator(emu: Child) -> dict[str, Any] | None:
    with contextlib.suppress(ProcessLookupError):
        emu.proc.send_signal(signal.SIGTERM)
    try:
        return await emu.wait_for("RESULT", 20)
    except RuntimeError as exc:
        print(f"  {exc}", flush=True)
        return None


def short(r: LevelResult) -> dict[str, Any]:
    keys = (
        "sessions",
        "chunks_published",
        "chunks_handled",
        "dropped",
        "chunk_handling_ms",
        "chunk_lag_ms",
        "publisher_send_lag_ms",
        "errors",
        "backend_audio_ratio",
        "worker_cpu_cores",
        "worker_threads_cpu_cores",
        "worker_peak_rss_mb",
        "emulator_cpu_cores",
        "publisher_cpu_cores",
        "machine_busy_cores",
        "other_cpu_cores",
    )
    return {k: getattr(r, k) for k in keys}
