"""Voice activity: per-frame classification and utterance endpointing.

webrtcvad alone calls broadband noise speech at every aggressiveness, and Whisper transcribes noise
as "You". So a frame counts as *voiced* only when webrtcvad calls it speech, it is louder than an
absolute floor, and it is periodic in the human pitch range (a normalised autocorrelation peak
between 70 and 400 Hz). Voiced frames start utterances and keep them open; unvoiced consonants ride
inside the hangover.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from functools import cache

import numpy as np
import numpy.typing as npt
import webrtcvad

from .audio import TARGET_RATE, Int16Array, rms_dbfs

ENERGY_FLOOR_DB = -55.0
PERIODICITY_THRESHOLD = 0.45
_MIN_LAG = TARGET_RATE // 400  # 400 Hz
_MAX_LAG = TARGET_RATE // 70  # 70 Hz
_ANALYSIS = 640  # 40 ms of context for the pitch search


@dataclass(frozen=True, slots=True)
class FrameInfo:
    vad: bool  # webrtcvad's verdict
    voiced: bool  # vad and loud enough and periodic
    energy_db: float
    periodicity: float


def periodicity(x: Int16Array) -> float:
    """Highest normalised autocorrelation at a pitch lag, after the first zero crossing.

    About 0.1-0.2 for white noise, 0 for low-passed noise (no peak after the decay), 0.6-0.95 for
    vowels.
    """
    n = x.size
    if n < 2 * _MIN_LAG:
        return 0.0
    s = x.astype(np.float64)
    s -= s.mean()
    spec = np.fft.rfft(s, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[:n]
    csum = np.concatenate(([0.0], np.cumsum(s * s)))
    hi, lags = _lags(n)
    head = csum[n - lags]  # energy of s[0 : n-lag]
    tail = csum[n] - csum[lags]  # energy of s[lag : n]
    # relative floor: FFT rounding error over a near-silent side must not look like correlation
    denom = np.sqrt(head * tail) + 1e-6 * csum[n] + 1e-9
    r = ac[lags] / denom
    # start after the first zero crossing of the full autocorrelation (skips the main lobe)
    negative = np.nonzero(ac[1 : hi + 1] <= 0)[0]
    if not negative.size:
        return 0.0
    first = int(negative[0]) + 1
    r = r[max(0, first - _MIN_LAG) :]
    return float(r.max()) if r.size else 0.0


@cache
def _lags(n: int) -> tuple[int, npt.NDArray[np.int64]]:
    hi = min(_MAX_LAG, n - _MIN_LAG)
    return hi, np.arange(_MIN_LAG, hi + 1)


class FrameClassifier:
    """webrtcvad + energy + periodicity for one session's 16 kHz frames."""

    def __init__(self, aggressiveness: int, frame_samples: int) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._history = np.zeros(_ANALYSIS, dtype=np.int16)
        self.frame_samples = frame_samples

    def classify(self, frame: Int16Array) -> FrameInfo:
        hist = np.concatenate((self._history, frame))[-_ANALYSIS:]
        self._history = hist
        energy = rms_dbfs(frame)
        if energy < ENERGY_FLOOR_DB:
            return FrameInfo(False, False, energy, 0.0)
        is_speech = self._vad.is_speech(frame.tobytes(), TARGET_RATE)
        if not is_speech:
            return FrameInfo(False, False, energy, 0.0)
        p = periodicity(hist)
        return FrameInfo(True, p >= PERIODICITY_THRESHOLD, energy, p)


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
        self._recent: deque[bool] = deque(maxlen=max(self.start_frames, window_ms // frame_ms))
        self.in_speech = False
        self.silent_frames = 0

    def step(self, voiced: bool) -> EndpointEvent | None:
        if not self.enabled:
            if not self.in_speech:
                self.in_speech = True
                return EndpointEvent.START
            return None
        if not self.in_speech:
            self._recent.append(voiced)
            if sum(self._recent) >= self.start_frames:
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
