"""Barge-in and voice-detection quality on recorded audio, through the real worker over NATS.

    uv run python bench/corpus.py                      # the recorded corpus, once (bench/corpus)
    uv run python bench/bargein.py                     # STT_VAD=silero (the default)
    uv run python bench/bargein.py --env STT_VAD=webrtc --label webrtc
    uv run --with matplotlib python bench/bargein.py --chart-only   # results -> bargein.png

Starts an embedded ``nats-server`` and the worker (``stt-service serve``, its own process, local
Whisper tiny.en), then streams the corpus (``bench/corpus.py``: Debian packages' recordings, sox
noise) as client sessions. Every session but the WER ones starts ``responding``, as if the
assistant were speaking. Four phases:

1. **beds**: each non-speech bed (noise, hum, music, typing, ambient rooms, ALSA's speaker-test
   noise; babble, which holds voices, apart) alone, at ``--bed-speed`` x real time (detection
   counts audio time): interrupts per hour of audio and non-empty finals, per category.
2. **barge-ins**: each speech clip of two words or more (English, Spanish, French, Italian,
   Russian prompts; LibriVox phrases) after 2 s of a bed and over it, at SNR clean / 20 / 10 /
   5 dB (speech level over its active frames), at real-time pace: recall (an interrupt within
   1.5 s of the speech onset), latency from onset to the interrupt (measured as ``bench/run.py``
   does: from sending the 100 ms chunk that holds the onset to receiving the interrupt), early
   interrupts (before the onset: the bed's fault) and interrupts taken back (never right here).
3. **backchannels and bursts**: each lone backchannel ("yeah", "uh-huh", ...) and non-speech
   burst (laugh, cough, breath, door, clap, ...) after 2 s of a quiet room (pink noise at
   -60 dBFS): whether it interrupted, whether that was taken back, and how long after the end of
   the sound the ``interrupt_cancelled`` came.
4. **WER in noise**: the five LibriVox utterances (``bench/run.py``'s session) clean and mixed
   with pink noise at 10 dB SNR: word error rate of the finals.

Results go to ``{out}/bargein-{label}.json`` and Markdown tables on stdout; ``--chart`` (needs
matplotlib: ``uv run --with matplotlib``) draws ``{out}/bargein.png`` from every
``bargein-*.json`` there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nats.aio.client import Client as NATS  # noqa: E402

from bench.common import pct_ms  # noqa: E402
from bench.run import WorkerProcess, session_audio  # noqa: E402
from bench.speech import speech_bounds  # noqa: E402
from stt_service.audio import WavAudio  # noqa: E402
from stt_service.bus.embedded import EmbeddedNats  # noqa: E402
from stt_service.commands.client import (  # noqa: E402
    ResultCollector,
    SessionResults,
    StreamTiming,
    normalize_text,
    stream_audio,
    word_error_rate,
)

RATE = 16000
LEAD_S = 2.0  # bed before the speech: past the session's first half second, the bed heard
TAIL_S = 3.0  # after it: time for the final and a take-back
RECALL_S = 1.5  # an interrupt later than this after the onset is a miss
SNRS: list[float | None] = [None, 20.0, 10.0, 5.0]  # None: clean (no bed)
# the beds barge-ins are mixed over, in turn (babble holds voices: a barge-in over it is another
# question, and it is kept out of the bed targets too)
MIX_BEDS = ("pink", "brown", "white", "hum", "music", "typing", "ambient", "alsa_noise")
ROOM_DBFS = -60.0  # the quiet room that lone backchannels and bursts are heard in


@dataclass
class Clip:
    file: str
    kind: str
    category: str
    seconds: float
    text: str | None
    language: str | None
    synthetic: bool
    level_dbfs: float

    def samples(self, corpus: Path) -> np.ndarray:
        with wave.open(str(corpus / self.file)) as w:
            assert w.getframerate() == RATE and w.getnchannels() == 1
            return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def load_corpus(corpus: Path) -> list[Clip]:
    manifest = corpus / "manifest.json"
    if not manifest.is_file():
        print(f"no corpus in {corpus}: building it (bench/corpus.py) ...", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "corpus.py"), "--out", str(corpus)], check=True
        )
    data = json.loads(manifest.read_text())
    fields = Clip.__dataclass_fields__
    return [Clip(**{k: c.get(k) for k in fields}) for c in data["clips"]]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


def active_rms(x: np.ndarray, frame: int = 480) -> float:
    """RMS over the frames within 25 dB of the loudest: the level of the speech itself."""
    n = x.size // frame
    f = x[: n * frame].astype(np.float64).reshape(n, frame)
    e = np.sqrt(np.mean(f * f, axis=1)) + 1e-9
    return float(np.sqrt(np.mean(e[e >= e.max() * 10 ** (-25 / 20)] ** 2)))


def fit(bed: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """``n`` samples of ``bed`` from ``offset`` on, looping."""
    idx = (np.arange(n) + offset) % bed.size
    return bed[idx].astype(np.float64)


def to_pcm(x: np.ndarray) -> WavAudio:
    return WavAudio(np.clip(np.round(x), -32768, 32767).astype(np.int16).tobytes(), RATE, 1)


# --- results ------------------------------------------------------------------------------------
@dataclass
class BedResult:
    category: str
    seconds: float = 0.0
    clips: int = 0
    interrupts: int = 0
    taken_back: int = 0
    finals: list[str] = field(default_factory=list)  # non-empty finals: what was "heard"
    errors: int = 0

    @property
    def per_hour(self) -> float:
        return self.interrupts / (self.seconds / 3600) if self.seconds else 0.0


@dataclass
class BargeinTrial:
    clip: str
    category: str
    language: str | None
    snr: float | None
    bed: str | None
    detected: bool = False
    latency_ms: float | None = None
    early: bool = False  # an interrupt before the speech began
    taken_back: bool = False
    final: str = ""


@dataclass
class LoneResult:
    clip: str
    kind: str
    category: str
    text: str | None
    synthetic: bool
    interrupted: bool = False
    cancelled: bool = False
    reason: str | None = None
    cancel_after_end_ms: float | None = None  # from sending the sound's end to the take-back
    final: str = ""


# --- phases -------------------------------------------------------------------------------------
class Runner:
    def __init__(self, nc: NATS, collector: ResultCollector, parallel: int) -> None:
        self.nc = nc
        self.collector = collector
        self.sem = asyncio.Semaphore(parallel)
        self.n = 0

    async def stream(
        self, prefix: str, audio: WavAudio, speed: float, state: str = "responding"
    ) -> tuple[SessionResults, StreamTiming]:
        async with self.sem:
            self.n += 1
            sid = f"{prefix}-{self.n}"
            timing = StreamTiming()
            await stream_audio(self.nc, sid, audio, speed=speed, state=state, timing=timing)
            await self.settle(sid)
        return self.collector.results(sid), timing

    async def settle(self, sid: str, quiet_s: float = 1.5, limit_s: float = 20.0) -> None:
        """Until the session's results stop coming (its 'end' brings the last final)."""
        res = self.collector.results(sid)
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s:
            await asyncio.sleep(0.25)
            last = res.arrivals[-1] if res.arrivals else t0
            if time.monotonic() - max(last, t0) > quiet_s:
                return


