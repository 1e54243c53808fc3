"""What every utterance-at-a-time recognizer shares (local Whisper, Whisper over HTTP).

The session core decides where utterances begin and end. An :class:`UtteranceStream` keeps the
current utterance's audio, asks for a partial re-decode at most every ``STT_PARTIAL_INTERVAL``
seconds while it grows, and a final decode when the core ends it. All decodes of a backend go
through one :class:`~.decoding.DecodeScheduler` (finals first, stale partials skipped). A backend
supplies only the decode itself (:class:`Transcriber`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Protocol

import numpy as np

from ..audio import TARGET_RATE, Int16Array
from ..config import PartialSettings
from ..protocol import Code
from .base import EndpointHint, RecognitionError, RecognitionEvent, StreamEvent, StreamParams
from .decoding import Decoded, DecodeScheduler

log = logging.getLogger(__name__)

MIN_DECODE_SAMPLES = TARGET_RATE * 3 // 10  # partials start once 0.3 s is buffered


class Transcriber(Protocol):
    """The part of a backend an :class:`UtteranceStream` uses."""

    english_only: bool

    @property
    def settings(self) -> PartialSettings: ...

    @property
    def scheduler(self) -> DecodeScheduler: ...

    def describe(self) -> str: ...

    def languages(self) -> frozenset[str] | None:
        """Language codes the model knows, or None if the backend cannot tell."""


class UtteranceStream:
    """One session's view of a shared utterance recognizer."""

    def __init__(self, backend: Transcriber, params: StreamParams) -> None:
        self._backend = backend
        self._events: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
        self._params = self._checked(params)
        self._interval = backend.settings.stt_partial_interval
        self._utterance = -1
        self._start = 0  # session sample index of self._chunks[0]
        self._chunks: list[Int16Array] = []
        self._samples = 0
        self._decoded_samples = 0  # buffer length at the last partial decode
        self._last_partial_text = ""
        self._last_partial_at = 0.0
        self._finals: deque[tuple[int, int, Int16Array]] = deque()  # (utterance, start, audio)
        self._final_samples = 0  # audio of finals queued or being decoded
        # the decode started at the speaker's last pause: (utterance, samples, its result)
        self._spec: tuple[int, int, asyncio.Future[Decoded | None]] | None = None
        self._partial: asyncio.Task[None] | None = None  # the partial being decoded
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"utterances-{params.session_id}")

    # --- RecognizerStream -----------------------------------------------------------------------
    def send_audio(self, samples: Int16Array, offset: int, utterance: int) -> None:
        if utterance != self._utterance:
            self._reset(utterance, offset)
        elif not self._samples:
            self._start = offset  # first audio of an utterance announced by the last flush
        if self._spec is not None and not self._spec[2].done():
            self._spec[2].cancel()  # speech went on: a decode of the pause would be wasted
            self._spec = None
        self._chunks.append(samples)
        self._samples += samples.size
        self._wake.set()

    def flush(self, utterance: int, until: int | None = None) -> None:
        if utterance != self._utterance or not self._samples:
            # nothing was sent for it (all-silent utterance): no final
            if utterance == self._utterance:
                self._reset(utterance + 1, self._start)
            return
        audio = np.concatenate(self._chunks)
        if until is not None and self._start < until < self._start + audio.size:
            cut = until - self._start
            self._finals.append((utterance, self._start, audio[:cut]))
            self._final_samples += cut
            self._reset(utterance + 1, until)
            self._chunks, self._samples = [audio[cut:]], audio.size - cut
        else:
            self._finals.append((utterance, self._start, audio))
            self._final_samples += audio.size
            self._reset(utterance + 1, self._start + audio.size)
        # a partial of this utterance still queued is stale now: skip it, the final comes next
        self._backend.scheduler.cancel_partial(self._params.session_id)
        self._wake.set()

    def speculate(self, utterance: int) -> None:
        """Decode the utterance so far at final quality now, ahead of the queue of partials. The
        result becomes an :class:`EndpointHint`, and the final itself if no audio follows."""
        if utterance != self._utterance or self._samples < MIN_DECODE_SAMPLES:
            return
        if self._speculating(utterance, self._samples):
            return  # already decoding exactly this
        audio = np.concatenate(self._chunks)
        self._chunks = [audio]
        p = self._params
        fut = self._backend.scheduler.submit(
            self._params.session_id, audio, p.language, p.keyterms, True
        )
        self._spec = (utterance, audio.size, fut)
        fut.add_done_callback(lambda f: self._on_speculation(utterance, audio.size, f))

    def _on_speculation(
        self, utterance: int, samples: int, fut: asyncio.Future[Decoded | None]
    ) -> None:
        # only while it is current: the same utterance, and nothing spoken since
        if fut.cancelled() or utterance != self._utterance or samples != self._samples:
            return
        if fut.exception() is not None:
            # no words for the turn decision (it must not wait for them); the final reports
            # the failure itself
            self._events.put_nowait(EndpointHint(utterance, None))
        elif (res := fut.result()) is not None:
            self._events.put_nowait(EndpointHint(utterance, res.text))

    def configure(self, params: StreamParams) -> None:
        self._params = self._checked(params)

    def backlog(self) -> int:
        # ended utterances waiting for their final; the one being heard is bounded on its own
        # (STT_BUFFER_SIZE_BYTES) and is not a sign of falling behind
        return self._final_samples

    def _checked(self, params: StreamParams) -> StreamParams:
        """Accept 'en', 'EN' or 'en-US'; an unknown code is reported and auto-detected instead."""
        if params.language is None:
            return params
        code = params.language.lower().replace("_", "-").split("-")[0]
        if self._backend.english_only:
            if code != "en":
                self._events.put_nowait(
                    RecognitionError(
                        Code.INVALID_FIELD,
                        f"language {params.language!r}: the model {self._backend.describe()} knows "
                        "only English; transcribing as English",
                    )
                )
            return replace(params, language=None)
        known = self._backend.languages()
        if known is not None and code not in known:
            self._events.put_nowait(
                RecognitionError(
                    Code.INVALID_FIELD,
                    f"language {params.language!r} is not a Whisper language code (e.g. 'en', "
                    "'de'); the language is detected from the audio instead",
                )
            )
            return replace(params, language=None)
        return replace(params, language=code)

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        await self._task

    async def events(self) -> AsyncIterator[StreamEvent]:
        while (ev := await self._events.get()) is not None:
            yield ev

    # --- internals ------------------------------------------------------------------------------
    def _reset(self, utterance: int, start: int) -> None:
        self._utterance = utterance
        self._start = start
        self._chunks = []
        self._samples = 0
        self._decoded_samples = 0
        self._last_partial_text = ""

    def _speculating(self, utterance: int, samples: int) -> bool:
        """Whether the decode of the last pause covers exactly this audio."""
        return self._spec is not None and self._spec[:2] == (utterance, samples)

    def _partial_due(self, now: float) -> float | None:
        """0 if a partial should start now, seconds to wait if one will be due, None if none."""
        if self._interval <= 0 or self._samples < MIN_DECODE_SAMPLES:
            return None
        if self._samples == self._decoded_samples:
            return None
        if self._speculating(self._utterance, self._samples):
            return None  # a final-quality decode of exactly this audio is already under way
        return max(0.0, self._last_partial_at + self._interval - now)

    async def _run(self) -> None:
        sched = self._backend.scheduler
        key = self._params.session_id
        try:
            while True:
                if self._finals:
                    utt, start, audio = self._finals.popleft()
                    try:
                        await self._decode_final(sched, key, utt, start, audio)
                    finally:
                        self._final_samples -= audio.size
                    continue
                if self._closing:
                    break
                # one partial at a time, decoded beside this loop: an utterance that ends while
                # its partial is decoding gets its final without waiting for that partial
                due = None if self._partial is not None else self._partial_due(time.monotonic())
                if due == 0.0:
                    # the audio is taken now: by the time the task runs, the utterance may have
                    # ended and its chunks moved to a final (an empty list cannot be decoded)
                    audio = np.concatenate(self._chunks)
                    self._chunks = [audio]
                    self._decoded_samples = audio.size
                    self._last_partial_at = time.monotonic()
                    self._partial = asyncio.create_task(
                        self._decode_partial(sched, key, self._utterance, self._start, audio)
                    )
                    self._partial.add_done_callback(self._partial_done)
                    continue
                self._wake.clear()
                if due is None:
                    await self._wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), due)
        finally:
            if self._partial is not None:
                self._partial.cancel()
                await asyncio.wait([self._partial])
            self._events.put_nowait(None)

    def _partial_done(self, task: asyncio.Task[None]) -> None:
        if self._partial is task:
            self._partial = None
        self._wake.set()  # the next partial may be due

    async def _decode_final(
        self, sched: DecodeScheduler, key: str, utt: int, start: int, audio: Int16Array
    ) -> None:
        p = self._params
        spec, self._spec = self._spec, None
        try:
            res = None
            if spec is not None and spec[:2] == (utt, audio.size):
                # nothing was said after the pause: the speculative decode is this final, and
                # its failure is the final's (the backend already retried what it could)
                await asyncio.wait([spec[2]])
                if not spec[2].cancelled():
                    res = spec[2].result()
            if res is None:
                res = await sched.submit(key, audio, p.language, p.keyterms, True)
        except Exception as exc:
            log.error("session %s: final decode failed: %s", key, exc)
            self._events.put_nowait(RecognitionError(Code.BACKEND_ERROR, str(exc), utterance=utt))
            return
        assert res is not None  # finals are never skipped
        self._events.put_nowait(_event(utt, start, audio.size, res, final=True))

    async def _decode_partial(
        self, sched: DecodeScheduler, key: str, utt: int, start: int, audio: Int16Array
    ) -> None:
        p = self._params
        try:
            res = await sched.submit(key, audio, p.language, p.keyterms, False)
        except Exception as exc:  # the final reports a lasting failure; a partial only logs
            log.warning("session %s: partial decode failed: %s", key, exc)
            return
        if res is None or utt != self._utterance or self._finals:
            return  # skipped under load, or the utterance already ended: its final follows
        if res.text and res.text != self._last_partial_text:
            self._last_partial_text = res.text
            self._events.put_nowait(_event(utt, start, audio.size, res, final=False))


def _event(utterance: int, start: int, samples: int, res: Decoded, final: bool) -> RecognitionEvent:
    return RecognitionEvent(
        utterance=utterance,
        text=res.text,
        is_final=final,
        audio_start=start / TARGET_RATE,
        audio_end=(start + samples) / TARGET_RATE,
        confidence=None if res.confidence is None else round(res.confidence, 4),
        language=res.language,
    )
