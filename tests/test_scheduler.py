"""The shared decode queue: finals first, stale partials skipped under backlog, finals never."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from stt_service.backends.utterance import Decoded, DecodeScheduler

NO_AUDIO = np.zeros(0, dtype=np.int16)


class SlowDecoder:
    """A decode that takes real time on a thread and records the order and overlap of calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[str] = []
        self.running = 0
        self.max_running = 0

    async def __call__(
        self, audio: np.ndarray, label: str | None, keyterms: tuple[str, ...], final: bool
    ) -> Decoded:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.to_thread(time.sleep, self.seconds)
        finally:
            self.running -= 1
        assert label is not None
        self.calls.append(label)
        return Decoded(label, 1.0, "en")


def submit(sched: DecodeScheduler, key: str, label: str, final: bool) -> asyncio.Future:
    return sched.submit(key, NO_AUDIO, label, (), final)


async def test_finals_first_and_only_the_latest_partial_per_session() -> None:
    decoder = SlowDecoder(0.05)
    sched = DecodeScheduler(decoder, concurrency=1)
    try:
        busy = submit(sched, "x", "x-final", True)  # occupies the worker while the queue fills
        await asyncio.sleep(0.01)
        a1 = submit(sched, "a", "a-partial-1", False)
        b1 = submit(sched, "b", "b-partial-1", False)
        a2 = submit(sched, "a", "a-partial-2", False)  # replaces a-partial-1
        c = submit(sched, "c", "c-final", True)
        b = submit(sched, "b", "b-final", True)  # drops b's pending partial
        results = await asyncio.gather(busy, a1, b1, a2, c, b)
    finally:
        await sched.aclose()

    assert [r.text if r else None for r in results] == [
        "x-final",
        None,
        None,
        "a-partial-2",
        "c-final",
        "b-final",
    ]
    assert decoder.calls == ["x-final", "c-final", "b-final", "a-partial-2"]
    assert sched.skipped_partials == 2


async def test_concurrency_bounds_parallel_decodes() -> None:
    decoder = SlowDecoder(0.1)
    sched = DecodeScheduler(decoder, concurrency=3)
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(submit(sched, f"s{i}", f"f{i}", True) for i in range(9)))
        elapsed = time.perf_counter() - t0
    finally:
        await sched.aclose()
    assert decoder.max_running == 3
    assert 0.3 <= elapsed < 0.6  # three waves of three


async def test_event_loop_stays_responsive_and_close_fails_pending_work() -> None:
    decoder = SlowDecoder(0.3)
    sched = DecodeScheduler(decoder, concurrency=1)
    fut = submit(sched, "s", "slow", True)
    queued = submit(sched, "t", "queued", True)
    ticks = 0
    while not fut.done():
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks >= 10, "the loop was blocked while decoding"
    assert (await fut) is not None
    await sched.aclose()
    assert queued.done() and isinstance(queued.exception(), RuntimeError)
    late = submit(sched, "u", "late", True)
    assert late.done() and isinstance(late.exception(), RuntimeError)