def finals_text(res: SessionResults) -> list[str]:
    return [m["transcript"] for m in res.finals if normalize_text(m["transcript"])]


async def phase_beds(run: Runner, corpus: Path, clips: list[Clip], speed: float) -> dict[str, Any]:
    beds = [c for c in clips if c.kind == "bed"]
    out: dict[str, BedResult] = {}

    async def one(c: Clip) -> None:
        res, _ = await run.stream("bed", to_pcm(c.samples(corpus).astype(np.float64)), speed)
        r = out.setdefault(c.category, BedResult(c.category))
        r.clips += 1
        r.seconds += c.seconds
        r.interrupts += len(res.interrupts)
        r.taken_back += len(res.cancelled_interrupts)
        r.finals += [f"{Path(c.file).stem}: {t}" for t in finals_text(res)]
        r.errors += len(res.errors)

    await asyncio.gather(*(one(c) for c in beds))
    return {k: {**asdict(v), "per_hour": round(v.per_hour, 2)} for k, v in sorted(out.items())}


async def phase_bargeins(
    run: Runner, corpus: Path, clips: list[Clip], quick: bool
) -> list[BargeinTrial]:
    speech = [c for c in clips if c.kind == "bargein"]
    beds: dict[str, list[Clip]] = {}
    for c in clips:
        if c.kind == "bed" and c.category in MIX_BEDS:
            beds.setdefault(c.category, []).append(c)
    if quick:
        speech = speech[::4]
    rng = random.Random(17)
    bed_cycle = [b for cat in MIX_BEDS for b in beds.get(cat, [])]
    rng.shuffle(bed_cycle)
    trials: list[tuple[Clip, float | None, Clip | None]] = []
    k = 0
    for snr in SNRS:
        for c in speech:
            bed = None if snr is None else bed_cycle[k % len(bed_cycle)]
            k += bed is not None
            trials.append((c, snr, bed))
    results: list[BargeinTrial] = []

    async def one(c: Clip, snr: float | None, bed: Clip | None) -> None:
        x = c.samples(corpus).astype(np.float64)
        lead, tail = int(LEAD_S * RATE), int(TAIL_S * RATE)
        mix = np.zeros(lead + x.size + tail)
        mix[lead : lead + x.size] += x
        if bed is not None and snr is not None:
            b = fit(bed.samples(corpus), mix.size, offset=rng.randrange(RATE * 10))
            b *= active_rms(x) / (rms(b) + 1e-9) / 10 ** (snr / 20)
            mix += b
        onset = LEAD_S + speech_bounds(x.astype(np.int16))[0]
        res, timing = await run.stream("barge", to_pcm(mix), 1.0)
        t = BargeinTrial(Path(c.file).stem, c.category, c.language, snr, bed and bed.category)
        sent = timing.sent_at(onset)  # when the chunk holding the onset went out
        times = [
            a for m, a in zip(res.messages, res.arrivals, strict=True) if m["type"] == "interrupt"
        ]
        if sent is not None:
            t.early = any(a < sent for a in times)  # the bed, not the speech
            late = [a for a in times if a >= sent]
            if late and late[0] - sent <= RECALL_S:
                t.detected = True
                t.latency_ms = round((late[0] - sent) * 1000, 1)
        t.taken_back = bool(res.cancelled_interrupts)
        t.final = " ".join(finals_text(res))
        results.append(t)

    await asyncio.gather(*(one(*tr) for tr in trials))
    return results


