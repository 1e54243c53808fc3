"""The worker's end-of-turn runner: Smart Turn off the event loop, pauses of many sessions at once.

One inference costs tens of milliseconds of CPU (:mod:`.smartturn`), too long for the
event loop that carries every session's audio, so it runs on one thread of its own. Requests that
arrive while it is busy go together in the next call (a batch of up to ``max_batch``); each
answer goes back to the loop through ``deliver(key, probability)``, None where the model failed
(the session then ends the turn on silence alone, as without a model).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Int16Array = npt.NDArray[np.int16]


class TurnModel(Protocol):
    def probabilities(self, turns: list[Int16Array]) -> npt.NDArray[np.float32]: ...


@dataclass
class TurnStats:
    inferences: int = 0
    calls: int = 0
    failures: int = 0
    cpu_seconds: float = 0.0  # the model's thread
    wait_seconds: float = 0.0  # request to answer, summed: queueing and inference

    def summary(self) -> str:
        if not self.calls:
            return "no end-of-turn inferences"
        return (
            f"{self.inferences} end-of-turn inferences in {self.calls} calls, "
            f"{self.cpu_seconds * 1000 / max(1, self.inferences):.0f} ms CPU each, "
            f"{self.wait_seconds * 1000 / max(1, self.inferences):.0f} ms from pause to verdict"
        )


class TurnRunner[K]:
    """Runs the model for the pauses of every session, one call at a time, on its own thread."""

    def __init__(
        self,
        model: TurnModel,
        deliver: Callable[[K, float | None], Awaitable[None]],
        *,
        max_batch: int = 16,
    ) -> None:
        self._model = model
        self._deliver = deliver
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="end-of-turn")
        self._waiting: list[tuple[K, Int16Array, float]] = []
        self._task: asyncio.Task[None] | None = None
        self.stats = TurnStats()

    def ask(self, key: K, audio: Int16Array) -> None:
        self._waiting.append((key, audio, time.monotonic()))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="end-of-turn")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                answers: list[float | None]
                try:
                    probs, cpu = await loop.run_in_executor(
                        self._executor, self._infer, [audio for _, audio, _ in batch]
                    )
                    answers = [float(p) for p in probs]
                    self.stats.cpu_seconds += cpu
                except Exception as exc:  # a broken model must not stop turns from ending
                    self.stats.failures += 1
                    log.error("end-of-turn model failed (%d turns): %s", len(batch), exc)
                    answers = [None] * len(batch)
                self.stats.calls += 1
                self.stats.inferences += len(batch)
                done = time.monotonic()
                for (key, _, asked), p in zip(batch, answers, strict=True):
                    self.stats.wait_seconds += done - asked
                    try:
                        await self._deliver(key, p)
                    except Exception:
                        log.exception("end-of-turn verdict could not be handled")
        finally:
            self._task = None

    def _infer(self, turns: list[Int16Array]) -> tuple[npt.NDArray[np.float32], float]:
        cpu = time.thread_time()
        probs = self._model.probabilities(turns)
        return probs, time.thread_time() - cpu

    async def aclose(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False)
