"""What the session knows of each utterance until its final is handled: one record per utterance.

The parts write their own fields: the segmenter whether it held voice and where its speech
began and ended, the turn decision how sure the model was at its end, the turn map which turn it
belongs to and its final while the rest of the turn is awaited, the results whether its first
partial went out. The record goes when the utterance's final (or its error) has been handled, so
a long session keeps only the utterances in flight; :data:`LIMIT` bounds those whose final never
comes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import RecognitionEvent

LIMIT = 1000  # records kept at most: past it, the oldest goes


@dataclass(slots=True)
class UtteranceRecord:
    voice: bool = False  # some frame was voiced: the final's ``has_voice_activity``
    speech: list[int] | None = None  # [first voiced sample, end of the last voiced frame]
    eot: float | None = None  # the end-of-turn model's verdict where the utterance ended
    partial_sent: bool = False  # its first partial was published (its latency measured)
    turn: int | None = None  # the turn it is a stretch of (a turn that went on after a pause)
    stretches: list[int] | None = None  # on a turn's first utterance: every stretch of the turn
    held: RecognitionEvent | None = None  # its final, waiting for the rest of the turn's


class Records:
    """The records of the utterances in flight, oldest first."""

    def __init__(self) -> None:
        self._by: dict[int, UtteranceRecord] = {}

    def open(self, utterance: int, voice: bool = False) -> UtteranceRecord:
        """A new utterance's record (a record it had is replaced)."""
        rec = self._by[utterance] = UtteranceRecord(voice=voice)
        if len(self._by) > LIMIT:
            del self._by[next(iter(self._by))]
        return rec

    def get(self, utterance: int) -> UtteranceRecord | None:
        return self._by.get(utterance)

    def at(self, utterance: int) -> UtteranceRecord:
        """The utterance's record, opened if it has none (a backend's turn the session did not
        see begin: the backend finds turns)."""
        rec = self._by.get(utterance)
        return rec if rec is not None else self.open(utterance)

    def pop(self, utterance: int) -> UtteranceRecord | None:
        return self._by.pop(utterance, None)