async def phase_lone(run: Runner, corpus: Path, clips: list[Clip]) -> list[LoneResult]:
    lone = [c for c in clips if c.kind in ("backchannel", "burst")]
    pink = next((c for c in clips if c.kind == "bed" and c.category == "pink"), None)
    results: list[LoneResult] = []

    async def one(c: Clip) -> None:
        x = c.samples(corpus).astype(np.float64)
        lead, tail = int(LEAD_S * RATE), int(TAIL_S * RATE)
        mix = np.zeros(lead + x.size + tail)
        if pink is not None:
            room = fit(pink.samples(corpus), mix.size)
            mix += room * (32768 * 10 ** (ROOM_DBFS / 20) / (rms(room) + 1e-9))
        mix[lead : lead + x.size] += x
        end = LEAD_S + c.seconds
        res, timing = await run.stream("lone", to_pcm(mix), 1.0)
        r = LoneResult(Path(c.file).stem, c.kind, c.category, c.text, c.synthetic)
        r.interrupted = bool(res.interrupts)
        cancels = [
            (m, a)
            for m, a in zip(res.messages, res.arrivals, strict=True)
            if m["type"] == "interrupt_cancelled"
        ]
        if cancels:
            r.cancelled = True
            r.reason = cancels[0][0].get("reason")
            sent = timing.sent_at(end)
            if sent is not None:
                r.cancel_after_end_ms = round((cancels[0][1] - sent) * 1000, 1)
        r.final = " ".join(finals_text(res))
        results.append(r)

    await asyncio.gather(*(one(c) for c in lone))
    return results


