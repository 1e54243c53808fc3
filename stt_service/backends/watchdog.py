"""The stream watchdog every streaming backend shares: a model that owes an answer and says nothing.

A stream can stay open, keep taking audio and stop answering (no ``TurnInfo``, no
``transcription.delta``, no error): pipecat-ai/pipecat#5735 is that failure upstream. Nothing on
the transport announces it, so each stream says when its model *owes* an answer (:meth:`owe`):

- Deepgram (Flux, Nova): audio with speech energy was sent (Flux answers with an ``Update`` about
  every 250 ms of a turn, Nova with an interim result about every second), a ``ForceEndTurn`` /
  ``Finalize`` of an open turn, or ``CloseStream``. Silence and ``KeepAlive`` owe nothing:
  neither emulator, and not every model, answers silence.
- Realtime servers: the closing commit of an utterance, until its transcript is done (each
  message in between, a delta, restarts the clock; a transcript queued behind others the same
  backend awaits gets :data:`QUEUED_S` more for each, so a busy server is not taken for a hung one
  and loaded further with retries).

Speech sent ahead of real time is owed from when it would have played (a model may pace itself
on the audio).

Any message from the model pays what was owed more than :data:`CROSSING_S` before it (for a
realtime transcript, it restarts the clock). When something has been owed for the watchdog's time
with nothing heard, :meth:`StallWatch.receive` raises a retryable
:class:`~.transports.base.TransportError` with ``cause="stall"``: the stream's own reconnect loop
(:func:`~.streaming.reconnecting`) opens a new connection and replays the unfinished turn, as for
a dropped one, and the receivers' never-twice rules keep each final single. Each stall is counted
(``stt.backend.stalls``) by the backend's :class:`StallCount`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .transports.base import Duplex, TransportError

log = logging.getLogger(__name__)

# a message this soon after a debt may have crossed it on the wire (the greeting of a stream the
# session's whole audio was just sent to): it pays only what was owed before
CROSSING_S = 0.1
QUEUED_S = 1.0  # a server's queue: more time per answer already awaited on the same backend


@dataclass(slots=True)
class StallCount:
    """One backend's stalls so far (read at each metrics export as ``stt.backend.stalls``)."""

    stalls: int = 0
    waiting: int = 0  # streams awaiting an answer the server may queue (realtime transcripts)

    @contextlib.contextmanager
    def awaiting(self, watch: StallWatch) -> Iterator[None]:
        """A transcript is owed, deltas or not, until the block ends; while others are awaited
        on this backend it may take :data:`QUEUED_S` more for each (the server's queue, in
        whatever order it serves it)."""
        watch.owe(until_settled=True)
        watch.grace = lambda: QUEUED_S * max(0, self.waiting - 1)
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1
            watch.grace = _no_grace
            watch.settle()


class StallWatch:
    """One connection's watchdog. ``stall_s``: how long an owed answer may take; None or 0: no
    watchdog (every receive waits as long as the model takes)."""

    def __init__(
        self,
        stall_s: float | None,
        *,
        name: str,
        session: str,
        count: StallCount | None = None,
    ) -> None:
        self.stall_s = stall_s or None
        self.grace: Callable[[], float] = _no_grace  # seconds more the answer may take, now
        self.name = name
        self.session = session
        self.count = count
        self.owed_since: float | None = None
        self._until_settled = False
        self._last_owed = 0.0

    def owe(self, *, at: float | None = None, until_settled: bool = False) -> None:
        """The model owes an answer from ``at`` (monotonic; never before now; an earlier debt
        keeps its start). A later ``at`` is a debt that cannot be due yet: audio sent ahead of
        real time is owed from when it would have played, a transcript queued behind others'
        from when the queue may have reached it. ``until_settled``: each message only restarts
        the clock, until :meth:`settle` (a transcript in deltas)."""
        now = time.monotonic()
        at = now if at is None else max(at, now)
        if self.owed_since is None:
            self.owed_since = at
        self._last_owed = max(self._last_owed, at)
        self._until_settled = self._until_settled or until_settled

    def settle(self) -> None:
        """Nothing is owed any more (the answer came)."""
        self.owed_since = None
        self._until_settled = False
        self._last_owed = 0.0

    def _heard(self) -> None:
        now = time.monotonic()
        if self._until_settled:
            self.owed_since = now
        elif self._last_owed > now - CROSSING_S:
            # what is owed from later than that message, or just before it: it may have been
            # sent before that was heard
            self.owed_since = self._last_owed
        else:
            self.owed_since = None

    def overdue(self, now: float | None = None) -> float | None:
        """Seconds an answer has been owed past the watchdog's time; None when it is not late."""
        if self.stall_s is None or self.owed_since is None:
            return None
        late = (time.monotonic() if now is None else now) - self.owed_since
        return late if late >= self.stall_s + self.grace() else None

    async def receive(self, duplex: Duplex) -> str | bytes | None:
        """``duplex.receive()``, but a model that owes an answer for ``stall_s`` and sends nothing
        is a stalled stream: :class:`TransportError` ``cause="stall"`` (retryable)."""
        if self.stall_s is None:
            message = await duplex.receive()
            self._heard()
            return message
        task = asyncio.ensure_future(duplex.receive())
        try:
            while True:
                now = time.monotonic()
                if self.owed_since is None:
                    timeout = self.stall_s  # look again then: something may be owed by then
                else:
                    timeout = max(0.0, self.owed_since + self.stall_s + self.grace() - now)
                done, _ = await asyncio.wait({task}, timeout=timeout)
                if done:
                    break
                if (late := self.overdue()) is not None:
                    raise self._stalled(late)
        except BaseException:  # stalled, or the connection is ending: the receive goes with it
            task.cancel()
            raise
        self._heard()
        return task.result()

    def _stalled(self, late: float) -> TransportError:
        if self.count is not None:
            self.count.stalls += 1
        log.warning(
            "session %s: the %s stream stalled: it owed an answer and sent nothing for %.1f s "
            "(STT_STALL_TIMEOUT_S=%g s); opening a new one",
            self.session,
            self.name,
            late,
            self.stall_s,
        )
        return TransportError(
            f"no answer from {self.name} for {late:.1f} s while it owed one",
            retryable=True,
            cause="stall",
        )


def _no_grace() -> float:
    return 0.0
