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
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from bench.common import pct_ms, proc_cpu_seconds, proc_status_kb  # noqa: E402
from stt_service.embedded import EmbeddedNats  # noqa: E402

RATE = 16000
CHUNK_S = 0.1
REARM_CHUNKS = 10  # --state responding: a state_change to responding every second
REARM = msgpack.packb({"type": "state_change", "state": "responding"})
CHUNK_BYTES = int(RATE * CHUNK_S) * 2
INPUT = "ai.voice.stream"
OUTPUT = "ai.voice.transcription"
ACK_SUBJECT = "bench.msgpath.ack"
ACK_EVERY = 500  # the bare subscriber acknowledges every this many decoded messages
BLAST_WINDOW = 5000  # messages the blaster may have in flight beyond the last acknowledgement
BLAST_SUBJECTS = 1000
HERE = Path(__file__).resolve()


# --- small helpers -------------------------------------------------------------------------------
def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, summed by thread name (``comm``)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = "main (Python)" if task.name == str(pid) else re.sub(r"[-_]?\d+$", "", name)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, every process), from /proc/stat."""
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in cpu[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def chunk_message(audio: bytes) -> bytes:
    """A chunk exactly as :func:`stt_service.client.stream_audio` packs it."""
    msg = {"type": "chunk", "timestamp": time.time(), "audio": audio}
    return msgpack.packb(msg, use_bin_type=True)


def speech_chunks() -> list[bytes]:
    """The five LibriVox utterances with 1.5 s of silence after each, in 100 ms chunks."""
    import numpy as np

    from tests.speech import utterances

    parts: list[Any] = [np.zeros(RATE // 2, dtype=np.int16)]
    for u in utterances():
        parts += [u.samples, np.zeros(int(1.5 * RATE), dtype=np.int16)]
    pcm = np.concatenate(parts).astype("<i2").tobytes()
    pcm += bytes(-len(pcm) % CHUNK_BYTES)
    return [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]


def emit(kind: str, data: dict[str, Any]) -> None:
    """A child process's report to the orchestrator: one ``KIND {json}`` line on stdout."""
    print(f"{kind} {json.dumps(data)}", flush=True)


# --- child roles ----------------------------------------------------------------------------------
async def role_bare_sub(args: argparse.Namespace) -> None:
    """Baseline (a): decode every chunk message and nothing else; count what was decoded."""
    nc = await nats.connect(args.url)
    decoded = 0
    chunks = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal decoded, chunks
        obj = msgpack.unpackb(msg.data, raw=False)
        decoded += 1
        if obj.get("type") == "chunk" and len(obj["audio"]) == CHUNK_BYTES:
            chunks += 1
        if decoded % ACK_EVERY == 0:
            await nc.publish(ACK_SUBJECT, str(decoded).encode())

    await nc.subscribe(f"{INPUT}.*", cb=on_msg)
    await nc.flush()
    emit("READY", {})
    while decoded == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(args.warmup)
    n0, c0, t0, cpu0 = decoded, chunks, time.monotonic(), self_cpu_seconds()
    await asyncio.sleep(args.duration)
    n1, c1, t1, cpu1 = decoded, chunks, time.monotonic(), self_cpu_seconds()
    await nc.publish(ACK_SUBJECT, b"stop")
    await nc.flush()
    await nc.close()
    window, cpu = t1 - t0, cpu1 - cpu0
    emit(
        "RESULT",
        {
            "decoded": n1 - n0,
            "chunks": c1 - c0,
            "window_s": round(window, 3),
            "msgs_per_s": round((n1 - n0) / window),
            "cpu_cores": round(cpu / window, 3),
            "msgs_per_cpu_s": round((n1 - n0) / cpu) if cpu else None,
        },
    )


