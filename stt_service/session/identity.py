"""Who a session is: its id, and the speaker its client named in ``start``; every message the
session's parts publish carries both."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Identity:
    session_id: str
    speaker_id: str | None = None
