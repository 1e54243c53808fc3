"""Latency, capacity and accuracy of the service, side by side with the offline baseline.

    uv run python bench/run.py                       # local Whisper, 1, 2 and 4 sessions
    uv run python bench/run.py --sessions 1,2,4,8 --passes 2 --out bench/results
    uv run python bench/run.py --sessions 1 --env STT_EAGER_ENDPOINT=0 --label no-eager

Starts an embedded ``nats-server`` and the worker (``stt-service serve``, a separate process, so
its CPU and memory are its own), then for each N streams N concurrent sessions of real speech
(the five LibriVox utterances, 1.5 s apart, whose speech start and end times are known) at
real-time pace in 100 ms chunks. Sessions start at random within ``--spread`` seconds: within 1 s
(the default) every session ends its sentences within a second of the others, a burst of finals
that queue for the model; ``--spread 6`` (the utterances are 5-8 s apart) makes the sessions as
independent of each other as separate calls are. Every session starts ``responding``, so its
first utterance measures barge-in. Reported per N:

- end of speech -> final transcript (p50/p95/p99), speech onset -> first partial, speech onset ->
  interrupt; "real time" when no result waits longer than ``--lag-limit`` and latency does not
  grow from the first utterances to the last;
- worker CPU (share of one core and of the machine) and peak resident memory, and the worker's
  own per-chunk figures (handling time, and lag from the chunk's client timestamp), which it logs
  when it stops; each N gets a fresh worker, so every figure is that N's alone;
- word error rate of the finals;
- baseline: offline faster-whisper on the same utterances with the same model and beam (the
  accuracy and compute floor), and its real-time factor.

Figures go to ``{out}/{label}.json`` (default ``bench/results/results.json``) and a Markdown table
on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nats.aio.client import Client as NATS  # noqa: E402

from bench.common import pct_ms, proc_cpu_seconds, proc_status_kb  # noqa: E402
from bench.speech import speech_bounds, utterances  # noqa: E402
from stt_service.audio import WavAudio  # noqa: E402
from stt_service.bus.embedded import EmbeddedNats  # noqa: E402
from stt_service.commands.client import (  # noqa: E402
    ResultCollector,
    SessionResults,
    StreamTiming,
    stream_audio,
    word_error_rate,
)

GAP_S = 1.5
RATE = 16000


@dataclass
class Span:
    reference: str
    start: float  # speech onset, seconds into the session's audio
    end: float  # end of speech


@dataclass
class RunResult:
    sessions: int
    utterances: int = 0
    final_latency_ms: dict[str, float] = field(default_factory=dict)
    first_partial_ms: dict[str, float] = field(default_factory=dict)
    interrupt_ms: dict[str, float] = field(default_factory=dict)
    wer: float = 0.0
    missing_finals: int = 0
    errors: int = 0
    realtime: bool = False
    worker_cpu_cores: float = 0.0
    worker_peak_rss_mb: float = 0.0
    worker_stats: str = ""  # the worker's own summary line: chunk handling and lag percentiles
    # median end-of-speech -> final per utterance of the session audio, ms (which ones are slow)
    final_ms_by_utterance: list[float] = field(default_factory=list)
    # the first session's finals for each utterance, joined: which words a WER figure counts
    hypotheses: list[str] = field(default_factory=list)


def session_audio() -> tuple[WavAudio, list[Span]]:
    parts: list[np.ndarray] = []
    spans: list[Span] = []
    t = 0.0
    for u in utterances():
        s, e = speech_bounds(u.samples)
        spans.append(Span(u.reference, t + s, t + e))
        parts += [u.samples, np.zeros(int(GAP_S * RATE), dtype=np.int16)]
        t += u.samples.size / RATE + GAP_S
    return WavAudio(np.concatenate(parts).tobytes(), RATE, 1), spans


class WorkerProcess:
    """``stt-service serve`` in its own process; CPU and memory read from /proc."""

    def __init__(self, nats_url: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stt_service.commands.cli", "serve"],
            env={
                **os.environ,
                "STT_HEALTH_PORT": "0",  # no health checks: nothing else may hold 8080
                **env,
                "NATS_URL": nats_url,
                "STT_LOG_LEVEL": "INFO",
            },
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready = threading.Event()
        self.stats = ""
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "listening on" in line:
                self.ready.set()
            elif "worker stats:" in line:
                self.stats = line.split("worker stats:", 1)[1].strip()
            elif "ERROR" in line or "Traceback" in line:
                print(f"  worker: {line.rstrip()}", file=sys.stderr)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def peak_rss_mb(self) -> float:
        return round(proc_status_kb(self.proc.pid, "VmHWM") / 1024, 1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        time.sleep(0.2)  # the log reader takes the last lines


def score(
    res: SessionResults, timing: StreamTiming, spans: list[Span], passes: int, period: float
) -> tuple[list[float], list[float], list[float], list[str], int, dict[int, list[float]]]:
    """Per utterance: end-of-speech latency, first-partial latency; interrupts; hypotheses;
    missing finals; the end-of-speech latencies by utterance index."""
    finals = [(m, t) for m, t in zip(res.messages, res.arrivals, strict=True) if m.get("is_final")]
    partials = [
        (m, t) for m, t in zip(res.messages, res.arrivals, strict=True) if m.get("is_partial")
    ]
    final_lat: list[float] = []
    partial_lat: list[float] = []
    hyps: list[str] = []
    missing = 0
    by_span: dict[int, list[float]] = {}  # utterance index -> its latencies
    bounds = [
        (span.start + p * period, span.end + p * period) for p in range(passes) for span in spans
    ]
    # each final belongs to the last utterance it covers: where the end-of-turn model keeps a
    # turn open across the gap (0880 ends mid-sentence: "...young man," then "unless..."), one
    # final holds both, and the first utterance is joined to the next rather than missing
    owner: dict[int, list[tuple[dict[str, Any], float]]] = {}
    for m, t in finals:
        covered = [
            j
            for j, (start, end) in enumerate(bounds)
            if m.get("audio_end", 0) > start and m.get("audio_start", 0) < end
        ]
        if covered:
            owner.setdefault(covered[-1], []).append((m, t))
            for j in covered[:-1]:
                owner.setdefault(j, [])
    for p in range(passes):
        for k in range(len(spans)):
            j = p * len(spans) + k
            start, end = bounds[j]
            mine = owner.get(j, [])
            hyps.append(" ".join(m["transcript"] for m, _ in mine))
            sent_end = timing.sent_at(end)
            if j in owner and not mine:
                continue  # joined to the next utterance's final
            if not mine or sent_end is None:
                missing += 1
                continue
            final_lat.append(max(t for _, t in mine) - sent_end)
            by_span.setdefault(k, []).append(final_lat[-1])
            sent_start = timing.sent_at(start)
            first = [
                t for m, t in partials if m.get("audio_end", 0) > start and t >= (sent_start or 0)
            ]
            if first and sent_start is not None:
                partial_lat.append(min(first) - sent_start)
    interrupts = [
        t for m, t in zip(res.messages, res.arrivals, strict=True) if m.get("type") == "interrupt"
    ]
    onset = timing.sent_at(spans[0].start)
    irq = [interrupts[0] - onset] if interrupts and onset is not None else []
    return final_lat, partial_lat, irq, hyps, missing, by_span


async def run_sessions(
    nats_url: str, worker: WorkerProcess, n: int, passes: int, lag_limit: float, spread: float
) -> RunResult:
    audio, spans = session_audio()
    period = len(audio.pcm) / 2 / RATE
    if passes > 1:
        audio = WavAudio(audio.pcm * passes, RATE, 1)
    nc = NATS()
    await nc.connect(nats_url)
    collector = await ResultCollector(nc).start()
    timings = {f"bench-{n}-{i}": StreamTiming() for i in range(n)}

    async def one(sid: str) -> None:
        await asyncio.sleep(random.uniform(0, spread))  # not all in lockstep
        await stream_audio(nc, sid, audio, speed=1.0, state="responding", timing=timings[sid])

    cpu0, t0 = worker.cpu_seconds(), time.monotonic()
    await asyncio.gather(*(one(sid) for sid in timings))
    deadline = time.monotonic() + 30
    expected = len(spans) * passes
    while time.monotonic() < deadline and any(
        len(collector.results(s).finals) < expected for s in timings
    ):
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    cpu = (worker.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    await nc.close()

    result = RunResult(sessions=n, worker_cpu_cores=round(cpu, 2))
    finals, partials, irqs, refs, hyps = [], [], [], [], []
    per_span: dict[int, list[float]] = {}
    first_half, second_half = [], []
    for sid, timing in timings.items():
        res = collector.results(sid)
        f, p, i, h, missing, by_span = score(res, timing, spans, passes, period)
        result.missing_finals += missing
        for k, v in by_span.items():
            per_span.setdefault(k, []).extend(v)
        result.errors += len(res.errors)
        finals += f
        partials += p
        irqs += i
        hyps += h
        if not result.hypotheses:
            result.hypotheses = h
        refs += [s.reference for s in spans] * passes
        half = len(f) // 2
        first_half += f[:half]
        second_half += f[half:]
    result.utterances = len(refs)
    result.final_ms_by_utterance = [
        round(statistics.median(per_span[k]) * 1000) for k in sorted(per_span)
    ]
    result.final_latency_ms = pct_ms(finals)
    result.first_partial_ms = pct_ms(partials)
    result.interrupt_ms = pct_ms(irqs)
    result.wer = round(word_error_rate(" ".join(refs), " ".join(hyps)), 4)
    growing = bool(first_half and second_half) and (
        statistics.median(second_half) > 1.5 * statistics.median(first_half) + 0.2
    )
    result.realtime = (
        result.missing_finals == 0 and not growing and max(finals, default=99) < lag_limit
    )
    result.worker_peak_rss_mb = worker.peak_rss_mb()
    return result


def offline_baseline(beam: int) -> dict[str, Any]:
    """faster-whisper on each whole utterance, the same model and beam as the service's finals."""
    from faster_whisper import WhisperModel

    from stt_service.config import load_settings

    model = WhisperModel(load_settings().resolved_model(), device="cpu", compute_type="int8")
    refs, hyps, audio_s, compute_s = [], [], 0.0, 0.0
    for u in utterances():
        x = u.samples.astype(np.float32) / 32768.0
        t = time.perf_counter()
        segments, _ = model.transcribe(x, beam_size=beam, language="en")
        hyps.append(" ".join(s.text.strip() for s in segments))
        compute_s += time.perf_counter() - t
        refs.append(u.reference)
        audio_s += x.size / RATE
    return {
        "wer": round(word_error_rate(" ".join(refs), " ".join(hyps)), 4),
        "rtf": round(compute_s / audio_s, 4),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", default="1,2,4", help="comma-separated concurrency levels")
    ap.add_argument("--passes", type=int, default=1, help="times each session repeats the audio")
    ap.add_argument("--lag-limit", type=float, default=2.0, help="seconds: slower is not real time")
    ap.add_argument(
        "--spread",
        type=float,
        default=1.0,
        help="seconds over which session starts are spread at random: 1 ends every session's "
        "sentences within a second of each other (a burst of finals); 6 (its utterances are 5-8 s "
        "apart) makes sessions independent of each other, as separate calls are",
    )
    ap.add_argument("--out", default="bench/results", help="where the JSON goes")
    ap.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="a worker setting"
    )
    ap.add_argument("--label", default="results", help="names the JSON file: {out}/{label}.json")
    ap.add_argument(
        "--realtime",
        choices=["vllm", "openai"],
        help="STT_BACKEND=realtime against the bundled realtime emulator speaking this dialect "
        "over WebSocket (Whisper tiny.en behind it, in this process: same model as local)",
    )
    args = ap.parse_args()
    levels = [int(x) for x in args.sessions.split(",")]

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}", flush=True)
    baseline = offline_baseline(beam=1)
    print(f"offline baseline: WER {baseline['wer']:.1%}, RTF {baseline['rtf']}", flush=True)

    env = dict(kv.split("=", 1) for kv in args.env)
    emulator = contextlib.AsyncExitStack()
    if args.realtime:
        from stt_service.emulator.realtime import RealtimeServer, shared_transcriber

        srv = await emulator.enter_async_context(RealtimeServer(transcriber=shared_transcriber()))
        env = {
            "STT_BACKEND": "realtime",
            "REALTIME_DIALECT": args.realtime,
            "REALTIME_URL": srv.url,
            **env,
        }
    if env:
        print(f"worker settings: {env}", flush=True)
    print(f"session starts spread over {args.spread:g} s", flush=True)
    runs: list[RunResult] = []
    async with emulator:
        await _levels(args, env, levels, runs)
    _report(args, machine, env, baseline, runs)


