"""The shared inference queue: finals first, stale partials skipped under backlog, finals never."""

from __future__ import annotations

import asyncio
import threading
import time

from stt_service.backends.whisper_local import Decoded, InferenceScheduler


class SlowDecoder:
    """A decode function that takes real time on another thread and records the order of calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[str] = []
        self.threads: set[str] = set()

    def __call__(self, label: str) -> Decoded:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        self.calls.append(label)
        return Decoded(label, 1.0, "en")


async def test_finals_first_and_only_the_latest_partial_per_session() -> None:
    decoder = SlowDecoder(0.05)
    sched = InferenceScheduler(decoder)
    try:
        busy = sched.submit("x", True, "x-final")  # occupies the thread while the queue fills
        await asyncio.sleep(0.01)
        a1 = sched.submit("a", False, "a-partial-1")
        b1 = sched.submit("b", False, "b-partial-1")
        a2 = sched.submit("a", False, "a-partial-2")  # replaces a-partial-1
        c = sched.submit("c", True, "c-final")
        b = sched.submit("b", True, "b-final")  # drops b's pending partial
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
    assert all(name.startswith("whisper") for name in decoder.threads)  # off the event loop


async def test_event_loop_stays_responsive_during_decodes() -> None:
    decoder = SlowDecoder(0.3)
    sched = InferenceScheduler(decoder)
    try:
        fut = sched.submit("s", True, "slow")
        t0 = time.perf_counter()
        ticks = 0
        while not fut.done():
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks >= 10, "the loop was blocked while the model ran"
        assert (await fut) is not None and time.perf_counter() - t0 >= 0.3
    finally:
        await sched.aclose()
