"""Where a turn ends when an end-of-turn model hears each pause, sans-I/O.

Silence alone is the wrong signal both ways: a speaker who stops to think ("a table for...
[0.9 s] ...four people") is cut in two, and one who is clearly done still waits out the hangover.
So at a short pause (``pause_ms`` without voice) the turn so far is put to the model
(:mod:`stt_service.smartturn`, run by the worker off its event loop) and:

- a turn it calls complete (probability >= ``threshold``) ends at once;
- an incomplete one waits for more speech, and ends anyway after ``max_pause_ms`` of silence;
- while no verdict has come (the model is slow or failed), silence ends the turn after
  ``timeout_ms`` (``STT_CHUNK_TIMEOUT``) as it does without a model; a verdict still awaited then
  is waited for, so a client streaming faster than real time gets the same turns.

Speech that resumes forgets the verdict; the next pause asks again. Counting is in frames of the
voice detector, i.e. in the audio's own time.
"""

from __future__ import annotations

from enum import Enum


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
