"""Final decodes of local Whisper: repetition loops and time by encoder window, and throughput by
threads per decode and decodes at once.

    uv run python bench/finals.py                      # no least window, 7 s and 10 s
    uv run python bench/finals.py --windows 500,1000   # frames of 10 ms: 5 s and 10 s
    uv run python bench/finals.py --windows "" --parallel 2x1,1x1,1x2   # threads x decodes

The service decodes an utterance at final quality where the speaker pauses (the eager endpoint)
and when it ends. This cuts the five LibriVox utterances, and the same utterances through an
8 kHz telephone band, where the service would: at every 150 ms run of unvoiced frames past the
first 0.75 s, and at the end. Each cut is decoded as a final (``WhisperLocal._decode_batch``)
with the encoder window at least ``--windows`` frames (10 ms each); a decode that loops is
retried as the service does, so the time includes what a loop costs. Prints, per window: how
many finals looped, the mean and worst decode time, and the WER of the uncut utterances.

``--parallel TxW``: a model with ``WHISPER_CPU_THREADS=T`` and ``WHISPER_WORKERS=W`` decodes
all the cuts, W at a time (the service's scheduler runs W decodes at once); prints finals per
second and the mean time of one decode.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soxr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.speech import utterances  # noqa: E402
from stt_service.backends import whisper_local  # noqa: E402
from stt_service.backends.whisper_local import WhisperLocal  # noqa: E402
from stt_service.commands.client import word_error_rate  # noqa: E402
from stt_service.config import Settings  # noqa: E402
from stt_service.speech.vad import FrameClassifier  # noqa: E402

FRAME = 480  # 30 ms, the service's VAD frame


def cuts() -> list[tuple[np.ndarray, str | None]]:
    """(audio, reference if the cut is a whole utterance) for every place a final is decoded."""
    out: list[tuple[np.ndarray, str | None]] = []
    for u in utterances():
        for band in ("16 kHz", "8 kHz"):
            s = u.samples
            if band == "8 kHz":
                s = soxr.resample(soxr.resample(s, 16000, 8000), 8000, 16000).astype(np.int16)
            vad = FrameClassifier(2, FRAME)
            quiet = 0
            for i in range(s.size // FRAME):
                quiet = 0 if vad.classify(s[i * FRAME : (i + 1) * FRAME]).voiced else quiet + 1
                if quiet == 5 and i * FRAME > 12000:
                    out.append((s[: (i + 1) * FRAME], None))
            out.append((s, u.reference))
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--windows", default="0,700,1000", help="least encoder frames of a final; 0: none"
    )
    ap.add_argument("--parallel", default="", help="threads x decodes at once, e.g. 2x1,1x2")
    args = ap.parse_args()
    audio = cuts()
    if args.windows:
        await windows(audio, [int(w) for w in args.windows.split(",")])
    if args.parallel:
        await parallel(audio, [tuple(map(int, p.split("x"))) for p in args.parallel.split(",")])


async def windows(audio: list[tuple[np.ndarray, str | None]], least: list[int]) -> None:
    backend = WhisperLocal(Settings(whisper_short_context="all"))
    await backend.start()
    print(f"{backend.describe()}: {len(audio)} finals cut at pauses and ends")
    print("| least window | finals that looped | mean decode ms | worst ms | WER, uncut |")
    print("| --- | --- | --- | --- | --- |")
    default = whisper_local.FINAL_MIN_CONTEXT
    for window in least:
        whisper_local.FINAL_MIN_CONTEXT = window
        loops0 = backend.fallbacks
        took: list[float] = []
        refs: list[str] = []
        hyps: list[str] = []
        for samples, reference in audio:
            t = time.perf_counter()
            [res] = backend._decode_batch([(samples, "en", (), True)])
            took.append(time.perf_counter() - t)
            if reference is not None and not isinstance(res, Exception):
                refs.append(reference)
                hyps.append(res.text)
        wer = word_error_rate(" ".join(refs), " ".join(hyps))
        name = f"{window / 100:g} s" if window else "none (5 s steps)"
        print(
            f"| {name} | {backend.fallbacks - loops0} of {len(audio)} | "
            f"{np.mean(took) * 1000:.0f} | {max(took) * 1000:.0f} | {wer:.1%} |",
            flush=True,
        )
    whisper_local.FINAL_MIN_CONTEXT = default  # --parallel measures the service's own
    await backend.aclose()


async def parallel(
    audio: list[tuple[np.ndarray, str | None]], configs: list[tuple[int, ...]]
) -> None:
    print(f"\n{len(audio)} finals, decoded W at a time")
    print("| threads per decode x decodes at once | finals per s | mean decode ms |")
    print("| --- | --- | --- |")
    jobs = [(samples, "en", (), True) for samples, _ in audio]
    for threads, workers in configs:
        settings = Settings(whisper_cpu_threads=threads, whisper_workers=workers)
        backend = WhisperLocal(settings)
        await backend.start()

        def one(
            job: tuple[np.ndarray, str, tuple[str, ...], bool], b: WhisperLocal = backend
        ) -> float:
            t = time.perf_counter()
            b._decode_batch([job])
            return time.perf_counter() - t

        t = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            took = list(pool.map(one, jobs))
        rate = len(jobs) / (time.perf_counter() - t)
        print(f"| {threads} x {workers} | {rate:.1f} | {np.mean(took) * 1000:.0f} |", flush=True)
        await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