async def _levels(
    args: argparse.Namespace, env: dict[str, str], levels: list[int], runs: list[RunResult]
) -> None:
    with EmbeddedNats() as nats:
        for n in levels:
            worker = WorkerProcess(nats.url, {"STT_MAX_SESSIONS": str(n + 10), **env})
            try:
                if not worker.ready.wait(120):
                    raise SystemExit("the worker did not start within 120 s")
                print(f"streaming {n} session(s) at real-time pace ...", flush=True)
                r = await run_sessions(
                    nats.url, worker, n, args.passes, args.lag_limit, args.spread
                )
            finally:
                worker.stop()
            r.worker_stats = worker.stats
            runs.append(r)
            print(f"  {json.dumps(asdict(r))}", flush=True)


def _report(
    args: argparse.Namespace,
    machine: str,
    env: dict[str, str],
    baseline: dict[str, Any],
    runs: list[RunResult],
) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.label}.json"
    path.write_text(
        json.dumps(
            {
                "machine": machine,
                "label": args.label,
                "settings": env,
                "spread_s": args.spread,
                "offline": baseline,
                "runs": [asdict(r) for r in runs],
            },
            indent=2,
        )
    )
    print()
    print(
        "| sessions | real time | final p50 / p95 / p99 ms | first partial p50 ms | "
        "interrupt p95 ms | WER (offline) | worker CPU cores | peak RSS MB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        f = r.final_latency_ms
        print(
            f"| {r.sessions} | {'yes' if r.realtime else 'no'} | "
            f"{f.get('p50')} / {f.get('p95')} / {f.get('p99')} | {r.first_partial_ms.get('p50')} | "
            f"{r.interrupt_ms.get('p95')} | {r.wer:.1%} ({baseline['wer']:.1%}) | "
            f"{r.worker_cpu_cores} | {r.worker_peak_rss_mb} |"
        )
    best = max((r.sessions for r in runs if r.realtime), default=None)
    print(f"\nhighest real-time N measured: {best}")
    for r in runs:
        print(f"  N={r.sessions} worker: {r.worker_stats}")
        print(f"  N={r.sessions} final ms by utterance (median): {r.final_ms_by_utterance}")
    print(f"results: {path}")


if __name__ == "__main__":
    asyncio.run(main())
