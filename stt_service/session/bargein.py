"""Barge-in in stages: an interrupt stands on words, or is taken back.

The voice detector decides *that* someone spoke while the assistant was responding
(:mod:`.interrupt`); this module decides, from what the recognizer then heard, whether
it was a real barge-in. Sans-I/O: the session core feeds it the interrupt and the transcripts of
the speech that caused it, and acts on what it answers.

- ``min_words == 0`` (the default): the interrupt goes out at once. If the final of the speech
  that caused it holds no words (a cough, a laugh, noise the detector let through; but not a
  second of voice or more: that is speech the recognizer cannot read, a language it does not
  know or a bad line) or only
  backchannels ("uh-huh", "yeah", "okay", ...), and it comes within ``false_timeout`` seconds of
  the end of that speech, the interrupt is taken back (``interrupt_cancelled``) and the assistant
  may resume. (Counted from the end of the speech, not from the interrupt: a final comes only
  after its speech ends, so a laugh of two seconds could never be taken back otherwise.) One
  word in it that is not a backchannel confirms it; partials decide nothing (on a short sound
  they are guesses: "uh-huh" read as "Uh-fuh").
- ``min_words > 0``: the interrupt waits until the recognizer has heard that many words that are
  not backchannels; speech that never gets there interrupts nothing, so there is nothing to take
  back. Slower, and immune to coughs and "uh-huh".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ..config import BACKCHANNELS

# sounds a recognizer may spell that are not words: fillers, hums and laughter, however long
# ("Mmm", "Uhhh", "Hahahaha")
_NON_WORD = re.compile(
    r"u+h+|u+m+|e+r+m*|a+h+|h+m+|m+|m+h+m+|h+a+h*|(h+a+){2,}h*|h+e+h+|(h+e+){2,}h*"
)


def non_word(word: str) -> bool:
    return _NON_WORD.fullmatch(word) is not None


_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[♪♫]")  # [coughs], (laughing), *sigh*
_SPLIT = re.compile(r"[^a-z0-9']+")

CancelReason = Literal["no_words", "backchannel"]
# speech with this much voice that the recognizer reads no word in is taken to be a barge-in it
# cannot read (another language, a bad line), not a cough: its interrupt stands
NO_WORDS_MAX_VOICED_S = 1.0
# where the backend finds turns: seconds after the voice stopped with no word transcribed after
# which the speech is taken to have held none (a Nova or Flux final with words comes well within)
NO_FINAL_WAIT = 1.0


def words(text: str) -> list[str]:
    """The words of a transcript: lower case, without punctuation, hyphens or the recognizer's
    annotations of non-speech sounds (``[coughs]``, ``(laughs)``, ``*sigh*``)."""
    text = _ANNOTATION.sub(" ", text.lower()).replace("’", "'")
    return [w.strip("'") for w in _SPLIT.split(text) if w.strip("'")]


class Backchannels:
    """A list of backchannel phrases ("uh-huh", "i see"), matched as whole words."""

    def __init__(self, phrases: Iterable[str] = BACKCHANNELS) -> None:
        parsed = {tuple(words(p)) for p in phrases}
        self._phrases = sorted((p for p in parsed if p), key=len, reverse=True)

    def _scan(self, text: str) -> tuple[int, int]:
        """(words that are neither backchannels nor non-words, backchannel phrases found)."""
        tokens = words(text)
        count = found = i = 0
        while i < len(tokens):
            for phrase in self._phrases:
                if tuple(tokens[i : i + len(phrase)]) == phrase:
                    i += len(phrase)
                    found += 1
                    break
            else:
                count += not non_word(tokens[i])
                i += 1
        return count, found

    def substantive(self, text: str) -> int:
        """How many words of ``text`` are neither backchannels nor non-words."""
        return self._scan(text)[0]

    def reason(self, text: str) -> CancelReason | None:
        """Why speech with this transcript was no barge-in (None: it was one)."""
        count, found = self._scan(text)
        if count:
            return None
        return "backchannel" if found else "no_words"


@dataclass(slots=True)
class _Pending:
    onset: float  # seconds of session audio where the voice began
    at: float  # when the interrupt went out (or, held for words, when the voice was heard)
    utterance: int | None  # the utterance holding the speech (service endpointing)
    published: bool  # the interrupt went out; else it waits for words
    ended: float | None = None  # when the speech ended (the clock): the take-back time runs
    words: bool = False  # some transcript of it, a partial too, held a word
    voiced_s: float | None = None  # how much of it the voice detector called voice


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Publish the interrupt now (its speech began at ``onset`` s of session audio)."""

    onset: float


