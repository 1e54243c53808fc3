"""Turns that went on after a long pause: several utterances for the recognizer, one for the client.

When the end-of-turn model keeps a turn open through a pause that silence alone would have ended
it at (``STT_CHUNK_TIMEOUT`` or more), the segmenter ends the utterance where the pause began
(its decode at the pause is its final) and begins the next one of the same turn when speech
resumes: Whisper drops the words after a finished-sounding sentence when an utterance then stops
mid-way, so each stretch of speech is decoded alone. The client sees one turn: partials show the
turn so far, and the stretches' finals are held until the last one's, then go out as one final
(text joined, words, ``audio_start`` of the first, mean confidence). :class:`TurnMap` keeps which
utterance belongs to which turn, in the utterances' records.
"""

from __future__ import annotations

from dataclasses import replace

from ..backends.base import RecognitionEvent
from .record import Records


class TurnMap:
    def __init__(self, records: Records) -> None:
        self._records = records

    def go_on(self, prev: int, nxt: int) -> None:
        """Utterance ``nxt`` is the next stretch of the turn ``prev`` belongs to."""
        turn = self.turn_of(prev)
        self._records.at(prev).turn = turn
        self._records.at(nxt).turn = turn
        head = self._records.at(turn)
        if head.stretches is None:
            head.stretches = [turn]
        head.stretches.append(nxt)

    def turn_of(self, utterance: int) -> int:
        """The turn an utterance belongs to (its own index, or the first of a turn that went on
        after a pause): what the published final's ``turn_index`` says."""
        rec = self._records.get(utterance)
        return utterance if rec is None or rec.turn is None else rec.turn

    def stretch_of(self, utterance: int) -> int | None:
        """The turn of a stretch of a longer turn; None for an utterance that is a turn alone."""
        rec = self._records.get(utterance)
        return None if rec is None else rec.turn

    def join(self, ev: RecognitionEvent, turn: int) -> RecognitionEvent | None:
        """``ev`` from one stretch of ``turn``: a partial shows the turn so far; a final is held
        (None) until every stretch of the turn has its final, then they go out as one."""
        stretches = self._records.at(turn).stretches or [turn]
        if ev.is_final:
            self._records.at(ev.utterance).held = ev
        held = sorted(
            (e for u in stretches if (e := self._held(u)) is not None), key=lambda e: e.utterance
        )
        if not ev.is_final:
            parts = [*held, ev]
        elif len(held) < len(stretches):
            return None
        else:
            parts, ev = held, held[-1]
            for u in stretches:  # the turn is whole: its stretches are done with
                if u == ev.utterance:
                    rec = self._records.at(u)
                    rec.turn = rec.stretches = rec.held = None
                else:
                    self._records.pop(u)
        if len(parts) == 1:
            return ev
        confidences = [e.confidence for e in parts if e.confidence is not None]
        words = [w for e in parts for w in (e.words or [])]
        return replace(
            ev,
            text=" ".join(t for t in (e.text.strip() for e in parts) if t),
            audio_start=parts[0].audio_start,
            confidence=sum(confidences) / len(confidences) if confidences else None,
            words=words if any(e.words is not None for e in parts) else None,
        )

    def _held(self, utterance: int) -> RecognitionEvent | None:
        rec = self._records.get(utterance)
        return None if rec is None else rec.held
