"""Eager end of turn, where the service ends turns: the announcements and their publishing.

With an eager threshold (``eager_eot_threshold`` in ``start`` / ``configure``, or
``STT_EAGER_EOT_THRESHOLD``), the turn rule (:mod:`.turns`) says when a pause is probably the
turn's end; the segmenter then announces it here, and speech that resumes after it takes it back.
The session publishes both as partials of the turn, with the names Flux uses:

- ``eager_end_of_turn``: the pause's words (joined to the turn's earlier stretches: the whole turn
  so far) and the model's ``end_of_turn_confidence``; an agent may start its reply;
- ``turn_resumed``: the user went on; the agent drops that reply;
- and the turn's final says ``end_of_turn`` (:meth:`Announcements.final`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from ..audio import TARGET_RATE
from ..backends.base import RecognitionEvent
from ..protocol import State
from .actions import Action

if TYPE_CHECKING:
    from .results import Results

EAGER = "eager_end_of_turn"
RESUMED = "turn_resumed"
END = "end_of_turn"


class Announcements:
    """What the segmenter announced and the session has not published yet."""

    def __init__(self) -> None:
        self.pending: list[tuple[RecognitionEvent, float | None]] = []
        self._text = ""  # the words of the last eager end announced

    def __bool__(self) -> bool:
        return bool(self.pending)

    def eager(self, utterance: int, text: str, span: list[int], confidence: float) -> None:
        """The turn is probably over at this pause (``span``: its speech's samples)."""
        self._text = text
        self._add(utterance, EAGER, span, confidence)

    def resumed(self, utterance: int, span: list[int]) -> None:
        """Speech resumed after an eager end: it is taken back (with the words it announced)."""
        self._add(utterance, RESUMED, span, None)

    def _add(self, utterance: int, event: str, span: list[int], eot: float | None) -> None:
        first, last = span
        ev = RecognitionEvent(
            utterance, self._text, False, first / TARGET_RATE, last / TARGET_RATE, event=event
        )
        self.pending.append((ev, eot))

    @staticmethod
    def final(ev: RecognitionEvent) -> RecognitionEvent:
        """A final of a session with eager ends: ``end_of_turn``, beside its eager events."""
        return replace(ev, event=END) if ev.is_final and ev.event is None else ev


class Turns(Protocol):
    """What publishing needs of the segmenter (:class:`~.segmenter.Segmenter`)."""

    announced: Announcements

    def stale(self, ev: RecognitionEvent) -> bool: ...
    def join(self, ev: RecognitionEvent) -> tuple[RecognitionEvent | None, int]: ...
    def about(self, ev: RecognitionEvent) -> tuple[bool, float | None, list[int] | None]: ...


def publish(seg: Turns, results: Results, state: State, now: float) -> list[Action]:
    """The segmenter's announcements as partials of their turn (the turn's words so far)."""
    actions: list[Action] = []
    while seg.announced:
        ev, eot = seg.announced.pending.pop(0)
        if seg.stale(ev):
            continue
        joined, turn = seg.join(ev)
        if joined is None:
            continue
        voice = seg.about(joined)[0]
        actions += results.publish(
            joined, turn=turn, voice=voice, eot=eot, bounds=None, state=state, now=now
        )
    return actions
