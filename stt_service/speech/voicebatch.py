"""The worker's voice batcher: Silero runs for the frames of many sessions in one call.

One frame alone costs the network 2.5 times the CPU of a frame in a batch of 32 or more (see
:mod:`stt_service.speech.silero`). When a session's chunk leaves frames
waiting for the network (:attr:`Session.awaiting_voice`), the worker hands the session here; the
first one starts a window of ``STT_VAD_BATCH_MS``, and every session that queues frames within it
joins the same calls (one call per round: each session's frames go in order). Then each session
goes on from where its frames waited (:meth:`Session.voice_ready`). The window is the latency this
adds to every frame (half of it on average); the batch sizes are counted for the worker's stats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from .vad import VoiceDetector, resolve_all

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    windows: int = 0  # batches run
    calls: int = 0  # network calls (a window makes one per round)
    frames: int = 0  # frames decided
    seconds: float = 0.0  # wall time in the network and its batching (waits for a core too)
    cpu_seconds: float = 0.0  # CPU time of the same

    def summary(self) -> str:
        if not self.calls:
            return "no network calls"
        return (
            f"{self.frames} frames in {self.calls} calls (mean batch {self.frames / self.calls:.1f}"
            f"), {self.cpu_seconds * 1e6 / max(1, self.frames):.0f} us CPU a frame "
            f"({self.seconds * 1e6 / max(1, self.frames):.0f} us wall)"
        )


class VoiceBatcher[K: Hashable]:
    """Gathers sessions whose frames wait for the network, runs the network for all of them,
    then ``resume``s them. ``detector_of(key)`` is the key's session's voice detector."""

    def __init__(
        self,
        window_s: float,
        detector_of: Callable[[K], VoiceDetector],
        resume: Callable[[list[K]], Awaitable[None]],
    ) -> None:
        self.window_s = window_s
        self._detector_of = detector_of
        self._resume = resume
        self._waiting: dict[K, None] = {}  # insertion-ordered set
        self._first = 0.0  # monotonic time the oldest waiting key was added
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    def want(self, key: K) -> None:
        """``key``'s session has frames waiting for the network."""
        if not self._waiting:
            self._first = time.monotonic()
        self._waiting[key] = None
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None or self._task is not None or not self._waiting:
            return
        delay = max(0.0, self._first + self.window_s - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._task = asyncio.create_task(self._run(), name="voice-batch")

    async def _run(self) -> None:
        try:
            self.stats.windows += 1
            # until no session has frames waiting: a session whose messages queued behind its
            # frames (a burst, a replay) goes on at once rather than a window per chunk
            while self._waiting:
                keys = list(self._waiting)
                self._waiting.clear()
                began, cpu = time.perf_counter(), time.thread_time()
                calls, frames = resolve_all([self._detector_of(k) for k in keys])
                self.stats.seconds += time.perf_counter() - began
                # onnxruntime runs one thread, this one: its CPU, without the waits for a core
                self.stats.cpu_seconds += time.thread_time() - cpu
                self.stats.calls += calls
                self.stats.frames += frames
                await self._resume(keys)
        except Exception:  # a bug here must not stop every session's voice detection
            log.exception("voice batch failed")
        finally:
            self._task = None
            self._schedule()

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._waiting.clear()
