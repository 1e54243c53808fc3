"""What the emulated models 'hear': 20 ms frames of 16-bit mono PCM, speech when loud enough."""

from __future__ import annotations

import numpy as np

from ..audio import FrameSplitter, rms_dbfs

FRAME_S = 0.02
SPEECH_DB = -45.0  # a frame louder than this is speech


class LoudFrames:
    """Feed PCM bytes in any sizes; get one verdict (speech or not) per whole frame."""

    def __init__(self, sample_rate: int) -> None:
        self._frames = FrameSplitter(max(1, round(sample_rate * FRAME_S)))
        self._odd = b""  # a byte of a sample split across two messages

    def feed(self, pcm: bytes) -> list[bool]:
        data = self._odd + pcm
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        samples = np.frombuffer(data[:cut], dtype="<i2")
        return [rms_dbfs(frame) > SPEECH_DB for frame in self._frames.push(samples)]