@dataclass(frozen=True, slots=True)
class Cancel:
    """Take the interrupt back."""

    reason: CancelReason


Decision = Interrupt | Cancel


class BargeIn:
    """One session's barge-in after the voice detector fired (see the module docstring)."""

    def __init__(
        self,
        *,
        min_words: int = 0,
        false_timeout: float = 2.0,
        backchannels: Backchannels | None = None,
    ) -> None:
        self.min_words = min_words
        self.false_timeout = false_timeout
        self.backchannels = backchannels or Backchannels()
        self._pending: _Pending | None = None

    @property
    def holding(self) -> bool:
        """Voice was heard while responding and the interrupt waits for words."""
        return self._pending is not None and not self._pending.published

    @property
    def pending(self) -> bool:
        """An interrupt (sent or held) whose speech the words have not decided yet."""
        return self._pending is not None

    def voice(self, onset: float, now: float, utterance: int | None) -> Decision | None:
        """The voice detector fired while responding: interrupt now, or hold for words."""
        if self.min_words > 0:
            self._pending = _Pending(onset, now, utterance, published=False)
            return None
        self._pending = (
            _Pending(onset, now, utterance, published=True) if self.false_timeout > 0 else None
        )
        return Interrupt(onset)

    def heard(
        self, text: str, *, final: bool, audio_end: float, utterance: int | None, now: float
    ) -> Decision | None:
        """A transcript (partial or final) of ``utterance`` (None: the backend finds turns; the
        audio up to ``audio_end`` s decides which speech it is)."""
        p = self._pending
        if p is None:
            return None
        if p.utterance is not None and utterance is not None:
            if utterance < p.utterance:
                return None  # earlier speech
        elif audio_end <= p.onset:
            return None
        n = self.backchannels.substantive(text)
        p.words = p.words or n > 0
        if not p.published:
            if n >= self.min_words:
                self._pending = None
                return Interrupt(p.onset)
            if final:
                self._pending = None  # the speech ended without enough words: no barge-in
            return None
        if not final:
            # a partial of a short sound is a guess ("uh-huh" read as "Uh-fuh"): only the final
            # decides whether an interrupt that went out stands
            return None
        self._pending = None
        if n:
            return None  # real words: the interrupt stands
        if p.ended is not None and now - p.ended > self.false_timeout:
            return None  # too late to take back: the assistant has moved on
        reason = self.backchannels.reason(text)
        assert reason is not None
        if reason == "no_words" and (p.voiced_s or 0.0) >= NO_WORDS_MAX_VOICED_S:
            return None  # a second of voice with no word read: speech the model cannot read
        return Cancel(reason)

    def ended(
        self, now: float, utterance: int | None = None, voiced_s: float | None = None
    ) -> None:
        """The speech that caused the interrupt ended now (its utterance, where the service
        finds them, with ``voiced_s`` seconds of voice): ``false_timeout`` counts from here."""
        p = self._pending
        if (
            p is not None
            and p.ended is None
            and (p.utterance is None or utterance is None or utterance >= p.utterance)
        ):
            p.ended = now
            p.voiced_s = voiced_s

    def tick(self, now: float, *, speaking: bool, waits_for_final: bool) -> Decision | None:
        """Clock. ``waits_for_final``: a final of the speech will come (the service finds the
        utterances) and decides. Else (the backend finds turns, and may make none of a cough)
        the end of the voice is the end of the speech, and if no transcript of it held a word
        ``NO_FINAL_WAIT`` later, it held none. An interrupt ``false_timeout`` past the end of
        its speech stands."""
        p = self._pending
        if p is None or not p.published:
            return None
        if not waits_for_final:
            if speaking:
                p.ended = None
            elif p.ended is None:
                p.ended = now
        if p.ended is None:
            return None
        if (
            not waits_for_final
            and not p.words
            and now - p.ended >= min(NO_FINAL_WAIT, self.false_timeout)
        ):
            self._pending = None
            return Cancel("no_words")
        if now - p.ended > self.false_timeout:
            self._pending = None
        return None

    def reset(self) -> None:
        """The client changed the state itself: whatever was pending is its business now."""
        self._pending = None
