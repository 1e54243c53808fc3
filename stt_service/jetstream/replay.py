"""JetStream mode's checkpoints: where a replay of a session starts (:class:`ReplayTracker`), and
the checkpoint that records it, stored in a bucket and sent with every message published."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..session import Session

log = logging.getLogger(__name__)

CHECKPOINT_HEADER = "Stt-Checkpoint"


@dataclass(frozen=True, slots=True)
class ReplayPoint:
    seq: int  # stream sequence of the inbound message a replay starts at
    heard: int  # session samples before it
    snapshot: dict[str, Any]  # the session just before it (Session.snapshot())


class ReplayTracker:
    """Where a replay of one session would start.

    Fed every inbound message before the session handles it. Candidates are messages that
    arrived while the session was idle (no utterance open), grouped in runs between utterances;
    a candidate is *valid* once every utterance begun before it has had its final. The replay
    point is the newest valid candidate with ``lag`` samples of silence after it, so a replay
    hears the same silence (and pre-roll) before the next utterance as the first time. When the
    newest gap was shorter than that, an older gap is used: the utterances after it are heard
    again, and the session core publishes nothing for them (their finals were published).
    """

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self._runs: list[list[ReplayPoint]] = []
        self._in_run = False

    def observe(self, seq: int, session: Session) -> ReplayPoint | None:
        """Note message ``seq``; return the replay point now (None: none valid yet)."""
        if session.idle:
            if not self._in_run:
                self._runs.append([])
                self._in_run = True
            run = self._runs[-1]
            run.append(ReplayPoint(seq, session.samples_heard, session.snapshot()))
            # keep the newest point at least ``lag`` before the run's end, and those after it
            while len(run) > 1 and run[1].heard <= run[-1].heard - self.lag:
                del run[0]
        else:
            self._in_run = False
        for i in range(len(self._runs) - 1, -1, -1):
            run = self._runs[i]
            long_enough = run[-1].heard - run[0].heard >= self.lag
            if (long_enough or i == 0) and session.finished_before(
                int(run[0].snapshot["next_utt"])
            ):
                del self._runs[:i]
                return run[0]
        return None


def encode_checkpoint(ckpt: Mapping[str, Any]) -> str:
    return json.dumps(ckpt, separators=(",", ":"), ensure_ascii=True)


def decode_checkpoint(raw: bytes | str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("ignoring an unreadable session checkpoint")
        return None
    return value if isinstance(value, dict) and isinstance(value.get("v"), int) else None