async def role_blast(args: argparse.Namespace) -> None:
    """Chunk messages as fast as the receiver acknowledges them, at most a window ahead.

    Without ``--probe`` the receiver is the bare subscriber (it publishes its count). With
    ``--probe`` it is the worker: the sessions are started first, and after every ``ACK_EVERY``
    chunks comes an ``end`` for a session that was never started (``probe-K``), which the worker
    answers with an ``unknown_session`` error once it has handled everything before it (one
    subscription, in order). The blaster then measures the worker's rate itself."""
    nc = await nats.connect(args.url)
    chunks = speech_chunks()
    count = args.total or BLAST_SUBJECTS
    prefix = "sat" if args.probe else "blast"
    subjects = [f"{INPUT}.{prefix}-{i}" for i in range(count)]
    acked = 0
    stop = False
    progress = asyncio.Event()

    async def on_ack(msg: Msg) -> None:
        nonlocal acked, stop
        if msg.data == b"stop":
            stop = True
        elif args.probe:
            if ".probe-" not in msg.subject:
                return  # the sessions' own results
            acked = max(acked, int(msg.subject.rsplit("-", 1)[1]) * ACK_EVERY)
        else:
            acked = max(acked, int(msg.data))
        progress.set()

    await nc.subscribe(f"{OUTPUT}.*" if args.probe else ACK_SUBJECT, cb=on_ack)
    await nc.flush()
    if args.probe:
        for i, subject in enumerate(subjects):
            begin = {"type": "start", "session_id": f"{prefix}-{i}", "sample_rate": RATE}
            await nc.publish(subject, msgpack.packb(begin))
    window: dict[str, Any] = {}

    async def measure() -> None:
        nonlocal stop
        while acked == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(args.warmup)
        a0, t0, cpu0 = acked, time.monotonic(), self_cpu_seconds()
        await asyncio.sleep(args.duration)
        a1, t1, cpu1 = acked, time.monotonic(), self_cpu_seconds()
        stop = True
        window.update(
            handled=a1 - a0,
            window_s=round(t1 - t0, 3),
            msgs_per_s=round((a1 - a0) / (t1 - t0)),
            blaster_cpu_cores=round((cpu1 - cpu0) / (t1 - t0), 3),
        )

    measuring = asyncio.create_task(measure()) if args.probe else None
    sent = 0
    waits = 0
    cpu0, t0 = self_cpu_seconds(), time.monotonic()
    deadline = t0 + args.duration + (30 if not args.probe else 60)
    while not stop and time.monotonic() < deadline:
        if sent - acked >= BLAST_WINDOW:
            progress.clear()
            waits += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), 1.0)
            continue
        await nc.publish(subjects[sent % count], chunk_message(chunks[sent % len(chunks)]))
        sent += 1
        if args.probe and sent % ACK_EVERY == 0:
            await nc.publish(f"{INPUT}.probe-{sent // ACK_EVERY}", msgpack.packb({"type": "end"}))
        if sent % 200 == 0:
            await asyncio.sleep(0)  # let the flusher and the acknowledgements in
    if args.probe:
        for subject in subjects:
            await nc.publish(subject, msgpack.packb({"type": "end"}))
    await nc.flush()
    elapsed = time.monotonic() - t0
    if measuring is not None:
        measuring.cancel()
    await nc.close()
    emit(
        "RESULT",
        {
            "sent": sent,
            "probes": sent // ACK_EVERY if args.probe else 0,
            "window_waits": waits,
            "sent_per_s": round(sent / elapsed),
            "cpu_cores": round((self_cpu_seconds() - cpu0) / elapsed, 3),
            **window,
        },
    )


