"""The order of a session's messages while its audio waits for the voice detector.

Where the worker runs the voice detector's network for many sessions at once (``batched``), a
chunk's frames may wait for it; messages that arrive meanwhile wait behind them in the
:class:`Inbox` and are handled in order once those frames are decided, so a ``finalize`` or a
state change lands where it was sent, not before the speech sent ahead of it. (An ``end`` does
not wait: the session core decides it at once, so that a ``start`` right behind it opens a new
session under the id.)
"""

from __future__ import annotations

from collections import deque

from ..protocol import Chunk, Inbound
from .intake import Intake


class Inbox:
    """Messages waiting behind frames the voice detector has not decided, with the time each
    arrived, and how much audio their chunks hold."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake  # how many samples a chunk holds, in the session's format
        self._waiting: deque[tuple[Inbound, float]] = deque()
        self.samples = 0  # 16 kHz samples in the waiting chunks

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def put(self, msg: Inbound, at: float) -> None:
        self._waiting.append((msg, at))
        if isinstance(msg, Chunk):
            self.samples += self._intake.samples_of(msg.pcm)

    def take(self) -> tuple[Inbound, float]:
        """The oldest message and when it arrived."""
        msg, at = self._waiting.popleft()
        if isinstance(msg, Chunk):
            self.samples -= self._intake.samples_of(msg.pcm)
        return msg, at

    def clear(self) -> None:
        self._waiting.clear()
        self.samples = 0
