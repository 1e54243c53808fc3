"""Where a turn ends when an end-of-turn model hears each pause, sans-I/O.

Silence alone is the wrong signal both ways: a speaker who stops to think ("a table for...
[0.9 s] ...four people") is cut in two, and one who is clearly done still waits out the hangover.
So at a short pause (``pause_ms`` without voice) the turn so far is put to the model
(:mod:`stt_service.speech.smartturn`, run by the worker off its event loop) and:

- a turn it calls complete (probability >= ``threshold``) ends at once;
- an incomplete one waits for more speech, and ends anyway after ``max_pause_ms`` of silence;
- while no verdict has come (the model is slow or failed), silence ends the turn after
  ``timeout_ms`` (``STT_CHUNK_TIMEOUT``) as it does without a model; a verdict still awaited then
  is waited for, so a client streaming faster than real time gets the same turns.

Speech that resumes forgets the verdict; the next pause asks again. Counting is in frames of the
voice detector, i.e. in the audio's own time.

:class:`TurnJudge` is the rule; :class:`TurnDecision` is the session's part that runs it: the
turn's last 8 s of audio for the model, the :class:`~.actions.PredictTurn` it asks, the verdict
recorded where the turn ended, and a session's own ``eot_threshold`` / ``eot_timeout_ms``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from enum import Enum

import numpy as np

from ..audio import Int16Array
from ..backends.base import StreamParams
from ..speech.smartturn import WINDOW
from .actions import Measure, PredictTurn
from .config import SessionConfig


class TurnStep(Enum):
    ASK = "ask"  # put the turn so far to the model (and decode it: the final may be due soon)
    END = "end"  # the turn is over


class TurnJudge:
    """Counts one utterance's silence and holds the model's verdict on its current pause."""

    def __init__(
        self,
        *,
        frame_ms: int,
        pause_ms: float,
        threshold: float,
        timeout_ms: float,
        max_pause_ms: float,
    ) -> None:
        self.threshold = threshold
        # a pause shorter than the timeout, and a longest pause no shorter: a configuration made
        # for silence alone (a long STT_CHUNK_TIMEOUT, a very short one) keeps its meaning
        self.timeout_frames = max(2, round(timeout_ms / frame_ms))
        self.pause_frames = min(max(1, round(pause_ms / frame_ms)), self.timeout_frames - 1)
        self.max_frames = max(self.timeout_frames, round(max_pause_ms / frame_ms))
        self.seq = 0  # which pause a verdict answers (a stale one is ignored)
        self.asked = False  # the current pause's verdict is awaited
        self.probability: float | None = None  # the current pause's verdict
        self.silent = 0

    def tune(self, *, frame_ms: int, threshold: float, max_pause_ms: float) -> None:
        """A session's own threshold and longest pause (``eot_threshold``, ``eot_timeout_ms``)."""
        self.threshold = threshold
        self.max_frames = max(self.timeout_frames, round(max_pause_ms / frame_ms))

    def voiced(self) -> None:
        """Speech goes on: the last pause was not the end, whatever the model said of it."""
        self.silent = 0
        self.asked = False
        self.probability = None

    def unvoiced(self) -> TurnStep | None:
        self.silent += 1
        if self.silent == self.pause_frames:
            self.seq += 1
            self.asked = True
            return TurnStep.ASK
        if self.silent >= self.max_frames:
            return TurnStep.END
        if self.silent >= self.timeout_frames and not self.asked and self.probability is None:
            return TurnStep.END  # no verdict (the model failed): silence decides, as without one
        return None

    def verdict(self, seq: int, probability: float | None) -> bool:
        """The model's answer for pause ``seq`` (None: it failed). True: end the turn now."""
        if seq != self.seq or not self.asked:
            return False  # speech resumed since, or already answered
        self.asked = False
        self.probability = probability
        if probability is None:
            return self.silent >= self.timeout_frames
        return probability >= self.threshold or self.silent >= self.max_frames

    def reset(self) -> None:
        self.voiced()


class TurnDecision:
    """The end-of-turn model's part of one session (only where the service ends turns and the
    model is on): what the segmenter asks at each frame of an utterance."""

    def __init__(self, config: SessionConfig) -> None:
        self._config = config
        self.judge = TurnJudge(
            frame_ms=config.frame_ms,
            pause_ms=config.turn_pause_s * 1000,
            threshold=config.turn_threshold,
            timeout_ms=config.hangover_s * 1000,
            max_pause_ms=config.turn_max_pause_s * 1000,
        )
        # the turn's last 8 s (the model's window), in frames
        self._window: deque[Int16Array] = deque(maxlen=WINDOW // config.frame_samples + 1)

    def begin(self, frames: Iterable[Int16Array]) -> None:
        """A new turn begins with ``frames`` (its pre-roll)."""
        self._window.clear()
        self._window.extend(frames)

    def frame(self, frame: Int16Array, voiced: bool) -> TurnStep | None:
        """The next frame of the turn."""
        self._window.append(frame)
        if voiced:
            self.judge.voiced()
            return None
        return self.judge.unvoiced()

    @property
    def past_timeout(self) -> bool:
        """The pause so far is one silence alone would have ended the utterance at."""
        return self.judge.silent >= self.judge.timeout_frames

    def ask(self, utterance: int) -> PredictTurn:
        """The question for the model at this pause: the turn's last 8 s of audio."""
        audio = np.concatenate(self._window)[-WINDOW:]
        return PredictTurn(utterance, self.judge.seq, audio)

    def verdict(self, seq: int, probability: float | None) -> bool:
        """The model's answer for pause ``seq``: True when the turn ends now."""
        return self.judge.verdict(seq, probability)

    def ended(self, utterance: int) -> tuple[Measure, float | None]:
        """The turn ended: the pause it waited out, and the model's verdict on it (None: none)."""
        wait = Measure("turn_wait", self.judge.silent * self._config.frame_ms / 1000, utterance)
        probability = self.judge.probability
        self.judge.reset()
        return wait, probability

    def tune(self, params: StreamParams) -> None:
        """Flux's per-session ``eot_threshold`` and ``eot_timeout_ms`` tune the model the same
        way: the probability that ends a turn, and the longest pause it waits out."""
        c = self._config
        self.judge.tune(
            frame_ms=c.frame_ms,
            threshold=c.turn_threshold if params.eot_threshold is None else params.eot_threshold,
            max_pause_ms=(
                c.turn_max_pause_s * 1000
                if params.eot_timeout_ms is None
                else params.eot_timeout_ms
            ),
        )
