"""What goes into the session core: the :data:`Input` types of :meth:`Session.feed`.

A session hears four things, each with the time it happened:

- a client's message (:data:`~stt_service.protocol.Inbound`: ``start``, ``chunk``, ...);
- a recognizer event (:data:`~stt_service.backends.base.StreamEvent`: a partial, a final, an
  error, an endpoint hint);
- an answer from the models the runner runs for many sessions at once (:class:`VoiceReady`: the
  voice detector decided the frames that waited; :class:`TurnVerdict`: the end-of-turn model
  answered a :class:`~stt_service.session.actions.PredictTurn`);
- the clock (:class:`Tick`), and the runner shutting it down (:class:`Shutdown`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import StreamEvent
from ..protocol import Inbound


@dataclass(frozen=True, slots=True)
class VoiceReady:
    """The voice detector's network decided this session's waiting frames (batched mode)."""


@dataclass(frozen=True, slots=True)
class TurnVerdict:
    """The end-of-turn model's answer to ``PredictTurn(utterance, seq)``: the probability that
    the turn is complete, or None when the model failed."""

    utterance: int
    seq: int
    probability: float | None


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock: idle and length limits, speech whose chunks stopped, interrupts taken back."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Close the session now (a drain, a stop): pending speech is finalised first."""

    reason: str


Input = Inbound | StreamEvent | VoiceReady | TurnVerdict | Tick | Shutdown

TICK = Tick()
VOICE_READY = VoiceReady()