async def phase_wer(run: Runner, corpus: Path, clips: list[Clip]) -> dict[str, Any]:
    audio, spans = session_audio()
    clean = np.frombuffer(audio.pcm, dtype=np.int16).astype(np.float64)
    pink = next(c for c in clips if c.kind == "bed" and c.category == "pink")
    noise = fit(pink.samples(corpus), clean.size)
    speech = np.concatenate(
        [
            clean[round(s.start * RATE) : round(s.end * RATE)]
            for s in spans  # the level of the speech, not of the gaps between sentences
        ]
    )
    noise *= active_rms(speech.astype(np.int16)) / (rms(noise) + 1e-9) / 10 ** (10 / 20)
    reference = " ".join(s.reference for s in spans)
    out: dict[str, Any] = {}
    for name, x in (("clean", clean), ("pink 10 dB", clean + noise)):
        res, _ = await run.stream("wer", to_pcm(x), 1.5, state="listening")
        hyp = " ".join(m["transcript"] for m in res.finals)
        out[name] = {
            "wer": round(word_error_rate(reference, hyp), 4),
            "finals": len(res.finals),
            # the model alone on each whole sentence of the same audio: what noise costs it,
            # whatever the service's voice detector does
            "offline_wer": await asyncio.to_thread(offline_wer, x, spans),
        }
    return out


def offline_wer(x: np.ndarray, spans: list[Any]) -> float:
    """faster-whisper (the bundled model, greedy, as the service's finals) on each sentence."""
    from faster_whisper import WhisperModel

    from stt_service.config import load_settings

    model = WhisperModel(load_settings().resolved_model(), device="cpu", compute_type="int8")
    hyps = []
    for s in spans:
        a, b = max(0, round((s.start - 0.3) * RATE)), round((s.end + 0.3) * RATE)
        segments, _ = model.transcribe(
            (x[a:b] / 32768).astype(np.float32), language="en", beam_size=1, temperature=0
        )
        hyps.append(" ".join(seg.text.strip() for seg in segments))
    return round(word_error_rate(" ".join(s.reference for s in spans), " ".join(hyps)), 4)


# --- report -------------------------------------------------------------------------------------
def summarize(
    beds: dict[str, Any], trials: list[BargeinTrial], lone: list[LoneResult], wer: dict[str, Any]
) -> dict[str, Any]:
    bed_total = {
        "seconds": sum(b["seconds"] for k, b in beds.items() if k != "babble"),
        "interrupts": sum(b["interrupts"] for k, b in beds.items() if k != "babble"),
        "nonempty_finals": sum(len(b["finals"]) for k, b in beds.items() if k != "babble"),
    }
    by_snr: dict[str, Any] = {}
    for snr in SNRS:
        ts = [t for t in trials if t.snr == snr]
        if not ts:
            continue
        lat = [t.latency_ms / 1000 for t in ts if t.latency_ms is not None]
        by_snr["clean" if snr is None else f"{snr:g} dB"] = {
            "trials": len(ts),
            "recall": round(sum(t.detected for t in ts) / len(ts), 4),
            "latency_ms": pct_ms(lat),
            "early": sum(t.early for t in ts),
            "taken_back": sum(t.taken_back for t in ts),
        }
    by_lang: dict[str, Any] = {}
    for t in trials:
        d = by_lang.setdefault(t.category, [0, 0])
        d[0] += 1
        d[1] += t.detected
    lone_sum: dict[str, Any] = {}
    for kind in ("backchannel", "burst"):
        rs = [r for r in lone if r.kind == kind]
        hit = [r for r in rs if r.interrupted]
        fast = [
            r
            for r in hit
            if r.cancelled and r.cancel_after_end_ms is not None and r.cancel_after_end_ms <= 1500
        ]
        lone_sum[kind] = {
            "clips": len(rs),
            "interrupted": len(hit),
            "taken_back": sum(r.cancelled for r in hit),
            "taken_back_within_1_5s": len(fast),
            "share_taken_back_within_1_5s": round(len(fast) / len(hit), 4) if hit else None,
            "cancel_after_end_ms": pct_ms(
                [r.cancel_after_end_ms / 1000 for r in hit if r.cancel_after_end_ms is not None]
            ),
        }
    return {
        "beds": bed_total,
        "bargein_by_snr": by_snr,
        "bargein_recall_by_source": {k: round(v[1] / v[0], 3) for k, v in sorted(by_lang.items())},
        "lone": lone_sum,
        "wer": wer,
    }