async def role_publish(args: argparse.Namespace) -> None:
    """Real-time sessions ``first .. first+sessions-1`` of ``total``, on the shared clock."""
    nc = await nats.connect(args.url)
    chunks = speech_chunks()
    ids = [f"mp{args.total}-{i}" for i in range(args.first, args.first + args.sessions)]
    subjects = [f"{INPUT}.{sid}" for sid in ids]
    offsets = [(i * 37) % len(chunks) for i in range(args.first, args.first + args.sessions)]
    per_session = round(args.duration / CHUNK_S)
    period = CHUNK_S / args.speed
    # session i of N sends at phase i/N of each chunk period (so the chunks of all sessions
    # are spread evenly over every period) and starts in period floor(ramp/period * i/N), so
    # the starts spread over the ramp; its chunk k is due k periods after its start
    ramp = max(args.ramp, CHUNK_S) / args.speed
    start = time.monotonic() + (args.t0 - time.time())
    n = args.sessions
    total = n * per_session

    def first_due(i: int) -> float:
        share = i / args.total
        return (share + int(share * ramp / period)) * period

    schedule = sorted(
        (first_due(args.first + s) + k * period, k, s) for s in range(n) for k in range(per_session)
    )
    lags: list[float] = []
    messages = 0
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    cpu0, t0 = self_cpu_seconds(), time.monotonic()
    j = 0
    while j < total:
        now = time.monotonic()
        due = now
        while j < total:
            at, k, s = schedule[j]
            due = start + at
            if due > now:
                break
            if k == 0:
                begin = {
                    "type": "start",
                    "session_id": ids[s],
                    "sample_rate": RATE,
                    "channels": 1,
                    "state": args.state,
                }
                await nc.publish(subjects[s], msgpack.packb(begin))
                messages += 1
            elif args.state == "responding" and k % REARM_CHUNKS == 0:
                # the assistant speaks again: barge-in (the voice detector) is armed anew after
                # each interrupt, so it runs on (nearly) every frame of every session
                await nc.publish(subjects[s], REARM)
                messages += 1
            audio = chunks[(offsets[s] + k) % len(chunks)]
            await nc.publish(subjects[s], chunk_message(audio))
            lags.append(time.monotonic() - due)
            messages += 1
            if k == per_session - 1:
                await nc.publish(subjects[s], msgpack.packb({"type": "end"}))
                messages += 1
            j += 1
        if j < total:
            await asyncio.sleep(max(0.001, due - time.monotonic()))
    await nc.flush()
    elapsed = time.monotonic() - t0
    cpu = self_cpu_seconds() - cpu0
    await nc.close()
    emit(
        "RESULT",
        {
            "sessions": n,
            "chunks": total,
            "messages": messages,
            "elapsed_s": round(elapsed, 3),
            "cpu_s": round(cpu, 3),
            "send_lag_ms": pct_ms(lags),
            "late_over_20ms": sum(1 for x in lags if x > 0.02),
        },
    )


