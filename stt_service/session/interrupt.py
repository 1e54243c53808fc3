"""Barge-in detection: enough voiced speech while the assistant is responding.

Counts *voiced* frames (see :mod:`stt_service.speech.vad`), so noise that the detector does not call
speech never adds up to an interrupt. Fires once ``min_speech_ms`` of voiced audio falls within a
sliding window of ``window_ms`` and at least ``min_sure`` of those frames were *sure* (Silero's
probability at least ``SURE``): the abrupt start of loud music or hum can hold Silero between 0.5
and 0.85 for a few hundred milliseconds, where the start of speech passes 0.9 within a frame or
two. The caller then acts (:mod:`stt_service.session.bargein`) and calls :meth:`reset`.
"""

from __future__ import annotations

from collections import deque

SURE = 0.9  # a Silero probability the network reaches on speech and not on music's onsets


class InterruptDetector:
    def __init__(
        self,
        *,
        frame_ms: int,
        min_speech_ms: int,
        window_ms: int | None = None,
        min_sure: int = 1,
    ) -> None:
        self.frame_ms = frame_ms
        self.min_frames = max(1, -(-min_speech_ms // frame_ms))
        self.min_sure = min(min_sure, self.min_frames)
        window = window_ms if window_ms is not None else max(500, 2 * min_speech_ms)
        self._window: deque[tuple[bool, bool]] = deque(
            maxlen=max(self.min_frames, window // frame_ms)
        )
        self._voiced = 0
        self._sure = 0

    def step(self, voiced: bool, sure: bool | None = None) -> bool:
        """Feed one frame heard while responding (``sure``: the detector is certain it is speech;
        None: as sure as ``voiced``); True when the interrupt fires."""
        sure = voiced if sure is None else (sure and voiced)
        if len(self._window) == self._window.maxlen:
            old_voiced, old_sure = self._window[0]
            self._voiced -= old_voiced
            self._sure -= old_sure
        self._window.append((voiced, sure))
        self._voiced += voiced
        self._sure += sure
        return self._voiced >= self.min_frames and self._sure >= self.min_sure

    def onset_frames_ago(self) -> int:
        """How many frames back (counting the last one as 1) the first voiced frame in the window
        is: where the speech that fired the interrupt began."""
        for i, (voiced, _) in enumerate(self._window):
            if voiced:
                return len(self._window) - i
        return 0

    def reset(self) -> None:
        self._window.clear()
        self._voiced = 0
        self._sure = 0
