"""The segmenter for backends that find turns themselves (Flux, Nova): every frame goes through.

The session makes no utterances of its own: all audio is one stream (utterance 0), the backend's
events carry its own turn numbers, and ``finalize`` tells the backend to end its turn now. The
voice detector runs only while barge-in could use it. The session is idle (a replay may begin)
while no turn of the backend's is open: one opens with a partial holding words and closes with
its final.
"""

from __future__ import annotations

from ..audio import TARGET_RATE, Int16Array
from ..backends.base import EndpointHint, RecognitionEvent, StreamParams
from ..speech.vad import FrameInfo
from .actions import Action, EndUtterance, SendAudio
from .eager import Announcements
from .intake import Intake


class PassThrough:
    """The backend finds turns (see the module docstring and :class:`~.segmenter.Segmenter`)."""

    waits_for_final = False  # a cough may make no turn at all: no final will decide it
    needs_voice = False
    in_utterance = False

    def __init__(self) -> None:
        self.next_utterance = 0
        self.finished = -1  # the backend's number of the last turn whose final was handled
        self._turn_open = False  # a turn began (a partial with words) and has no final yet
        self.announced = Announcements()  # none: Flux announces its own eager ends

    @property
    def idle(self) -> bool:
        return not self._turn_open

    def frame(
        self, frame: Int16Array, info: FrameInfo, offset: int, now: float, out: list[Action]
    ) -> None:
        out.append(SendAudio(frame, offset, 0))

    def end(self, now: float) -> list[Action]:
        return []

    def finalize(self, now: float, intake: Intake) -> list[Action]:
        """The backend ends its turn now, every sample heard included (a part frame too)."""
        if not intake.started:
            return []
        rest, offset = intake.take_rest()
        actions: list[Action] = [SendAudio(rest, offset, 0)] if rest.size else []
        return [*actions, EndUtterance(0)]

    def hint(self, hint: EndpointHint, now: float) -> list[Action]:
        return []

    def verdict(
        self, utterance: int, seq: int, probability: float | None, now: float
    ) -> list[Action]:
        return []

    def tune(self, params: StreamParams) -> None:
        return None  # the backend reads the session's options itself

    def barge_utterance(self) -> int | None:
        return None

    def stale(self, ev: RecognitionEvent) -> bool:
        return False  # the backend never sends a final twice (its receiver sees to that)

    def failed(self, utterance: int) -> RecognitionEvent | None:
        return None

    def join(self, ev: RecognitionEvent) -> tuple[RecognitionEvent | None, int]:
        return ev, ev.utterance

    def result(self, ev: RecognitionEvent) -> None:
        if ev.is_final:
            self.finished = ev.utterance
            self._turn_open = False
        elif ev.text.strip():
            self._turn_open = True

    def about(self, ev: RecognitionEvent) -> tuple[bool, float | None, list[int] | None]:
        """Voice (the backend heard some), its own end-of-turn confidence, and the speech's
        bounds from its word times (else the event's audio window)."""
        first = ev.words[0].start if ev.words else ev.audio_start
        last = ev.words[-1].end if ev.words else ev.audio_end
        bounds = [round(first * TARGET_RATE), round(last * TARGET_RATE)]
        return True, ev.end_of_turn_confidence if ev.is_final else None, bounds

    def speech_onset(self, ev: RecognitionEvent) -> float:
        return ev.audio_start

    def utterance_of(self, ev: RecognitionEvent) -> int | None:
        return None

    def turn_of(self, utterance: int) -> int:
        return utterance

    def finished_before(self, utterance: int) -> bool:
        return True
