"""How long a session may live: ``STT_SESSION_IDLE_TIMEOUT`` without a message, and
``STT_MAX_SESSION_SECONDS`` in all. Past either, the session's pending speech is still
transcribed, its client told why (an ``error``), and it is closed."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol import Code
from .config import SessionConfig


@dataclass(frozen=True, slots=True)
class Expired:
    code: str
    message: str
    reason: str  # the close reason the runner logs


def expired(
    config: SessionConfig, now: float, opened_at: float, last_message_at: float
) -> Expired | None:
    """Why the session must close now (None: it may go on)."""
    if now - opened_at >= config.max_session_s:
        return Expired(
            Code.SESSION_TOO_LONG,
            f"the session reached its limit of {config.max_session_s:g} s "
            "(STT_MAX_SESSION_SECONDS) and is closed; its pending speech is still "
            "transcribed; send 'start' to go on in a new session",
            "too long",
        )
    if now - last_message_at >= config.idle_timeout_s:
        return Expired(
            Code.SESSION_IDLE_TIMEOUT,
            f"no message for {config.idle_timeout_s:g} s (STT_SESSION_IDLE_TIMEOUT); "
            "session closed",
            "idle",
        )
    return None
