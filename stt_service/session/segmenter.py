"""Where utterances begin and end: the session's segmenter, in two implementations.

A :class:`Segmenter` takes the session's decided frames and says which audio goes to the
recognizer as which utterance, and when an utterance ends. It also keeps what the session needs
to know of utterances to publish their results (which are stale, what a final's turn is, whether
every utterance so far has its final). Two exist:

- :class:`ServiceSegmenter` (Whisper, Whisper over HTTP, realtime servers): the service finds
  utterances with its voice detector, below;
- :class:`~.passthrough.PassThrough` (Flux, Nova): the backend finds turns itself; every frame
  is streamed and the session cuts nothing.

The service's utterances, as named states (:class:`Phase`), with the pre-roll before them:

- no utterance: frames go to the pre-roll (the last ``preroll_ms``); voice (the endpointer's
  start rule) begins one, pre-roll first;
- ``SPEAKING``: the last frame was voice; frames go to the recognizer as they come;
- ``PAUSING``: frames since were not voice: held back (they go out if speech resumes, and the
  first ``trailing_ms`` of them as the utterance's trailing silence if it ends);
- ``DECODED``: the pause reached ``STT_EAGER_ENDPOINT`` (or the end-of-turn model's pause):
  its held silence is sent and the utterance so far decoded (``Speculate``); if it ends now, that
  decode is its final;
- ``FINISHED``: that decode reads as a finished sentence ("...man."): the utterance ends as soon
  as the pause is quiet (a fricative is no pause).

An utterance ends on ``STT_CHUNK_TIMEOUT`` of silence, or where the end-of-turn model says the
turn is over (:mod:`.turns`), on ``finalize``, when the client's chunks stop, at the session's
end; one that reaches ``STT_BUFFER_SIZE_BYTES`` is cut at its quietest recent frame and goes on
as the next. A turn the model kept open through a long pause goes on as a new utterance of the
same turn (:mod:`.turnmap`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from ..audio import TARGET_RATE, Int16Array
from ..backends.base import EndpointHint, RecognitionEvent, StreamParams
from ..speech.vad import FrameInfo
from .actions import Action, EndUtterance, SendAudio, Speculate
from .config import SessionConfig
from .eager import Announcements
from .endpoint import Endpointer, EndpointEvent, reads_finished
from .intake import Intake
from .interrupt import SURE
from .record import Records, UtteranceRecord
from .turnmap import TurnMap
from .turns import TurnDecision, TurnStep

# A finished sentence ends its utterance early only after this much quiet: frames this far below
# the utterance's loudest voiced frame. The VAD's voicing test calls a fricative ("sh", "s", "f")
# silence, and a decode of the pause inside "selfish" reads as a finished "...selfi."; the quiet
# test tells them apart (the "sh" is 5-20 dB below the voice, the pause after a sentence 25+).
QUIET_BELOW_PEAK_DB = 22.0
QUIET_MS = 150
# Inside an utterance, a voiced frame this far below its loudest is not the speaker going on: a
# breath 33 dB down after "...for them" restarted speech and threw away the pause's decode. The
# last voiced frame of "was" in 8 kHz telephone audio is 28 dB down and must still count.
VOICE_BELOW_PEAK_DB = 30.0

# the speech of an utterance ended: (now, utterance, seconds of voice in it)
SpeechEnded = Callable[[float, int, float], None]


class Segmenter(Protocol):
    """What the session asks of its segmenter (see the module docstring)."""

    finished: int  # the highest utterance whose final was handled
    next_utterance: int  # the index the next utterance gets
    waits_for_final: bool  # a final of every speech will come (the service makes utterances)
    needs_voice: bool  # the voice detector must hear every frame (else only for barge-in)
    announced: Announcements  # eager ends of turn and turn_resumed, to publish

    @property
    def in_utterance(self) -> bool: ...
    @property
    def idle(self) -> bool:
        """No speech is being collected now."""
        ...

    def frame(
        self, frame: Int16Array, info: FrameInfo, offset: int, now: float, out: list[Action]
    ) -> None:
        """The next decided frame (its first sample's index ``offset``)."""

    def end(self, now: float) -> list[Action]:
        """Speech ended (silence on the clock, the session's end): end the utterance open."""
        ...

    def finalize(self, now: float, intake: Intake) -> list[Action]:
        """The client asked for the final of what it said so far."""
        ...

    def hint(self, hint: EndpointHint, now: float) -> list[Action]: ...
    def verdict(
        self, utterance: int, seq: int, probability: float | None, now: float
    ) -> list[Action]: ...
    def tune(self, params: StreamParams) -> None: ...
    def barge_utterance(self) -> int | None:
        """The utterance speech heard now belongs to (None: the backend finds turns)."""
        ...

    # --- the recognizer's results ---------------------------------------------------------------
    def stale(self, ev: RecognitionEvent) -> bool:
        """A late partial, or a repeated final: never published."""
        ...

    def failed(self, utterance: int) -> RecognitionEvent | None:
        """An utterance's decode failed: what of its turn goes out without it, if anything."""
        ...

    def join(self, ev: RecognitionEvent) -> tuple[RecognitionEvent | None, int]:
        """The event as the client sees it (a stretch of a longer turn joined to the rest; None:
        held for the rest), and the turn it belongs to."""
        ...

    def result(self, ev: RecognitionEvent) -> None:
        """``ev`` is about to be published (a final: its utterance is done with)."""

    def about(self, ev: RecognitionEvent) -> tuple[bool, float | None, list[int] | None]:
        """Of ``ev``'s utterance: held voice, the end-of-turn confidence of its final, and its
        speech's [first, last] samples (None: unknown)."""
        ...

    def speech_onset(self, ev: RecognitionEvent) -> float:
        """Where ``ev``'s speech began (seconds of session audio)."""
        ...

    def utterance_of(self, ev: RecognitionEvent) -> int | None:
        """``ev``'s utterance, where the service makes them (else None)."""
        ...

    def turn_of(self, utterance: int) -> int: ...
    def finished_before(self, utterance: int) -> bool:
        """Every utterance begun before ``utterance`` has had its final handled."""
        ...


class Phase(Enum):
    SPEAKING = "speaking"
    PAUSING = "pausing"
    DECODED = "decoded"
    FINISHED = "finished"


DECODED = (Phase.DECODED, Phase.FINISHED)  # the pause's decode was asked for


@dataclass(slots=True)
class Utterance:
    index: int
    start: int  # first sample (session index)
    record: UtteranceRecord
    phase: Phase = Phase.SPEAKING
    samples: int = 0  # sent + held
    voiced_frames: int = 0
    peak_db: float = -120.0  # the loudest voiced frame so far
    quiet_frames: int = 0  # consecutive frames, up to now, far below ``peak_db``
    # (frame end sample, dB, voiced) of every frame, to find the quietest cut point
    frames: list[tuple[int, float, bool]] = field(default_factory=list)


class ServiceSegmenter:
    """The service finds the utterances (see the module docstring)."""

    waits_for_final = True
    needs_voice = True

    def __init__(
        self,
        config: SessionConfig,
        records: Records,
        speech_ended: SpeechEnded,
        intake: Intake,
    ) -> None:
        self._config = config
        self._intake = intake  # the audio clock: when the end of speech arrived
        self._records = records
        self._speech_ended = speech_ended
        self.turns = TurnDecision(config) if config.turn_model else None
        # with the end-of-turn model, it ends utterances; the endpointer only starts them
        self._endpointer = Endpointer(
            frame_ms=config.frame_ms,
            hangover_ms=config.hangover_s * 1000 if self.turns is None else 3_600_000.0,  # never
            pause_ms=config.eager_s * 1000 if self.turns is None else 0,
            enabled=config.vad_enabled,
        )
        self.turnmap = TurnMap(records)
        self._preroll: deque[tuple[int, Int16Array]] = deque(
            maxlen=config.frames(config.preroll_ms)
        )
        self._held: list[tuple[int, Int16Array]] = []  # trailing unvoiced frames not yet sent
        self._utt: Utterance | None = None
        self.next_utterance = 0
        self.finished = -1
        self.announced = Announcements()

    @property
    def in_utterance(self) -> bool:
        return self._utt is not None

    @property
    def idle(self) -> bool:
        return self._utt is None

    # --- frames ---------------------------------------------------------------------------------
    def frame(
        self, frame: Int16Array, info: FrameInfo, offset: int, now: float, out: list[Action]
    ) -> None:
        utt = self._utt
        voiced = info.voiced
        if utt is not None and voiced and info.energy_db < utt.peak_db - VOICE_BELOW_PEAK_DB:
            voiced = False  # far below this utterance's voice: a hum or a breath, not the speaker
        event = self._endpointer.step(voiced, info.probability >= SURE)
        if utt is None:
            if event is not EndpointEvent.START:
                self._preroll.append((offset, frame))
                return
            utt = self._begin(offset, out)
        turns = self.turns
        if voiced and utt.phase in DECODED and turns is not None and turns.past_timeout:
            # the speaker goes on after a pause silence alone would have ended the utterance at:
            # the recognizer hears the same utterances as without the model, the client one turn
            utt = self._go_on(utt, offset, now, out)
        utt.samples += frame.size
        utt.frames.append((offset + frame.size, info.energy_db, voiced))
        step, resumed = turns.frame(frame, voiced) if turns is not None else (None, False)
        if resumed:  # an eager end was announced: the client drops the reply it began
            self.announced.resumed(utt.index, utt.record.speech or [utt.start] * 2)
        elif turns is not None and turns.announce():
            self._decided(utt, False, True, now)
        if voiced:
            utt.voiced_frames += 1
            utt.peak_db = max(utt.peak_db, info.energy_db)
            rec = utt.record
            rec.voice = True
            if rec.speech is None:
                rec.speech = [offset, offset + frame.size]
            else:
                rec.speech[1] = offset + frame.size
        if info.energy_db < utt.peak_db - QUIET_BELOW_PEAK_DB:
            utt.quiet_frames += 1
        else:
            utt.quiet_frames = 0
        if voiced or not self._config.vad_enabled:
            utt.phase = Phase.SPEAKING
            self._send_held(utt, out)
            out.append(SendAudio(frame, offset, utt.index))
        else:
            self._held.append((offset, frame))
            if utt.phase is Phase.SPEAKING:
                utt.phase = Phase.PAUSING

        if event is EndpointEvent.PAUSE or step is TurnStep.ASK:
            # what the final would hold if the utterance ended here: its audio and trailing silence
            if turns is None or turns.first_question:  # a later question has its words
                self._send_held(utt, out)
                utt.phase = Phase.DECODED if utt.phase not in DECODED else utt.phase
                out.append(Speculate(utt.index))
            if step is TurnStep.ASK and turns is not None:
                out.append(turns.ask(utt.index))
        elif (
            event is EndpointEvent.END
            or step is TurnStep.END
            or (utt.phase is Phase.FINISHED and self._quiet_since_pause(utt))
        ):
            out += self.end(now)
        elif utt.samples >= self._config.max_utterance_samples:
            self._cut(utt, offset + frame.size, out)

    def _begin(self, offset: int, out: list[Action], new_turn: bool = True) -> Utterance:
        start = self._preroll[0][0] if self._preroll else offset
        index = self.next_utterance
        utt = Utterance(index=index, start=start, record=self._records.open(index))
        self.next_utterance += 1
        self._utt = utt
        for off, frame in self._preroll:
            out.append(SendAudio(frame, off, index))
            utt.samples += frame.size
            utt.frames.append((off + frame.size, -120.0, False))
        if new_turn and self.turns is not None:
            self.turns.begin(frame for _, frame in self._preroll)
        self._preroll.clear()
        return utt

    def _go_on(self, utt: Utterance, offset: int, now: float, out: list[Action]) -> Utterance:
        """End ``utt`` where its pause began (its decode at the pause is its final) and begin the
        next utterance of the same turn here, with the end of the pause as its pre-roll."""
        # an interrupt's take-back time counts from the end of this stretch, as from a turn's
        self._speech_ended(now, utt.index, utt.voiced_frames * self._config.frame_ms / 1000)
        out.append(EndUtterance(utt.index))
        self._preroll.clear()
        self._preroll.extend(self._held[-self._config.frames(self._config.preroll_ms) :])
        self._held.clear()
        nxt = self._begin(offset, out, new_turn=False)  # the model hears the whole turn
        nxt.peak_db = utt.peak_db
        self.turnmap.go_on(utt.index, nxt.index)
        return nxt

    def _send_held(self, utt: Utterance, out: list[Action]) -> None:
        for off, held in self._held:
            out.append(SendAudio(held, off, utt.index))
        self._held.clear()

    def _quiet_since_pause(self, utt: Utterance) -> bool:
        """The last ``QUIET_MS`` of frames were all far below the utterance's voice: silence,
        not an unvoiced sound that the VAD's voicing test does not count as speech."""
        return utt.quiet_frames >= self._config.frames(QUIET_MS)

    def _cut(self, utt: Utterance, heard: int, out: list[Action]) -> None:
        """The utterance reached STT_BUFFER_SIZE_BYTES: end it at the quietest frame of its last
        third, so no word is cut, and carry the rest into a new utterance."""
        self._send_held(utt, out)
        tail = utt.frames[len(utt.frames) * 2 // 3 :] or utt.frames
        cut = min(tail, key=lambda f: f[1])[0]
        head = [f for f in utt.frames if f[0] <= cut]
        rest = [f for f in utt.frames if f[0] > cut]
        utt.record.voice = any(f[2] for f in head)
        out.append(EndUtterance(utt.index, until=cut))
        index = self.next_utterance
        voiced = sum(f[2] for f in rest)
        self._utt = Utterance(
            index=index,
            start=cut,
            record=self._records.open(index, voice=voiced > 0),
            samples=heard - cut,
            frames=rest,
            voiced_frames=voiced,
        )
        self.next_utterance += 1  # the same turn goes on: the model's window too

    # --- ends -----------------------------------------------------------------------------------
    def end(self, now: float) -> list[Action]:
        """Speech ended (hangover, finalize, clock timeout, end): send the final's audio, flush."""
        utt = self._utt
        if utt is None:
            return []
        c = self._config
        # an interrupt's take-back time counts from here
        self._speech_ended(now, utt.index, utt.voiced_frames * c.frame_ms / 1000)
        # after a pause was decoded, its trailing silence is already sent: adding more would only
        # make that decode unusable as the final
        keep = 0 if utt.phase in DECODED else max(0, c.trailing_ms // c.frame_ms)
        actions: list[Action] = [
            SendAudio(frame, off, utt.index) for off, frame in self._held[:keep]
        ]
        self._preroll.extend(self._held[keep:])
        self._held.clear()
        actions.append(EndUtterance(utt.index))
        self._utt = None
        self._endpointer.reset()
        if self.turns is not None:
            wait, probability = self.turns.ended(utt.index)
            actions.append(wait)
            if speech := utt.record.speech:  # the end of speech -> the decision
                actions += self._intake.measure("turn_decision", speech[1], now, utt.index)
            if probability is not None:
                utt.record.eot = probability
        return actions

    def finalize(self, now: float, intake: Intake) -> list[Action]:
        return self.end(now)

    def hint(self, hint: EndpointHint, now: float) -> list[Action]:
        utt = self._utt
        if self.turns is not None:  # the model decides, on the words too
            if utt is None or utt.index != hint.utterance or utt.phase not in DECODED:
                return []
            return self._decided(utt, *self.turns.heard(hint.text), now)
        if (
            utt is not None  # the eager endpoint decides where the model is off
            and hint.text is not None
            and utt.index == hint.utterance
            and utt.phase in DECODED
            and self._endpointer.paused
            and reads_finished(hint.text)
        ):
            # a finished sentence and still no voice: end now if the pause is quiet, or as
            # soon as it is (a fricative such as the "sh" of "selfish" is no pause)
            utt.phase = Phase.FINISHED
            if self._quiet_since_pause(utt):
                return self.end(now)
        return []

    def verdict(
        self, utterance: int, seq: int, probability: float | None, now: float
    ) -> list[Action]:
        """The end-of-turn model's answer: end the turn, or wait."""
        utt = self._utt
        if self.turns is None or utt is None or utt.index != utterance:
            return []
        return self._decided(utt, *self.turns.verdict(seq, probability), now)

    def _decided(self, utt: Utterance, end: bool, eager: bool, now: float) -> list[Action]:
        judge = self.turns.judge if self.turns is not None else None
        if eager and judge is not None and judge.eager is not None:
            self.announced.eager(
                utt.index, judge.text, utt.record.speech or [utt.start] * 2, judge.eager
            )
        return self.end(now) if end else (self.turns.retaken(utt.index) if self.turns else [])

    def tune(self, params: StreamParams) -> None:
        if self.turns is not None:
            self.turns.tune(params)

    def barge_utterance(self) -> int | None:
        return self._utt.index if self._utt is not None else self.next_utterance

    # --- results --------------------------------------------------------------------------------
    def stale(self, ev: RecognitionEvent) -> bool:
        return ev.utterance <= self.finished

    def failed(self, utterance: int) -> RecognitionEvent | None:
        turn = self.turnmap.stretch_of(utterance)
        if turn is None:  # the utterance's final failed and will not come: it is done with
            self.finished = max(self.finished, utterance)
            self._records.pop(utterance)
            return None
        # one stretch of a longer turn: the rest of the turn still goes out, without it (an
        # empty stretch, not an empty final: it must not take an interrupt back)
        rec = self._records.at(utterance)
        first, last = rec.speech or [0, 0]
        rec.speech = None
        lost = RecognitionEvent(utterance, "", True, first / TARGET_RATE, last / TARGET_RATE)
        joined = self.turnmap.join(lost, turn)
        if joined is None:
            self.finished = max(self.finished, utterance)
        return joined

    def join(self, ev: RecognitionEvent) -> tuple[RecognitionEvent | None, int]:
        if self.turns is not None and self.turns.eager_on:
            ev = Announcements.final(ev)  # end_of_turn, as Flux names it beside its eager events
        turn = self.turnmap.stretch_of(ev.utterance)
        if turn is None:
            return ev, ev.utterance
        joined = self.turnmap.join(ev, turn)
        if joined is None:  # a stretch of a turn that goes on: its final waits for the rest
            self.finished = max(self.finished, ev.utterance)
            rec = self._records.get(ev.utterance)
            if rec is not None:
                rec.speech = None
        return joined, turn

    def result(self, ev: RecognitionEvent) -> None:
        if ev.is_final:
            self.finished = ev.utterance

    def about(self, ev: RecognitionEvent) -> tuple[bool, float | None, list[int] | None]:
        rec = self._records.get(ev.utterance)
        if rec is None:
            return True, None, None
        return rec.voice, rec.eot if ev.is_final else None, rec.speech

    def speech_onset(self, ev: RecognitionEvent) -> float:
        rec = self._records.get(ev.utterance)
        span = rec.speech if rec is not None else None
        return span[0] / TARGET_RATE if span else ev.audio_start

    def utterance_of(self, ev: RecognitionEvent) -> int | None:
        return ev.utterance

    def turn_of(self, utterance: int) -> int:
        return self.turnmap.turn_of(utterance)

    def finished_before(self, utterance: int) -> bool:
        return self.finished >= utterance - 1
