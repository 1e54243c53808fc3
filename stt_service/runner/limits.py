"""Limits: the messages the worker refuses before a session sees them, and what it says why.

Sans-I/O, like the session core: it remembers which sessions ended or were refused lately and
answers with a :class:`Refusal` (the error's code and message); the runner publishes it. The
limits: no implicit restart of a session that ended (``STT_SESSION_IDLE_TIMEOUT``), no ``end`` or
``finalize`` for a session not open, no new session while draining or past ``STT_MAX_SESSIONS``,
and no chunk while ``STT_MAX_BUFFERED_AUDIO_BYTES`` of the session's audio wait for the recognizer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..config import LimitSettings
from ..floods import FloodLog
from ..protocol import Code, End, Finalize, Inbound, Start

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    message: str


class Limits:
    def __init__(self, settings: LimitSettings, floods: FloodLog | None = None) -> None:
        self.floods = floods or FloodLog(log)
        self.max_sessions = settings.stt_max_sessions
        self.max_buffered = settings.stt_max_buffered_audio_bytes
        self.keep_ended = settings.stt_session_idle_timeout
        self._refused: dict[str, float] = {}  # session ids refused recently (log once)
        self._ended: dict[str, float] = {}  # session ids closed recently: no implicit restart

    def ended(self, sid: str, now: float) -> None:
        self._ended[sid] = now

    def new_session(
        self, sid: str, first: Inbound, now: float, open_sessions: int, draining: bool
    ) -> Refusal | None:
        """Why the first message of a session not open here opens none (None: it does)."""
        if sid in self._ended and not isinstance(first, Start):
            return Refusal(
                Code.UNKNOWN_SESSION,
                f"{first.type}: session {sid!r} has ended; send 'start' to open it again",
            )
        if isinstance(first, End | Finalize):
            return Refusal(
                Code.UNKNOWN_SESSION,
                f"{first.type}: no open session {sid!r} (never started, ended, or closed after "
                "being idle)",
            )
        if draining:
            return self._refuse(
                sid,
                now,
                Code.SERVICE_DRAINING,
                "this worker is shutting down and takes no new sessions",
            )
        if open_sessions >= self.max_sessions:
            return self._refuse(
                sid,
                now,
                Code.TOO_MANY_SESSIONS,
                f"this worker is at its limit of {self.max_sessions} sessions (STT_MAX_SESSIONS); "
                "try again later",
            )
        return None

    def _refuse(self, sid: str, now: float, code: str, message: str) -> Refusal:
        if sid not in self._refused:
            self.floods.warning(f"{code} refusals", sid, "session %s refused: %s", sid, code)
            if len(self._refused) > 10_000:
                self._refused.clear()
        self._refused[sid] = now
        return Refusal(code, message)

    def backlog(self, waiting_bytes: int) -> Refusal | None:
        """Why a chunk is not accepted while ``waiting_bytes`` of its session's audio wait for the
        recognizer: refused audio was never accepted, so nothing accepted is ever dropped."""
        if waiting_bytes < self.max_buffered:
            return None
        return Refusal(
            Code.BACKEND_OVERLOADED,
            f"this chunk was not accepted: {waiting_bytes / 32000:.1f} s of this session's audio "
            f"is still waiting for the recognizer (limit STT_MAX_BUFFERED_AUDIO_BYTES="
            f"{self.max_buffered}); send it again later or slow down",
        )

    def forget(self, now: float) -> None:
        """Drop what is too old to matter (called on the clock's ticks)."""
        if self._refused:
            self._refused = {k: t for k, t in self._refused.items() if now - t < 60}
        if self._ended:
            keep = self.keep_ended
            self._ended = {k: t for k, t in self._ended.items() if now - t < keep}
