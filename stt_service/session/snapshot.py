"""A session's failover state, typed: what a replay needs (:class:`Snapshot`) and what was
published (:class:`Progress`).

JetStream mode (:mod:`stt_service.jetstream`) takes a :class:`Snapshot` while a session is idle,
before an inbound message (a replay may start at that message), and sends the session's
:class:`Progress` with every message it publishes. A new owner restores the session from both
(:meth:`Session.restore <stt_service.session.core.Session.restore>`), replays the inbound
messages after the snapshot, and publishes none of what the progress says was published.

Both travel as JSON in checkpoints (:meth:`to_json` / :meth:`from_json`), with the keys replicas
have always written, so a replica of an earlier version reads what this one writes and back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast

from ..backends.base import StreamParams
from ..protocol import State


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The session just before an inbound message, while no speech was being collected."""

    heard: int  # 16 kHz samples heard
    pending: int  # of them, samples of the next voice-detector frame (silence: it was idle)
    next_utterance: int  # the index the next utterance gets
    state: State
    speaker_id: str | None
    params: StreamParams
    sample_rate: int
    channels: int
    explicit_start: bool  # the client sent 'start'
    audio_started: bool  # a chunk was received
    opened_at: float
    chunks: int

    def to_json(self) -> dict[str, Any]:
        params = asdict(self.params)
        params["keyterms"] = list(self.params.keyterms)
        return {
            "heard": self.heard,
            "pending": self.pending,
            "next_utt": self.next_utterance,
            "state": self.state,
            "speaker": self.speaker_id,
            "params": params,
            "rate": self.sample_rate,
            "channels": self.channels,
            "explicit": self.explicit_start,
            "audio": self.audio_started,
            "opened_at": self.opened_at,
            "chunks": self.chunks,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Snapshot:
        params = dict(d["params"])
        params["keyterms"] = tuple(params.get("keyterms") or ())
        return cls(
            heard=int(d["heard"]),
            pending=int(d.get("pending", 0)),
            next_utterance=int(d["next_utt"]),
            state=cast(State, d["state"]),
            speaker_id=d["speaker"],
            params=StreamParams(**params),
            sample_rate=int(d["rate"]),
            channels=int(d["channels"]),
            explicit_start=bool(d["explicit"]),
            audio_started=bool(d["audio"]),
            opened_at=float(d["opened_at"]),
            chunks=int(d["chunks"]),
        )


@dataclass(frozen=True, slots=True)
class Progress:
    """What the session published so far: a restored session never publishes it again."""

    sequence: int  # the next transcript's sequence number
    finished: int  # the highest utterance whose final was handled
    interrupt_at: int  # where the last interrupt published began (sample)
    interrupts: int
    final_end: float  # where the last final published ended (seconds)
    turn: int  # turn_index of the last final published

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Progress:
        return cls(
            sequence=int(d["sequence"]),
            finished=int(d["finished"]),
            interrupt_at=int(d["interrupt_at"]),
            interrupts=int(d["interrupts"]),
            final_end=float(d["final_end"]),
            turn=int(d.get("turn", -1)),
        )
