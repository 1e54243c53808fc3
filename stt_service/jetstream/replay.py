"""JetStream mode's checkpoints: where a replay of a session starts (:class:`ReplayTracker`), a
session's replay state (:class:`SessionReplay`), and the checkpoint that records it, stored in a
bucket and sent with every message published."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..session import Progress, Session, Snapshot

if TYPE_CHECKING:
    from nats.aio.subscription import Subscription

    from ..runner.inlet import Live

log = logging.getLogger(__name__)

CHECKPOINT_HEADER = "Stt-Checkpoint"


@dataclass(frozen=True, slots=True)
class ReplayPoint:
    seq: int  # stream sequence of the inbound message a replay starts at
    heard: int  # session samples before it
    snapshot: Snapshot  # the session just before it


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
            if (long_enough or i == 0) and session.finished_before(run[0].snapshot.next_utterance):
                del self._runs[:i]
                return run[0]
        return None


@dataclass(eq=False)
class Partition:
    """A partition this replica leases: its consumer, floor and the sessions it closes."""

    k: int
    sub: Subscription | None = None
    last_seq: int = 0  # last inbound message seen
    floor: int = 0  # last floor stored
    floor_at: float = 0.0
    # sessions not open here: their checkpoint (None: none stored), read once
    known: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    closing: dict[str, Live] = field(default_factory=dict)  # until the close is recorded
    releasing: bool = False  # being given up: no more messages are taken


@dataclass(eq=False)
class SessionReplay:
    """A session's partition and replay point: the stream sequence of the first inbound message a
    replay would start at, and the session's state just before it."""

    partition: int
    replay: ReplayTracker
    v: int = 0  # checkpoint version: a newer one wins
    replay_seq: int = 0
    snap: Snapshot | None = None
    persisted: int = 0  # replay point of the newest checkpoint stored (or the first message)
    persisted_at: float = 0.0  # monotonic
    handled: int = 0  # stream sequence of the last inbound message handled
    quiet_until: int = 0  # a replay: errors for messages up to here were published already
    replaying: bool = False
    # results not published yet because this replica's lease on the partition was in doubt
    # (NATS unreachable, renewal late): sent in order once it is renewed, dropped if it is lost
    held: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    # results published since the last round trip to the server (see .outbox)
    sent: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    @classmethod
    def resumed(
        cls, partition: int, tracker: ReplayTracker, ckpt: dict[str, Any]
    ) -> tuple[SessionReplay, Snapshot | None, Progress]:
        """A session another replica served, from its checkpoint: its replay state here, the
        snapshot its replay starts from (None: it had none, the session's start) and what it
        published."""
        replay, handled = int(ckpt["replay"]), int(ckpt.get("handled") or 0)
        stored = ckpt.get("snap")
        snap = Snapshot.from_json(stored) if stored else None
        st = cls(
            partition,
            tracker,
            v=int(ckpt["v"]),
            replay_seq=replay,
            persisted=replay,
            snap=snap,
            handled=handled,
            quiet_until=handled,
        )
        return st, snap, Progress.from_json(ckpt["progress"])

    def checkpoint(self, progress: Progress) -> dict[str, Any]:
        """The checkpoint to store (or send) now: a newer version each time."""
        self.v += 1
        return {
            "v": self.v,
            "replay": self.replay_seq,
            "snap": self.snap.to_json() if self.snap is not None else None,
            "progress": progress.to_json(),
            "handled": self.handled,
        }


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
