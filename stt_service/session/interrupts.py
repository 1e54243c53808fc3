"""Barge-in, as one part of the session: the user speaks while the assistant is responding.

:class:`Interrupts` puts together the two rules and what the session publishes of them:

1. the voice detector's frames while ``responding`` (:class:`~.interrupt.InterruptDetector`:
   enough voice, one frame of it sure) or the backend's own signal (Flux's ``StartOfTurn``) say
   that someone spoke;
2. the stages (:class:`~.bargein.BargeIn`) decide, from what the recognizer then hears, whether
   the interrupt goes out now, waits for words, stands or is taken back;
3. this part publishes ``interrupt`` / ``interrupt_cancelled``, counts them, keeps a replayed
   interrupt from going out twice after a failover, and *asks* for the state that follows
   (``listening`` after an interrupt, ``responding`` again after a take-back): the session sets
   it. Every method that can decide returns a :data:`Step` (None: nothing happened).
"""

from __future__ import annotations

import logging

from ..audio import TARGET_RATE
from ..backends.base import RecognitionEvent
from ..protocol import State, interrupt_cancelled_message, interrupt_message
from ..speech.vad import FrameInfo
from .actions import Action, Publish
from .bargein import Backchannels, BargeIn, Cancel, Decision
from .config import SessionConfig
from .identity import Identity
from .intake import Intake
from .interrupt import SURE, InterruptDetector

log = logging.getLogger(__name__)

# A session's first half second never interrupts: with no audio before it, Silero calls the
# abrupt start of loud hum or music speech for up to 0.45 s (utterances still start there, so
# speech at the very start is transcribed whole).
INTERRUPT_WARMUP = TARGET_RATE // 2

# what to publish, and the state the session should be in after it
Step = tuple[list[Action], State]


class Interrupts:
    """One session's barge-in (see the module docstring)."""

    def __init__(self, config: SessionConfig, who: Identity, intake: Intake) -> None:
        self.enabled = config.interrupt_enabled
        self._min_words = config.interrupt_min_words
        self._frame_samples = config.frame_samples
        self._who = who
        self._intake = intake  # when the speech arrived: the interrupt's latency
        self.detector = InterruptDetector(
            frame_ms=config.frame_ms, min_speech_ms=config.interrupt_min_speech_ms
        )
        self.stages = BargeIn(
            min_words=config.interrupt_min_words,
            false_timeout=config.false_interrupt_timeout,
            backchannels=Backchannels(config.backchannels),
        )
        self.published = 0
        self.cancelled = 0
        # failover: where the last interrupt began (sample); after a restore, replayed speech
        # beginning at or before ``floor`` publishes no interrupt (a previous owner did)
        self.at = -1
        self.floor = -1

    # --- what the session asks ------------------------------------------------------------------
    def possible(self, state: State, offset: int) -> bool:
        """Whether the frame at ``offset`` can start an interrupt."""
        return (
            state == "responding"
            and self.enabled
            and not self.stages.holding
            and offset >= INTERRUPT_WARMUP
        )

    def wanted(self, state: State) -> bool:
        """Whether the voice detector must hear the audio for barge-in (where only barge-in
        needs it: the backend finds turns)."""
        return self.stages.pending or (state == "responding" and self.enabled)

    # --- what it hears --------------------------------------------------------------------------
    def frame(self, info: FrameInfo, now: float, utterance: int | None) -> Step | None:
        """One frame heard while an interrupt is :meth:`possible`; ``utterance``: the one it
        belongs to, where the service finds them."""
        if not self.detector.step(info.voiced, info.probability >= SURE):
            return None
        ago = self.detector.onset_frames_ago()
        onset = self._intake.heard - ago * self._frame_samples
        self.detector.reset()
        return self._decided(self.stages.voice(onset / TARGET_RATE, now, utterance), now)

    def started_speaking(self, ev: RecognitionEvent, state: State, now: float) -> Step | None:
        """The backend's own barge-in signal (Flux ``StartOfTurn``)."""
        if (
            ev.started_speaking
            and state == "responding"
            and self.enabled
            and not self.stages.pending
        ):
            return self._decided(self.stages.voice(ev.audio_start, now, None), now)
        return None

    def heard(
        self,
        ev: RecognitionEvent,
        state: State,
        now: float,
        *,
        utterance: int | None,
        onset_s: float,
    ) -> Step | None:
        """A transcript about to be published (``utterance``: its utterance where the service
        finds them; ``onset_s``: where its speech began)."""
        if (
            self._min_words > 0
            and state == "responding"
            and self.enabled
            and not self.stages.pending
            and ev.text.strip()
        ):
            # words before the voice detector decided (the first partial can decode the pre-roll
            # and a word or two): they are what this mode waits for, so they count
            self.stages.voice(onset_s, now, utterance)
        if not self.stages.pending:
            return None
        decision = self.stages.heard(
            ev.text, final=ev.is_final, audio_end=ev.audio_end, utterance=utterance, now=now
        )
        return self._decided(decision, now)

    def ended(self, now: float, utterance: int | None, voiced_s: float) -> None:
        """The speech of ``utterance`` ended now: a take-back's time counts from here."""
        self.stages.ended(now, utterance, voiced_s)

    def tick(self, now: float, *, speaking: bool, waits_for_final: bool) -> Step | None:
        if not self.stages.pending:
            return None
        return self._decided(
            self.stages.tick(now, speaking=speaking, waits_for_final=waits_for_final), now
        )

    def client_decides(self) -> None:
        """The client changed the state itself: whatever was pending is its business now."""
        self.stages.reset()

    def state_changed(self) -> None:
        """The session's state changed: the voice counted so far counts no more."""
        self.detector.reset()

    # --- what it decides ------------------------------------------------------------------------
    def _decided(self, decision: Decision | None, now: float) -> Step | None:
        if decision is None:
            return None
        who = self._who
        if isinstance(decision, Cancel):
            self.cancelled += 1
            log.info("session %s: interrupt taken back (%s)", who.session_id, decision.reason)
            message = interrupt_cancelled_message(
                session_id=who.session_id,
                timestamp=now,
                speaker_id=who.speaker_id,
                reason=decision.reason,
            )
            return [Publish(message)], "responding"
        onset = round(decision.onset * TARGET_RATE)
        actions = self._intake.measure("interrupt", onset, now)
        if onset <= self.floor:  # replayed after a failover: already published
            return actions, "listening"
        self.at = onset
        self.published += 1
        echo = self._intake.echo
        over_echo = echo is not None and echo.audible(onset)
        if over_echo:
            log.info(
                "session %s: interrupt over the agent's playback (echo cancelled)", who.session_id
            )
        message = interrupt_message(
            session_id=who.session_id,
            timestamp=now,
            speaker_id=who.speaker_id,
            echo_cancelled=over_echo,
        )
        actions.append(Publish(message))
        return actions, "listening"

    # --- failover -------------------------------------------------------------------------------
    @property
    def last_onset(self) -> int:
        """Where the last interrupt published (here or by a previous owner) began."""
        return max(self.at, self.floor)

    def resume(self, interrupt_at: int, interrupts: int) -> None:
        """A restored session: interrupts beginning by ``interrupt_at`` were published."""
        self.floor = self.at = interrupt_at
        self.published = interrupts
