"""The shared decode queue: finals first, stale partials skipped under backlog, finals never."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from stt_service.backends.base import EndpointHint, RecognitionEvent, StreamEvent, StreamParams
from stt_service.backends.decoding import Decoded, DecodeScheduler
from stt_service.backends.utterance import UtteranceStream
from stt_service.config import load_settings

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


# --- one session's stream over the shared queue --------------------------------------------------
class TimedDecoder:
    """Partials take ``partial_s``, finals ``final_s``; records (final, samples) per call, and
    whether each decode that finished was a final, in the order they finished."""

    def __init__(self, partial_s: float, final_s: float) -> None:
        self.partial_s, self.final_s = partial_s, final_s
        self.calls: list[tuple[bool, int]] = []
        self.finished: list[bool] = []

    async def __call__(
        self, audio: np.ndarray, language: str | None, keyterms: tuple[str, ...], final: bool
    ) -> Decoded:
        self.calls.append((final, audio.size))
        await asyncio.sleep(self.final_s if final else self.partial_s)
        self.finished.append(final)
        return Decoded(f"{'final' if final else 'partial'} of {audio.size}.", 1.0, "en")


class Backend:
    """What an UtteranceStream needs of a backend, around a TimedDecoder."""

    english_only = True

    def __init__(self, decoder: TimedDecoder, concurrency: int = 1) -> None:
        self.settings = load_settings(stt_partial_interval=0.05)
        self.scheduler = DecodeScheduler(decoder, concurrency=concurrency)

    def describe(self) -> str:
        return "test decoder"

    def languages(self) -> frozenset[str] | None:
        return frozenset({"en"})


async def next_event(stream: UtteranceStream, timeout: float = 3.0) -> StreamEvent:
    return await asyncio.wait_for(anext(aiter(stream.events())), timeout)


async def test_a_final_does_not_wait_for_its_sessions_partial() -> None:
    """whisper-http decodes several requests at once: an utterance that ends while its own
    partial is decoding gets its final as soon as the final's decode is done."""
    decoder = TimedDecoder(partial_s=1.0, final_s=0.05)
    backend = Backend(decoder, concurrency=2)
    stream = UtteranceStream(backend, StreamParams("s"))
    try:
        stream.send_audio(np.ones(16000, np.int16), 0, 0)
        await asyncio.sleep(0.1)
        assert decoder.calls == [(False, 16000)]  # the partial is decoding
        stream.flush(0)
        ev = await next_event(stream)
        assert isinstance(ev, RecognitionEvent) and ev.is_final and ev.text == "final of 16000."
        assert decoder.finished == [True]  # published while the partial still decodes
    finally:
        await stream.aclose()
        await backend.scheduler.aclose()


async def test_a_decoded_pause_gets_no_partial_and_is_the_final() -> None:
    """After a pause is decoded at final quality, no partial decodes the same audio again (one
    such decode delayed finals by 1.6 s), and the final is that decode, at once."""
    decoder = TimedDecoder(partial_s=0.2, final_s=0.1)
    backend = Backend(decoder)
    stream = UtteranceStream(backend, StreamParams("s"))
    try:
        stream.send_audio(np.ones(16000, np.int16), 0, 0)
        await asyncio.sleep(0.3)  # the first partial is done
        stream.send_audio(np.zeros(4000, np.int16), 16000, 0)  # the pause's trailing silence
        stream.speculate(0)
        events = [await next_event(stream), await next_event(stream)]
        hint = events[-1]
        assert isinstance(hint, EndpointHint) and hint.text == "final of 20000."
        await asyncio.sleep(0.3)  # a partial would be due every 0.05 s
        assert decoder.calls == [(False, 16000), (True, 20000)]
        stream.flush(0)
        ev = await next_event(stream)
        assert isinstance(ev, RecognitionEvent) and ev.is_final and ev.text == "final of 20000."
        assert len(decoder.calls) == 2  # the pause's decode, not a new one
    finally:
        await stream.aclose()
        await backend.scheduler.aclose()


async def test_an_utterance_that_ends_before_its_partial_starts_loses_nothing() -> None:
    """A partial was due and its task created, but the utterance ended before the task ran. The
    task once concatenated the emptied chunk list: 'need at least one array to concatenate',
    "Task exception was never retrieved" in the log. Now it decodes (or, superseded by the
    final, skips) the audio it was due for, and the final is whole."""
    decoder = TimedDecoder(partial_s=0.01, final_s=0.01)
    backend = Backend(decoder)
    stream = UtteranceStream(backend, StreamParams("s"))
    try:
        stream.send_audio(np.ones(8000, np.int16), 0, 0)
        await asyncio.sleep(0)  # the stream's loop wakes and creates the partial's task...
        task = stream._partial
        assert task is not None and not task.done()
        stream.flush(0)  # ...and the utterance ends before that task first runs
        ev = await next_event(stream)
        assert isinstance(ev, RecognitionEvent) and ev.is_final and ev.text == "final of 8000."
        await asyncio.wait([task], timeout=1)
        assert task.done() and task.exception() is None
    finally:
        await stream.aclose()
        await backend.scheduler.aclose()
