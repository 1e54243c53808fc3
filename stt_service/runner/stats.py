"""The worker's own counters and latency percentiles, logged as ``worker stats:`` when it stops
(the benches read that line)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


class LatencyWindow:
    """The most recent ``keep`` durations (seconds) and their percentiles."""

    def __init__(self, keep: int = 200_000) -> None:
        self._values: deque[float] = deque(maxlen=keep)
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self._values.append(seconds)
        self.count += 1
        self.max = max(self.max, seconds)

    def summary(self) -> str:
        if not self.count:
            return "none"
        ordered = sorted(self._values)

        def at(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

        return (
            f"p50 {at(0.5):.1f} ms, p99 {at(0.99):.1f} ms, max {self.max * 1000:.1f} ms "
            f"over {self.count}"
        )


@dataclass
class WorkerStats:
    messages: int = 0
    errors: int = 0
    published: int = 0
    sessions_opened: int = 0
    sessions_closed: int = 0
    refused_chunks: int = 0
    interrupts: int = 0
    cancelled_interrupts: int = 0
    vad: str = ""  # the voice batcher's summary
    turns: str = ""  # the end-of-turn runner's summary
    # per audio chunk: time spent handling it, and client timestamp -> handled (same-clock lag)
    chunk_handling: LatencyWindow = field(default_factory=LatencyWindow)
    chunk_lag: LatencyWindow = field(default_factory=LatencyWindow)

    def summary(self) -> str:
        return (
            f"{self.messages} messages, {self.sessions_opened} sessions, {self.published} "
            f"published, {self.errors} errors; chunk handling {self.chunk_handling.summary()}; "
            f"chunk lag from client timestamp {self.chunk_lag.summary()}; "
            f"{self.interrupts} interrupts, {self.cancelled_interrupts} taken back"
            + (f"; voice detector: {self.vad}" if self.vad else "")
            + (f"; {self.turns}" if self.turns else "")
        )
