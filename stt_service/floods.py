"""Warnings that come in floods: each kind's first lines in full, the rest counted and summed up.

A client that sends 20,000 bad messages in a minute, a storm of sessions refused at
``STT_MAX_SESSIONS``, a password changed on the NATS server (an ``Authorization Violation`` at
every reconnect, twice a second): each used to be one WARNING line per occurrence, and the log
drowned what else it said. :class:`FloodLog` logs, in each window of ``window_s``, the first
occurrence of a kind (an error code, say) for each of its first ``first`` sessions in full, and
counts the rest; when the window is over it writes one summary line per kind that had more
("1,234 more invalid_message from 57 sessions in the last 10 s"). The first occurrence of every
kind is always logged; what a client is sent back (its ``error``) is not touched.

Sans-I/O: it takes the time with each call and writes through the logger it is given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_S = 10.0
FIRST = 5  # sessions per kind and window whose line is logged in full
_MAX_TRACKED = 100_000  # sessions counted per kind and window (beyond: counted, not told apart)


@dataclass(slots=True)
class _Kind:
    logged: set[str] = field(default_factory=set)  # sessions whose line was logged this window
    more: int = 0  # occurrences counted, not logged
    sessions: set[str] = field(default_factory=set)  # the sessions they came from


class FloodLog:
    """Rate-limited warnings per (kind, session); see the module docstring."""

    def __init__(
        self,
        logger: logging.Logger,
        window_s: float = WINDOW_S,
        first: int = FIRST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = logger
        self.window_s = window_s
        self.first = first
        self._clock = clock
        self._since = clock()
        self._kinds: dict[str, _Kind] = {}
        self.suppressed = 0  # lines counted instead of logged, in all

    def warning(self, kind: str, session: str | None, msg: str, *args: object) -> None:
        """Log ``msg % args`` unless ``kind`` has flooded this window (then count it).
        ``session``: whose it is (None: the service's own, as a NATS error)."""
        self.flush()
        k = self._kinds.setdefault(kind, _Kind())
        key = "" if session is None else session
        if key in k.logged or len(k.logged) >= self.first:
            k.more += 1
            self.suppressed += 1
            if session is not None and len(k.sessions) < _MAX_TRACKED:
                k.sessions.add(session)
            return
        k.logged.add(key)
        self.log.warning(msg, *args)

    def flush(self) -> None:
        """When the window is over: a summary line for each kind that had more, and a new
        window. Called with every warning and by the runner's clock."""
        now = self._clock()
        if now - self._since < self.window_s:
            return
        for kind, k in self._kinds.items():
            if k.more:
                n = len(k.sessions)
                whose = f" from {n:,} session{'' if n == 1 else 's'}" if n else ""
                self.log.warning(
                    "%s more %s%s in the last %.0f s", f"{k.more:,}", kind, whose, now - self._since
                )
        self._kinds.clear()
        self._since = now
