"""What the session core asks the runner to do: the :data:`Action` types.

Every part of the core returns these; the runner (:mod:`stt_service.runner.worker`) executes
them in order. None of them is carried out inside the core: it knows nothing of NATS, asyncio or
the recognizer's transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..audio import Int16Array
from ..backends.base import StreamParams


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``message`` on the session's output subject."""

    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendAudio:
    """Hand 16 kHz audio of ``utterance`` to the recognizer stream; ``offset``: its first
    sample's session index."""

    samples: Int16Array
    offset: int
    utterance: int


@dataclass(frozen=True, slots=True)
class EndUtterance:
    """End ``utterance`` (its final is due); with ``until``, only audio before that session
    sample belongs to it (see ``RecognizerStream.flush``)."""

    utterance: int
    until: int | None = None


@dataclass(frozen=True, slots=True)
class Speculate:
    """The speaker paused: decode ``utterance`` so far now (see ``RecognizerStream.speculate``)."""

    utterance: int


@dataclass(frozen=True, slots=True)
class PredictTurn:
    """Ask the end-of-turn model whether the turn is complete: ``audio`` is its last 8 s (16 kHz,
    up to now); the answer comes back as a :class:`~stt_service.session.inputs.TurnVerdict`
    with ``utterance`` and ``seq``."""

    utterance: int
    seq: int
    audio: Int16Array


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """The session's stream options changed (``start``, ``configure``)."""

    params: StreamParams


@dataclass(frozen=True, slots=True)
class Close:
    """The session is over: deliver its pending finals, then forget it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Measure:
    """A latency the user feels, for metrics: ``final`` (end of speech to the final),
    ``first_partial`` (start of speech to the utterance's first partial), ``interrupt`` (speech
    onset while responding to the interrupt), ``turn_wait`` (the pause a turn's end waited out,
    in audio time) or ``turn_decision`` (end of speech to the decision that ended the turn; the
    final follows when its decode is done). Measured from when the audio in question reached the
    session to the ``now`` of the message it produced."""

    name: str
    seconds: float
    utterance: int = -1


Action = (
    Publish | SendAudio | EndUtterance | Speculate | PredictTurn | Reconfigure | Close | Measure
)