def print_tables(result: dict[str, Any]) -> None:
    s = result["summary"]
    print("\n| bed | audio min | interrupts | per hour | taken back | non-empty finals |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, b in result["beds"].items():
        print(
            f"| {k} | {b['seconds'] / 60:.1f} | {b['interrupts']} | {b['per_hour']:.1f} | "
            f"{b['taken_back']} | {len(b['finals'])} |"
        )
    print(
        "\n| barge-in SNR | trials | recall (1.5 s) | onset -> interrupt p50 / p95 ms | early | "
        "taken back |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for k, v in s["bargein_by_snr"].items():
        lat = v["latency_ms"]
        print(
            f"| {k} | {v['trials']} | {v['recall']:.1%} | {lat.get('p50')} / {lat.get('p95')} | "
            f"{v['early']} | {v['taken_back']} |"
        )
    print(
        "\nrecall by source: "
        + ", ".join(f"{k} {v:.0%}" for k, v in s["bargein_recall_by_source"].items())
    )
    print(
        "\n| lone sound | clips | interrupted | taken back | within 1.5 s of its end | "
        "end -> taken back p50 / p95 ms |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for k, v in s["lone"].items():
        lat = v["cancel_after_end_ms"]
        print(
            f"| {k} | {v['clips']} | {v['interrupted']} | {v['taken_back']} | "
            f"{v['taken_back_within_1_5s']} | {lat.get('p50')} / {lat.get('p95')} |"
        )
    w = s["wer"]
    print("\n| LibriVox WER | " + " | ".join(w) + " |")
    print("| --- | " + " | ".join("---" for _ in w) + " |")
    print("| service's finals | " + " | ".join(f"{v['wer']:.1%}" for v in w.values()) + " |")
    print(
        "| the model offline, per sentence | "
        + " | ".join(f"{v['offline_wer']:.1%}" for v in w.values())
        + " |"
    )
    if any(b["finals"] for b in result["beds"].values()):
        print("\nnon-empty finals on beds:")
        for k, b in result["beds"].items():
            for f in b["finals"]:
                print(f"  {k}: {f}")


def chart(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(out.glob("bargein-*.json"))
    if not files:
        raise SystemExit(f"no bargein-*.json in {out}")
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    for f in files:
        data = json.loads(f.read_text())
        label = data["label"]
        snr = data["summary"]["bargein_by_snr"]
        xs = list(snr)
        ax1.plot(xs, [100 * v["recall"] for v in snr.values()], marker="o", label=label)
        ax2.plot(
            xs, [v["latency_ms"].get("p95") for v in snr.values()], marker="o", label=f"{label} p95"
        )
        ax2.plot(
            xs,
            [v["latency_ms"].get("p50") for v in snr.values()],
            marker=".",
            ls="--",
            label=f"{label} p50",
        )
        cats = [k for k in data["beds"] if k != "babble"]
        ax3.bar(
            [f"{c}\n{label}" for c in cats],
            [data["beds"][c]["per_hour"] for c in cats],
            label=label,
        )
    ax1.set(title="barge-ins detected within 1.5 s", ylabel="%", ylim=(0, 105), xlabel="SNR")
    ax2.set(title="speech onset -> interrupt", ylabel="ms", xlabel="SNR")
    ax3.set(title="false interrupts per hour of non-speech beds", ylabel="per hour")
    ax3.tick_params(axis="x", labelrotation=90, labelsize=7)
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "bargein.png"
    fig.savefig(path, dpi=110)
    return path


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--corpus", default=str(ROOT / "bench" / "corpus"), help="bench/corpus.py's out"
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where the JSON goes")
    ap.add_argument("--label", default="silero", help="names the JSON: {out}/bargein-{label}.json")
    ap.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="a worker setting"
    )
    ap.add_argument("--parallel", type=int, default=8, help="sessions streamed at once")
    ap.add_argument("--bed-speed", type=float, default=2.0, help="x real time for the beds")
    ap.add_argument("--phases", default="beds,bargein,lone,wer", help="which phases to run")
    ap.add_argument("--quick", action="store_true", help="a quarter of the barge-in clips")
    ap.add_argument("--chart", action="store_true", help="also draw {out}/bargein.png")
    ap.add_argument("--chart-only", action="store_true", help="only draw the chart")
    args = ap.parse_args()
    out = Path(args.out)
    if args.chart_only:
        print(f"chart: {chart(out)}")
        return
    corpus = Path(args.corpus)
    clips = load_corpus(corpus)
    phases = set(args.phases.split(","))
    env = dict(kv.split("=", 1) for kv in args.env)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(
        f"machine: {machine}; corpus {corpus}: {len(clips)} clips; worker settings {env}",
        flush=True,
    )
    result: dict[str, Any] = {"label": args.label, "machine": machine, "settings": env}
    with EmbeddedNats() as server:
        worker = WorkerProcess(server.url, {"STT_MAX_SESSIONS": str(4 * args.parallel + 10), **env})
        try:
            if not worker.ready.wait(120):
                raise SystemExit("the worker did not start within 120 s")
            nc = NATS()
            await nc.connect(server.url)
            collector = await ResultCollector(nc).start()
            run = Runner(nc, collector, args.parallel)
            t0 = time.monotonic()
            beds: dict[str, Any] = {}
            trials: list[BargeinTrial] = []
            lone: list[LoneResult] = []
            wer: dict[str, Any] = {}
            if "beds" in phases:
                total = sum(c.seconds for c in clips if c.kind == "bed")
                print(f"beds: {total / 60:.0f} min of audio at {args.bed_speed:g}x ...", flush=True)
                beds = await phase_beds(run, corpus, clips, args.bed_speed)
                print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
            if "bargein" in phases:
                print("barge-ins over beds at SNR clean/20/10/5 dB, real time ...", flush=True)
                trials = await phase_bargeins(run, corpus, clips, args.quick)
                print(f"  {len(trials)} trials, {time.monotonic() - t0:.0f} s", flush=True)
            if "lone" in phases:
                print("lone backchannels and bursts, real time ...", flush=True)
                lone = await phase_lone(run, corpus, clips)
                print(f"  {len(lone)} clips, {time.monotonic() - t0:.0f} s", flush=True)
            if "wer" in phases:
                print("LibriVox clean and with pink noise at 10 dB SNR ...", flush=True)
                wer = await phase_wer(run, corpus, clips)
            await nc.close()
        finally:
            worker.stop()
    result.update(
        beds=beds,
        bargeins=[asdict(t) for t in trials],
        lone=[asdict(r) for r in lone],
        summary=summarize(beds, trials, lone, wer),
        worker_stats=worker.stats,
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bargein-{args.label}.json"
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print_tables(result)
    print(f"\nworker: {worker.stats}")
    print(f"results: {path}")
    if args.chart:
        print(f"chart: {chart(out)}")


if __name__ == "__main__":
    asyncio.run(main())