async def role_emulator(args: argparse.Namespace) -> None:
    """The SageMaker + Flux emulator until SIGTERM; then how much audio reached the model."""
    if args.h2_streams:
        # hypercorn's defaults: 100 concurrent streams and 1000 requests per HTTP/2 connection
        from hypercorn.config import Config

        Config.h2_max_concurrent_streams = args.h2_streams
        Config.keep_alive_max_requests = max(Config.keep_alive_max_requests, 10 * args.h2_streams)
    from stt_service.emulator.sagemaker import SageMakerEmulator
    from tests.speech import utterances

    script = [u.reference.lower() for u in utterances()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with SageMakerEmulator(script=script) as emu:
        emit("READY", {"url": emu.url, "ca": emu.ca_path})
        await stop.wait()
        streams = emu.app.streams
        emit(
            "RESULT",
            {
                "requests": len(emu.app.requests),
                "streams": len(streams),
                "audio_bytes": sum(m.received_bytes for m in streams),
                "turns": sum(m.turns_done for m in streams),
            },
        )


# --- the orchestrator's view of a child -----------------------------------------------------------
class Child:
    """A child process; its ``KIND {json}`` stdout lines and its stderr lines are collected."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.reports: dict[str, dict[str, Any]] = {}
        self.log: list[str] = []
        self._got: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.peak_rss_kb = 0
        self._tasks = [asyncio.create_task(self._stdout()), asyncio.create_task(self._stderr())]

    @classmethod
    async def start(cls, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "STT_HEALTH_PORT": "0", **(env or {})},
            limit=1 << 20,
        )
        return cls(name, proc)

    @classmethod
    async def role(cls, name: str, role: str, *extra: str) -> Child:
        return await cls.start(name, [sys.executable, str(HERE), "--role", role, *extra])

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _stdout(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            kind, _, rest = raw.decode(errors="replace").strip().partition(" ")
            if kind in ("READY", "RESULT"):
                self.reports[kind] = json.loads(rest or "{}")
                self._got[kind].set()

    async def _stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.log.append(raw.decode(errors="replace").rstrip())
            if "listening on" in self.log[-1]:
                self._got["listening"].set()

    async def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        waiter = asyncio.create_task(self._got[kind].wait())
        exited = asyncio.create_task(self.proc.wait())
        await asyncio.wait({waiter, exited}, timeout=timeout, return_when="FIRST_COMPLETED")
        if not self._got[kind].is_set():
            await asyncio.sleep(0.2)  # a report printed just before exiting
        waiter.cancel()
        exited.cancel()
        if not self._got[kind].is_set():
            tail = "\n    ".join(self.log[-15:])
            raise RuntimeError(
                f"{self.name}: no {kind} (waited up to {timeout:g} s); log:\n    {tail}"
            )
        return self.reports.get(kind, {})

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def sample_rss(self) -> None:
        self.peak_rss_kb = max(self.peak_rss_kb, proc_status_kb(self.pid, "VmHWM"))

    async def stop(self, timeout: float = 30.0) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            print(f"  {self.name} did not stop within {timeout:g} s: killed", flush=True)
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.proc.returncode or 0


# --- the worker's own figures ---------------------------------------------------------------------
_STATS_LINE = "worker stats:"
_WINDOW = r"p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms over (\d+)"


def parse_worker_stats(line: str) -> dict[str, Any]:
    """The numbers of the worker's ``worker stats: ...`` line (whatever parts it has)."""
    out: dict[str, Any] = {"line": line[line.find(_STATS_LINE) :]}
    for key, pattern in (
        ("messages", r"(\d+) messages"),
        ("sessions", r"(\d+) sessions"),
        ("published", r"(\d+) published"),
        ("errors", r"(\d+) errors"),
    ):
        if m := re.search(pattern, line):
            out[key] = int(m.group(1))
    for key, label in (("chunk_handling", "chunk handling "), ("chunk_lag", "chunk lag[^;]*? ")):
        if m := re.search(label + _WINDOW, line):
            p50, p99, top, count = m.groups()
            out[key] = {"p50": float(p50), "p99": float(p99), "max": float(top)}
            out[key + "_count"] = int(count)
    # Silero's network in the worker: frames, calls (so the mean batch) and CPU per frame
    if m := re.search(
        r"voice detector: (\d+) frames in (\d+) calls \(mean batch ([\d.]+)\), "
        r"(\d+) us CPU a frame",
        line,
    ):
        frames, calls, batch, us = m.groups()
        out["vad"] = {
            "frames": int(frames),
            "calls": int(calls),
            "mean_batch": float(batch),
            "us_per_frame": int(us),
            # CPU per second of audio a speaking session costs, at 31.25 frames a second
            "ms_per_audio_s": round(int(us) * 31.25 / 1000, 2),
        }
    return out


def summarize_log(lines: list[str]) -> dict[str, Any]:
    """Warnings and errors of the worker's log, by message with ids and numbers blanked out."""
    kinds: collections.Counter[str] = collections.Counter()
    for line in lines:
        if PROBE_SESSION in line or "session probe-" in line:
            continue  # the benchmark's own probes, answered as expected
        m = re.search(r" (WARNING|ERROR|CRITICAL)\s+(\S+): (.*)", line)
        if m is None:
            if "Traceback" in line:
                kinds["Traceback"] += 1
            continue
        text = re.sub(r"mp\d+-\d+", "<sid>", m.group(3))
        text = re.sub(r"\d+(\.\d+)?", "#", text)[:140]
        kinds[f"{m.group(1)} {m.group(2)}: {text}"] += 1
    return dict(kinds.most_common(8))


# --- phases ---------------------------------------------------------------------------------------
async def run_ceiling(nats_url: str, nats_pid: int | None, seconds: float) -> dict[str, Any]:
    print(
        f"baseline (a): bare nats-py subscriber, decode only; measuring {seconds:g} s ...",
        flush=True,
    )
    sub = await Child.role(
        "bare subscriber", "bare-sub", "--url", nats_url, "--duration", str(seconds)
    )
    await sub.wait_for("READY", 30)
    nats_cpu0, busy0, t0 = proc_cpu_seconds(nats_pid or 0), machine_busy_seconds(), time.monotonic()
    blast = await Child.role("blaster", "blast", "--url", nats_url, "--duration", str(seconds + 30))
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
    emu = await Child.role("emulator", "emulator", "--h2-streams", str(streams))
    worker: Child | None = None
    try:
        where = await emu.wait_for("READY", 60)
        t0 = time.monotonic()
        worker = await Child.start(
            "worker",
            [sys.executable, "-m", "stt_service.cli", "serve"],
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
                await Child.role(
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
    stats_line = next((x for x in reversed(worker.log) if _STATS_LINE in x), "")
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
    r.worker_log = summarize_log(worker.log)
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
        blast = await Child.role(
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
    stats_line = next((x for x in reversed(worker.log) if _STATS_LINE in x), "")
    stats = parse_worker_stats(stats_line) if stats_line else {}
    handled = stats.get("chunk_lag_count")
    out.update(
        chunks_sent=report.get("sent"),
        chunks_handled=handled,
        chunk_handling_ms=stats.get("chunk_handling", {}),
        worker_msgs_per_cpu_s=round((stats.get("messages") or 0) / worker_cpu_s)
        if worker_cpu_s
        else None,
        worker_log=summarize_log(worker.log),
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


# --- profiling (py-spy) ---------------------------------------------------------------------------
async def start_profiles(
    pids: dict[str, int], seconds: float, out_dir: Path, tag: str
) -> tuple[asyncio.subprocess.Process | None, dict[str, Path]]:
    """py-spy ``record`` of each pid (raw collapsed stacks), in the middle of the run."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("  --profile: py-spy is not on PATH (uv run --with py-spy ...): skipped", flush=True)
        return None, {}
    out_dir.mkdir(parents=True, exist_ok=True)
    span = max(2, int(seconds * 0.6))
    files = {name: out_dir / f"msgpath-{name}-{tag}.collapsed" for name in pids}
    script = " & ".join(
        f"{spy} record --pid {pid} --duration {span} --rate 50 --nonblocking --function "
        "--full-filenames --format raw "
        f"--output {files[name]} >/dev/null 2>&1"
        for name, pid in pids.items()
    )
    proc = await asyncio.create_subprocess_shell(f"sleep {seconds * 0.2:.1f}; {script}; wait")
    print(f"  py-spy: sampling {', '.join(pids)} for {span} s -> {out_dir}", flush=True)
    return proc, files


def top_functions(path: Path, top: int) -> dict[str, Any]:
    """Self and inclusive sample shares of the hottest functions in a py-spy raw profile."""
    if not path.is_file():
        return {}
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + short_path(f) + ")" for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return {}
    scaffolding = ("(asyncio/", "(<frozen runpy>", "<module> (", "(stt_service/cli.py", "(bench/")
    inclusive = [(f, c) for f, c in incl.most_common() if not any(x in f for x in scaffolding)]
    return {
        "samples": total,
        "self": {f: round(100 * c / total, 1) for f, c in own.most_common(top)},
        "inclusive": {f: round(100 * c / total, 1) for f, c in inclusive[: top * 2]},
    }


def short_path(frame: str) -> str:
    """``module/file.py:line`` of a py-spy frame ``func (path:line)``."""
    m = re.search(r"\((.*)\)$", frame)
    if m is None:
        return "?"
    path = m.group(1)
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return "/".join(path.rsplit("/", 2)[-2:])


# --- main -----------------------------------------------------------------------------------------
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
