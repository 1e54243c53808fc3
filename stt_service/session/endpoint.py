"""Utterance endpointing: where speech starts and ends, over a stream of per-frame voice verdicts.

The verdicts come from :mod:`stt_service.speech.vad`; this module only counts them.
"""

from __future__ import annotations

from collections import deque
from enum import Enum


class EndpointEvent(Enum):
    START = "start"
    PAUSE = "pause"  # ``pause_frames`` without voice: maybe the end, decide early if possible
    END = "end"


class Endpointer:
    """Speech start/end over a stream of voiced flags.

    Start: ``start_frames`` voiced frames within the last ``window_frames``. End:
    ``hangover_frames`` consecutive frames without voice; ``pause_frames`` of them (if fewer)
    give one PAUSE first. With ``enabled=False`` the first frame starts an utterance and only
    size, flushes and clock time end it.
    """

    def __init__(
        self,
        *,
        frame_ms: int,
        hangover_ms: float,
        start_ms: int = 90,
        window_ms: int = 300,
        pause_ms: float = 0,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.start_frames = max(1, start_ms // frame_ms)
        self.hangover_frames = max(1, round(hangover_ms / frame_ms))
        pause = round(pause_ms / frame_ms)
        self.pause_frames = pause if 0 < pause < self.hangover_frames else 0
        self._recent: deque[tuple[bool, bool]] = deque(
            maxlen=max(self.start_frames, window_ms // frame_ms)
        )
        self.in_speech = False
        self.silent_frames = 0

    def step(self, voiced: bool, sure: bool | None = None) -> EndpointEvent | None:
        """One frame's verdict. ``sure``: the detector is certain of this frame's voice (Silero
        at 0.9 or more; None: as sure as ``voiced``); a start needs one sure frame in the window,
        so the abrupt start of loud music, which holds Silero between 0.5 and 0.9 for a few
        hundred milliseconds, starts no utterance."""
        if not self.enabled:
            if not self.in_speech:
                self.in_speech = True
                return EndpointEvent.START
            return None
        if not self.in_speech:
            self._recent.append((voiced, voiced if sure is None else sure and voiced))
            if sum(v for v, _ in self._recent) >= self.start_frames and any(
                s for _, s in self._recent
            ):
                self.in_speech = True
                self.silent_frames = 0
                self._recent.clear()
                return EndpointEvent.START
            return None
        if voiced:
            self.silent_frames = 0
            return None
        self.silent_frames += 1
        if self.silent_frames >= self.hangover_frames:
            self.in_speech = False
            self.silent_frames = 0
            return EndpointEvent.END
        if self.silent_frames == self.pause_frames:
            return EndpointEvent.PAUSE
        return None

    @property
    def paused(self) -> bool:
        """In an utterance, and silent for at least ``pause_frames``."""
        return self.in_speech and 0 < self.pause_frames <= self.silent_frames

    def reset(self) -> None:
        """Forget the current utterance (after a flush): the next voice starts a new one."""
        self.in_speech = False
        self.silent_frames = 0
        self._recent.clear()


def reads_finished(text: str) -> bool:
    """Whether a decode ends like a finished sentence: '.', '?' or '!', but not a trailing '...'.

    Whisper punctuates from the audio, prosody included, so a falling "...man." after a pause is
    a good sign the speaker is done; "...and" or "...because..." is not. (The eager endpoint,
    ``STT_EAGER_ENDPOINT``, without the end-of-turn model: see :mod:`.segmenter`.)
    """
    t = text.rstrip().rstrip("\"')]»”’")
    return t.endswith((".", "?", "!")) and not t.endswith(("..", "…"))
