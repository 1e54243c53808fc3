"""Where a turn ends when an end-of-turn model hears each pause, sans-I/O.

Silence alone is the wrong signal both ways: a speaker who stops to think ("a table for...
[0.9 s] ...four people") is cut in two, and one who is clearly done still waits out the hangover.
So each pause is judged on three signals, re-taken as it grows (:class:`TurnJudge`):

- **the acoustic model** (:mod:`stt_service.speech.smartturn`, run by the worker off its event
  loop) hears the turn so far at ``pause_ms`` (``STT_TURN_PAUSE_MS``, 96 ms by default) and again at
  ``RETAKE_MS`` (320 and 640 ms) of the same pause;
- **the words so far**: the pause's decode (the speculative decode that starts at the first
  question, and becomes the final if the turn ends) must read as a finished sentence: it ends in
  ``.``, ``?`` or ``!`` (not ``...``) or in a number ("...is 555 0123"), and, in English, not in
  a word that cannot end one ("the", "a", "and", "to", "for", "my", "followed by":
  :data:`OPEN_WORDS`). Other languages get the punctuation test alone;
- **the pause's length**: at the first question the model's probability must reach ``threshold``
  (``STT_TURN_THRESHOLD`` or the session's ``eot_threshold``); the model calls any long silence
  "complete", so a later question must reach ``RETAKE_THRESHOLD`` (0.95, or the threshold if
  higher); at ``max_pause_ms`` (``STT_TURN_MAX_PAUSE``, the session's ``eot_timeout_ms``) the
  turn ends whatever was said.

The first question comes early on purpose: measured on recorded speech (bench/turns.py, docs/
speech.md), Smart Turn tells a finished sentence from a paused one best in the first 100-150 ms of
silence (82-86% of finished turns >= 0.5 against 21-25% of paused ones), and by 500 ms it calls
most paused sentences complete too; sooner than 96 ms, the short gaps inside a sentence ("...more
respectable [70 ms] than he was") are asked, and some cut. A verdict waits for the decode's words
(the final needs that decode anyway, so this costs no time); a decode that failed leaves the
model to decide alone; while either is missing (the model is slow or failed, the backend sent
nothing), silence ends the turn after ``timeout_ms`` (``STT_CHUNK_TIMEOUT``) as it does without
a model. A verdict that comes after the pause passed the last question gets it asked at once.
With an eager threshold (``eager_eot_threshold``, ``STT_EAGER_EOT_THRESHOLD``) the first verdict
at or above it, with finished words, is announced (:attr:`TurnJudge.eager`) so the client can
start its reply; speech that resumes after it is a ``turn_resumed``.

Speech that resumes forgets the pause. Counting is in frames of the voice detector, i.e. in the
audio's own time.

:class:`TurnDecision` is the session's part that runs the rule: the turn's last 8 s of audio for
the model, the :class:`~.actions.PredictTurn` it asks, the verdict recorded where the turn ended,
and a session's own ``eot_threshold`` / ``eot_timeout_ms`` / ``eager_eot_threshold``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from enum import Enum

import numpy as np

from ..audio import Int16Array
from ..backends.base import StreamParams
from ..speech.smartturn import WINDOW
from .actions import Action, Measure, PredictTurn
from .config import SessionConfig
from .endpoint import reads_finished

RETAKE_MS = (320.0, 640.0)  # the model is asked again at these pause lengths
# no turn ends (or is announced) before this much pause: the gaps inside a sentence ("...more
# respectable [120 ms] than he was") are shorter. The first question comes sooner so that its
# decode, which the final waits for, is done by then.
MIN_END_MS = 192.0
RETAKE_THRESHOLD = 0.95  # what a later question must reach (long silence sounds "complete")
# English words a finished sentence does not end in: articles, prepositions, conjunctions,
# possessives, fillers ("...followed by the", "a table for", "send it to my", "uh")
_OPEN = (
    "a an the and or but nor because if than of to for from with by in on at into onto via per "
    "my your our their his her its whose um uh er erm"
)
OPEN_WORDS = frozenset(_OPEN.split())
_WORD = re.compile(r"[a-z']+")
_NUMBER_END = re.compile(r"\d\s*$")


def sounds_finished(text: str, language: str | None = None) -> bool:
    """Whether the words so far end like a finished turn (see the module docstring)."""
    if not reads_finished(text):
        # Whisper writes a number said last as digits, often without a stop ("...is 555 0123"):
        # the model alone judges it
        return bool(_NUMBER_END.search(text))
    if language is not None and not language.lower().startswith("en"):
        return True
    words = _WORD.findall(text.lower())
    return bool(words) and words[-1] not in OPEN_WORDS


class TurnStep(Enum):
    ASK = "ask"  # put the turn so far to the model (the first question also decodes the pause)
    END = "end"  # the turn is over


class TurnJudge:
    """Counts one utterance's silence and weighs the current pause's verdicts and words."""

    def __init__(
        self,
        *,
        frame_ms: int,
        pause_ms: float,
        threshold: float,
        timeout_ms: float,
        max_pause_ms: float,
        eager: float | None = None,
        language: str | None = None,
    ) -> None:
        self.threshold = threshold
        self.eager_threshold = eager
        self.language = language
        # a pause shorter than the timeout, and a longest pause no shorter: a configuration made
        # for silence alone (a long STT_CHUNK_TIMEOUT, a very short one) keeps its meaning
        self.timeout_frames = max(2, round(timeout_ms / frame_ms))
        self.pause_frames = min(max(1, round(pause_ms / frame_ms)), self.timeout_frames - 1)
        later = {round(ms / frame_ms) for ms in RETAKE_MS}
        self.ask_frames = (self.pause_frames, *sorted(f for f in later if f > self.pause_frames))
        self.max_frames = max(self.timeout_frames, round(max_pause_ms / frame_ms))
        self.min_end_frames = min(
            max(self.pause_frames, round(MIN_END_MS / frame_ms)), self.timeout_frames
        )
        self.due = False  # a decision taken before MIN_END_MS, to take again when it is reached
        self.eager_now = False  # an eager end decided on a frame, for the segmenter to announce
        self.seq = 0  # which question a verdict answers (a stale one is ignored)
        self.asked = False  # the latest question's verdict is awaited
        self.level = 0  # which question of this pause the latest was (0: the first)
        self.answered = 0  # which question the verdict held answered
        self.probability: float | None = None  # the pause's latest verdict
        self.words: bool | None = None  # the pause's words sound finished (None: none yet)
        self.wordless = False  # the pause's decode failed or had no words: the model decides
        self.text = ""  # the pause's words
        self.eager: float | None = None  # the verdict announced as an eager end this pause
        self.reached = False  # a verdict of this pause reached its bar
        self.silent = 0

    def tune(
        self,
        *,
        frame_ms: int,
        threshold: float,
        max_pause_ms: float,
        eager: float | None,
        language: str | None,
    ) -> None:
        """A session's own ``eot_threshold``, ``eot_timeout_ms``, ``eager_eot_threshold``."""
        self.threshold = threshold
        self.max_frames = max(self.timeout_frames, round(max_pause_ms / frame_ms))
        self.eager_threshold = eager
        self.language = language

    @property
    def bar(self) -> float:
        """What the verdict held must reach (the bar of the question it answered). Words that
        end in a number raise it to a later question's: numbers are said in groups ("five five
        five [pause] zero one two three"), and digits one by one, with pauses between."""
        if self.answered == 0 and not _NUMBER_END.search(self.text):
            return self.threshold
        return max(self.threshold, RETAKE_THRESHOLD)

    def voiced(self) -> bool:
        """Speech goes on: the pause was not the end. True if it had been announced as one."""
        resumed = self.eager is not None
        self.silent = 0
        self.asked = False
        self.level = self.answered = 0
        self.probability = None
        self.words = None
        self.wordless = False
        self.text = ""
        self.eager = None
        self.reached = self.due = self.eager_now = False
        return resumed

    def unvoiced(self) -> TurnStep | None:
        self.silent += 1
        if self.due and self.silent >= self.min_end_frames:
            end, self.eager_now = self._decide()
            if end:
                return TurnStep.END
        # a later question only once the one before was answered "not yet" and the words may
        # still end the turn: a model that is behind is not asked more, a "complete" waits for
        # the words, and open words ("...a table for") wait for more speech or the longest pause
        if self.silent in self.ask_frames and (
            self.silent == self.pause_frames
            or not (self.asked or self.reached or self.words is False)
        ):
            self.seq += 1
            self.asked = True
            self.level = self.ask_frames.index(self.silent)
            return TurnStep.ASK
        if self.silent >= self.max_frames:
            return TurnStep.END
        if self.silent >= self.timeout_frames and not self.asked:
            p = self.probability
            if p is None:
                return TurnStep.END  # no verdict (the model failed): silence decides
            if self.reached and self.words is None:
                return TurnStep.END  # complete, and the words did not come: as without them
        return None

    def verdict(self, seq: int, probability: float | None) -> tuple[bool, bool]:
        """The model's answer for question ``seq`` (None: it failed): (end the turn now,
        announce an eager end now)."""
        if seq != self.seq or not self.asked:
            return False, False  # speech resumed since, or a later question was asked
        self.asked = False
        if probability is None:
            return self.silent >= self.timeout_frames, False
        self.probability = probability
        self.answered = self.level
        return self._decide()

    def retake(self) -> bool:
        """Ask the last question now if the pause passed it while the one before was being
        answered (a client faster than real time; a model far behind): as :meth:`unvoiced`
        would have. A later question still ahead is waited for (no extra load on a busy model)."""
        last = len(self.ask_frames) - 1
        if self.level == last or self.silent < self.ask_frames[last]:
            return False
        if self.asked or self.reached or self.words is False:
            return False
        self.seq += 1
        self.asked = True
        self.level = last
        return True

    def heard(self, text: str | None) -> tuple[bool, bool]:
        """The pause's decode: what the turn says so far (None: no words will come, the model
        decides alone). As :meth:`verdict`."""
        self.text = (text or "").strip()
        self.words = None if text is None else sounds_finished(self.text, self.language)
        self.wordless = text is None
        return self._decide() if self.probability is not None else (False, False)

    def _decide(self) -> tuple[bool, bool]:
        p = self.probability
        if p is None:
            return False, False
        if self.silent < self.min_end_frames:
            self.due = True  # too short a pause to end on yet: decide again when it is not
            return False, False
        self.due = False
        eager = (
            self.eager_threshold is not None
            and self.eager is None
            and self.words is True
            and p >= self.eager_threshold
        )
        if eager:
            self.eager = p
        if self.silent >= self.max_frames:
            return True, eager
        if p < self.bar:
            return False, eager
        self.reached = True
        if self.words is None:  # wait for the words, or the timeout
            return self.wordless or self.silent >= self.timeout_frames, eager
        return self.words, eager

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
            eager=config.eager_eot_threshold,
        )
        # the turn's last 8 s (the model's window), in frames
        self._window: deque[Int16Array] = deque(maxlen=WINDOW // config.frame_samples + 1)

    @property
    def eager_on(self) -> bool:
        """Eager ends of turn are announced (the finals then say ``end_of_turn``)."""
        return self.judge.eager_threshold is not None

    def begin(self, frames: Iterable[Int16Array]) -> None:
        """A new turn begins with ``frames`` (its pre-roll)."""
        self._window.clear()
        self._window.extend(frames)

    def frame(self, frame: Int16Array, voiced: bool) -> tuple[TurnStep | None, bool]:
        """The next frame of the turn: what to do, and whether it resumed an announced end."""
        self._window.append(frame)
        if voiced:
            return None, self.judge.voiced()
        return self.judge.unvoiced(), False

    @property
    def past_timeout(self) -> bool:
        """The pause so far is one silence alone would have ended the utterance at."""
        return self.judge.silent >= self.judge.timeout_frames

    @property
    def first_question(self) -> bool:
        """The question just asked is the pause's first (its decode starts with it)."""
        return self.judge.level == 0

    def ask(self, utterance: int) -> PredictTurn:
        """The question for the model at this pause: the turn's last 8 s of audio."""
        audio = np.concatenate(self._window)[-WINDOW:]
        return PredictTurn(utterance, self.judge.seq, audio)

    def retaken(self, utterance: int) -> list[Action]:
        """The question to ask now that a verdict or the words left the turn open, if the pause
        already passed the last one (:meth:`TurnJudge.retake`)."""
        return [self.ask(utterance)] if self.judge.retake() else []

    def announce(self) -> bool:
        """An eager end was decided on the last frame (the pause reached ``MIN_END_MS``)."""
        now, self.judge.eager_now = self.judge.eager_now, False
        return now

    def verdict(self, seq: int, probability: float | None) -> tuple[bool, bool]:
        """The model's answer for question ``seq``: (the turn ends now, announce it eagerly)."""
        return self.judge.verdict(seq, probability)

    def heard(self, text: str | None) -> tuple[bool, bool]:
        """The pause's words (None: none will come): as :meth:`verdict`."""
        return self.judge.heard(text)

    def ended(self, utterance: int) -> tuple[Measure, float | None]:
        """The turn ended: the pause it waited out, and the model's verdict on it (None: none)."""
        wait = Measure("turn_wait", self.judge.silent * self._config.frame_ms / 1000, utterance)
        probability = self.judge.probability
        self.judge.reset()
        return wait, probability

    def tune(self, params: StreamParams) -> None:
        """Flux's per-session ``eot_threshold``, ``eot_timeout_ms`` and ``eager_eot_threshold``
        tune the model the same way: the probability that ends a turn, the longest pause it
        waits out, and the probability announced as an eager end."""
        c = self._config
        self.judge.tune(
            frame_ms=c.frame_ms,
            threshold=c.turn_threshold if params.eot_threshold is None else params.eot_threshold,
            max_pause_ms=(
                c.turn_max_pause_s * 1000
                if params.eot_timeout_ms is None
                else params.eot_timeout_ms
            ),
            eager=(
                c.eager_eot_threshold
                if params.eager_eot_threshold is None
                else params.eager_eot_threshold
            ),
            language=params.language,
        )
