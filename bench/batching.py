"""Batched against unbatched Whisper decodes: one CTranslate2 call for N sessions, or N calls.

    uv run python bench/batching.py                 # CPU (or the GPU if there is one)
    uv run python bench/batching.py --batch 1,4,8,16 --mode all

Decodes the five LibriVox utterances repeated to ``--jobs`` requests, as the service's decode
scheduler would hand them over (``WhisperLocal._decode_batch``), ``batch`` at a time, and prints
decodes per second and audio seconds per second for each batch size.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.speech import utterances  # noqa: E402
from stt_service.backends.whisper_local import WhisperLocal  # noqa: E402
from stt_service.config import Settings  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", default="1,2,4,8", help="comma-separated batch sizes")
    ap.add_argument("--jobs", type=int, default=16, help="decode requests per batch size")
    ap.add_argument("--mode", default="partials", choices=["partials", "all", "off"])
    ap.add_argument("--final", action="store_true", help="final decodes (else partials)")
    args = ap.parse_args()
    backend = WhisperLocal(Settings(whisper_short_context=args.mode))
    await backend.start()
    print(f"{backend.describe()}, short context: {args.mode}, final: {args.final}")
    audio = [u.samples for u in utterances()]
    jobs = [(audio[i % len(audio)], None, (), args.final) for i in range(args.jobs)]
    seconds = sum(j[0].size for j in jobs) / 16000
    base = None
    print("| batch | decodes/s | audio s per s | vs batch 1 |")
    print("| --- | --- | --- | --- |")
    for size in (int(b) for b in args.batch.split(",")):
        t = time.perf_counter()
        for i in range(0, len(jobs), size):
            backend._decode_batch(jobs[i : i + size])
        took = time.perf_counter() - t
        base = base or took
        print(f"| {size} | {len(jobs) / took:.1f} | {seconds / took:.0f} | {base / took:.2f}x |")
    await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
