"""Barge-in detection: enough voiced speech while the assistant is responding.

Counts *voiced* frames (see :mod:`stt_service.vad`: webrtcvad speech, loud and periodic), so
broadband noise, clicks and pops never add up to an interrupt. Fires once
``min_speech_ms`` of voiced audio falls within a sliding window of ``window_ms``; the caller then
switches the session to ``listening`` and calls :meth:`reset`.
"""

from __future__ import annotations

from collections import deque


class InterruptDetector:
    def __init__(self, *, frame_ms: int, min_speech_ms: int, window_ms: int | None = None) -> None:
        self.frame_ms = frame_ms
        self.min_frames = max(1, -(-min_speech_ms // frame_ms))
        window = window_ms if window_ms is not None else max(500, 2 * min_speech_ms)
        self._window: deque[bool] = deque(maxlen=max(self.min_frames, window // frame_ms))
        self._voiced = 0

    def step(self, voiced: bool) -> bool:
        """Feed one frame heard while responding; True when the interrupt fires."""
        if len(self._window) == self._window.maxlen and self._window[0]:
            self._voiced -= 1
        self._window.append(voiced)
        self._voiced += voiced
        return self._voiced >= self.min_frames

    def onset_frames_ago(self) -> int:
        """How many frames back (counting the last one as 1) the first voiced frame in the window
        is: where the speech that fired the interrupt began."""
        for i, voiced in enumerate(self._window):
            if voiced:
                return len(self._window) - i
        return 0

    def reset(self) -> None:
        self._window.clear()
        self._voiced = 0
