"""Results published that the NATS server may never have read, and how they go out again.

A core NATS publish is written to the socket and forgotten: when the server goes down (a restart,
a crash), what it had not read yet is lost, and the client misses a partial or a final (seen in
CI: the twelfth of nineteen messages of a session gone across a server restart). So each session
keeps what it published since the last round trip to the server (:attr:`SessionReplay.sent`); a
round trip (a flush: PING, PONG) confirms it all. After a reconnect, the results stream (it keeps
each session's last message) tells how far the server got: what came after that goes out again,
in order, before anything newer (:meth:`Outbox.recover`, which the inlet runs before it releases
the results held during the outage); until then new results are held too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from nats.aio.client import Client as NATS

from .replay import SessionReplay
from .streams import JetStreamState

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 2.0


def unreceived(
    last: bytes | None, sent: list[tuple[str, bytes, dict[str, str]]]
) -> list[tuple[str, bytes, dict[str, str]]]:
    """What of ``sent`` (oldest first) came after ``last``, the session's last message the
    results stream holds: all of it when the stream holds none of them."""
    if last is not None:
        for i in range(len(sent) - 1, -1, -1):
            if sent[i][1] == last:
                return sent[i + 1 :]
    return sent


class Outbox:
    """Confirmation and recovery of one replica's published results (see the module
    docstring)."""

    def __init__(self, nc: NATS, jsx: JetStreamState) -> None:
        self.nc = nc
        self.jsx = jsx
        self._seen = self._reconnects()
        self.resent = 0  # results published again after a reconnect

    def _reconnects(self) -> int:
        return int(self.nc.stats["reconnects"])

    @property
    def reconnected(self) -> bool:
        """The connection was lost and is back, and :meth:`recover` has not run since."""
        return self._reconnects() != self._seen

    async def confirm(self, sessions: Iterable[SessionReplay]) -> None:
        """One round trip to the server: what was published before it has been read."""
        if not self.nc.is_connected or self.reconnected:
            return
        pending = [(st, len(st.sent)) for st in sessions if st.sent]
        if not pending:
            return
        before = self._reconnects()
        try:
            await self.nc.flush(timeout=FLUSH_TIMEOUT_S)  # type: ignore[arg-type]
        except Exception:
            return  # the next look, or the reconnect, decides
        if self._reconnects() == before and self.nc.is_connected:
            for st, n in pending:
                del st.sent[:n]

    async def release(self, st: SessionReplay, sid: str, may_publish: Callable[[], bool]) -> int:
        """Publish, in order, what ``st`` held while it could not go out; how many went."""
        n = 0
        while st.held and may_publish():
            subject, data, headers = st.held[0]
            try:
                await self.nc.publish(subject, data, headers=headers)
            except Exception as exc:
                log.warning("session %s: results still held: %s", sid, exc)
                break
            st.sent.append(st.held.pop(0))
            n += 1
        return n

    async def recover(self, sessions: Iterable[SessionReplay]) -> None:
        """After a reconnect: what the server never received goes back to the front of each
        session's held results. Nothing happens until every session could be looked at."""
        if not self.reconnected or not self.nc.is_connected:
            return
        seen = self._reconnects()
        found: list[tuple[SessionReplay, list[tuple[str, bytes, dict[str, str]]]]] = []
        for st in sessions:
            if st.sent:
                last = await self.jsx.last_result(st.sent[0][0])
                found.append((st, unreceived(last, st.sent)))
        for st, rest in found:
            st.held[:0] = rest
            st.sent.clear()
            self.resent += len(rest)
        lost = sum(len(rest) for _, rest in found)
        if lost:
            log.warning(
                "NATS reconnected: %d result(s) of %d session(s) the server never received "
                "go out again",
                lost,
                sum(1 for _, rest in found if rest),
            )
        self._seen = seen
