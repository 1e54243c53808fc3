"""Decoding whole utterances: the decode scheduler every utterance-at-a-time recognizer shares
(local Whisper, Whisper over HTTP), and what a decode returns.

All decodes of a backend go through one :class:`DecodeScheduler`: finals before partials, and a
newer partial request of a session replaces its older one, so under backlog stale partials are
skipped and finals never are; where the model can batch (a GPU), several sessions' requests of
one kind go in one call. :func:`combine_segments` turns a decode's segments into text and
confidence, dropping what Whisper makes of silence (:func:`is_hallucination`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from ..audio import Int16Array

log = logging.getLogger(__name__)

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


def combine_segments(segments: Iterable[tuple[str, float, float]]) -> tuple[str, float | None]:
    """(text, no_speech_prob, avg_logprob) per segment -> text, confidence; hallucinations out."""
    texts: list[str] = []
    logprobs: list[float] = []
    for text, no_speech_prob, avg_logprob in segments:
        if is_hallucination(text, no_speech_prob, avg_logprob):
            log.debug("dropped a likely hallucination (no_speech_prob %.2f)", no_speech_prob)
            continue
        texts.append(text.strip())
        logprobs.append(avg_logprob)
    confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else None
    return " ".join(t for t in texts if t), confidence


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    confidence: float | None
    language: str | None


DecodeArgs = tuple[
    Int16Array, str | None, tuple[str, ...], bool
]  # audio, language, keyterms, final
DecodeFn = Callable[[Int16Array, str | None, tuple[str, ...], bool], Awaitable[Decoded]]
# decodes several requests in one call (one model call for many sessions); one result or exception
# per request, in order
BatchDecodeFn = Callable[[list[DecodeArgs]], Awaitable[list[Decoded | Exception]]]
_Job = tuple[DecodeArgs, "asyncio.Future[Decoded | None]"]


class DecodeScheduler:
    """Runs a backend's decodes, ``concurrency`` at a time: finals first (FIFO), then the oldest
    latest-partial of each session. Decode arguments: (audio, language, keyterms, final).

    With ``batch`` and ``max_batch`` > 1, each run takes up to ``max_batch`` queued requests of
    one kind (finals, else partials) and decodes them together: what a GPU needs to serve many
    sessions, since one batched call costs little more than one request.
    """

    def __init__(
        self,
        decode: DecodeFn,
        concurrency: int = 1,
        name: str = "decode",
        *,
        batch: BatchDecodeFn | None = None,
        max_batch: int = 1,
    ) -> None:
        self._decode = decode
        self._batch = batch
        self._max_batch = max(1, max_batch) if batch is not None else 1
        self._concurrency = concurrency
        self._name = name
        self._finals: deque[_Job] = deque()
        self._partials: dict[str, _Job] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.decodes = 0
        self.batches = 0
        self.skipped_partials = 0
        self._closed = False

    @property
    def depth(self) -> int:
        return len(self._finals) + len(self._partials)

    def submit(
        self,
        key: str,
        audio: Int16Array,
        language: str | None,
        keyterms: tuple[str, ...],
        final: bool,
    ) -> asyncio.Future[Decoded | None]:
        """Queue a decode; a partial's future gives None if a newer request superseded it."""
        fut: asyncio.Future[Decoded | None] = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_exception(RuntimeError(f"the {self._name} backend is shut down"))
            return fut
        self.cancel_partial(key)
        job: _Job = ((audio, language, keyterms, final), fut)
        if final:
            self._finals.append(job)
        else:
            self._partials[key] = job
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"{self._name}-scheduler-{i}")
                for i in range(self._concurrency)
            ]
        self._wake.set()
        return fut

    def cancel_partial(self, key: str) -> None:
        """Skip ``key``'s queued partial (its utterance ended, or a newer one replaces it)."""
        old = self._partials.pop(key, None)
        if old is not None and not old[1].done():
            self.skipped_partials += 1
            old[1].set_result(None)

    def _take(self) -> list[_Job]:
        """The next jobs to run together: finals first, else the oldest partials."""
        jobs: list[_Job] = []
        while self._finals and len(jobs) < self._max_batch:
            job = self._finals.popleft()
            if not job[1].done():
                jobs.append(job)
        if jobs:
            return jobs
        while self._partials and len(jobs) < self._max_batch:
            key = next(iter(self._partials))  # insertion order: the oldest request
            job = self._partials.pop(key)
            if not job[1].done():
                jobs.append(job)
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = self._take()
            if not jobs:  # both queues are empty now
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                results = await self._run_jobs(jobs)
            except asyncio.CancelledError:  # shut down mid-decode: nobody waits forever
                for _, fut in jobs:
                    if not fut.done():
                        fut.set_exception(RuntimeError(f"the {self._name} backend shut down first"))
                raise
            self.batches += 1
            for (_, fut), result in zip(jobs, results, strict=True):
                if isinstance(result, Exception):
                    if not fut.done():
                        fut.set_exception(result)
                    continue
                self.decodes += 1
                if not fut.done():
                    fut.set_result(result)

    async def _run_jobs(self, jobs: list[_Job]) -> list[Decoded | Exception]:
        if self._batch is not None and self._max_batch > 1:
            try:
                return await self._batch([args for args, _ in jobs])
            except Exception as exc:
                return [exc] * len(jobs)
        (args, _fut) = jobs[0]
        try:
            return [await self._decode(*args)]
        except Exception as exc:
            return [exc]

    async def aclose(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, fut in [*self._finals, *self._partials.values()]:
            if not fut.done():
                fut.set_exception(RuntimeError(f"the {self._name} backend shut down first"))
        self._finals.clear()
        self._partials.clear()
