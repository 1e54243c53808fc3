"""Transcripts as the client gets them: numbering, the failover floor, turn numbers, latency.

:class:`Results` publishes a recognizer event the segmenter has made client-shaped (stale ones
dropped, stretches of a turn joined) as a ``transcript`` message: ``sequence`` +1 per message from
0, ``turn_index`` from the session's own count (a restored session's new recognizer stream counts
its turns from 0 again: the base is fixed by its first new turn), and ``end_of_turn_confidence``
on finals. After a failover, replayed audio whose final a previous owner published
(``audio_end`` at or before the floor) publishes nothing. It measures, from when the audio
arrived, the two latencies a user feels of transcripts: the final after the end of speech, and an
utterance's first partial after its start.
"""

from __future__ import annotations

from ..backends.base import RecognitionEvent
from ..protocol import State, transcript_message
from .actions import Action, Publish
from .identity import Identity
from .intake import Intake
from .record import Records


class Results:
    def __init__(self, who: Identity, records: Records, intake: Intake) -> None:
        self._who = who
        self._records = records
        self._intake = intake
        self.sequence = 0
        self.final_end = 0.0  # where the last published final's audio ended (seconds)
        self.final_floor = -1.0  # after a restore: finals up to here were published
        self.last_turn = -1  # turn_index of the last final published
        # the backend's turn numbers -> the session's: fixed by the first turn (None: not yet)
        self._turn_base: int | None = 0

    def fresh(self, ev: RecognitionEvent) -> bool:
        """False for audio replayed after a failover whose final was published already."""
        return ev.audio_end > self.final_floor + 0.02

    def publish(
        self,
        ev: RecognitionEvent,
        *,
        turn: int,
        voice: bool,
        eot: float | None,
        bounds: list[int] | None,
        state: State,
        now: float,
    ) -> list[Action]:
        """``ev`` of ``turn`` (``voice``: its utterance held voice; ``eot``: the end-of-turn
        confidence of a final; ``bounds``: its speech's first and last sample) as a message,
        with its latency; an event without words publishes nothing."""
        if ev.turn_index is not None:
            if self._turn_base is None:
                self._turn_base = self.last_turn + 1 - ev.turn_index
            turn = ev.turn_index + self._turn_base
        text = ev.text.strip()
        actions = self._latency(ev, bool(text), bounds, now)
        if ev.is_final:  # the utterance is done with
            self._records.pop(ev.utterance)
        if not text:
            return actions
        actions.append(
            Publish(
                transcript_message(
                    session_id=self._who.session_id,
                    transcript=text,
                    sequence=self.sequence,
                    is_final=ev.is_final,
                    timestamp=now,
                    speaker_id=self._who.speaker_id,
                    has_voice_activity=voice,
                    state=state,
                    confidence=ev.confidence,
                    words=ev.words,
                    audio_start=round(ev.audio_start, 3),
                    audio_end=round(ev.audio_end, 3),
                    turn_index=turn,
                    event=ev.event,
                    language=ev.language,
                    end_of_turn_confidence=(
                        None
                        if eot is None or not (ev.is_final or ev.event == "eager_end_of_turn")
                        else round(eot, 4)
                    ),
                )
            )
        )
        self.sequence += 1
        if ev.is_final:
            self.final_end = max(self.final_end, ev.audio_end)
            self.last_turn = max(self.last_turn, turn)
        return actions

    def _latency(
        self, ev: RecognitionEvent, published: bool, bounds: list[int] | None, now: float
    ) -> list[Action]:
        """``final`` and ``first_partial`` measurements for a transcript about to be published."""
        if not published or bounds is None:
            return []
        if ev.is_final:
            return self._intake.measure("final", bounds[1], now, ev.utterance)
        rec = self._records.at(ev.utterance)
        if rec.partial_sent:
            return []
        rec.partial_sent = True
        return self._intake.measure("first_partial", bounds[0], now, ev.utterance)

    # --- failover -------------------------------------------------------------------------------
    @property
    def published_end(self) -> float:
        """Where the last final published (here or by a previous owner) ended."""
        return max(self.final_end, self.final_floor)

    def resume(self, sequence: int, final_end: float, last_turn: int) -> None:
        """A restored session: numbering goes on from ``sequence``; finals ending by
        ``final_end`` were published; a new recognizer stream fixes the turn base again."""
        self.sequence = sequence
        self.final_floor = self.final_end = final_end
        self.last_turn = last_turn
        self._turn_base = None
