"""Simulated echo paths: the agent's playback as a microphone beside the loudspeaker hears it.

Shared by ``bench/echo.py`` and the echo tests. A path is a loudspeaker (soft clipping when
driven hard), a room (a decaying noise impulse response after a direct sound), a delay (the
audio device's and the network's, 20-400 ms) and the echo return loss (how much quieter the echo
is than the playback, 0-20 dB). Deterministic for a given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 16000


@dataclass(frozen=True)
class EchoPath:
    delay_ms: float = 120.0
    erl_db: float = 6.0  # echo return loss: the echo this much quieter than the playback
    rt60_s: float = 0.2  # the room's decay (to -60 dB)
    clip: float = 0.0  # loudspeaker drive into tanh clipping (0: linear)
    seed: int = 0

    @property
    def label(self) -> str:
        clip = f", clip {self.clip:g}" if self.clip else ""
        return f"{self.delay_ms:g} ms, ERL {self.erl_db:g} dB, RT60 {self.rt60_s:g} s{clip}"

    def response(self) -> np.ndarray:
        """The room's impulse response (unit energy): a direct sound, then a decaying tail."""
        rng = np.random.default_rng(self.seed)
        n = int(min(0.5, self.rt60_s) * RATE)
        t = np.arange(n) / RATE
        h = rng.standard_normal(n) * np.exp(-6.9 * t / max(self.rt60_s, 1e-3)) * 0.3
        h[0] = 1.0
        result: np.ndarray = h / np.sqrt(np.sum(h**2))
        return result

    def apply(self, playback: np.ndarray) -> np.ndarray:
        """The echo of ``playback`` (int16, 16 kHz) at the microphone, as int16, same length."""
        x = playback.astype(np.float64) / 32768.0
        if self.clip:
            x = np.tanh(self.clip * x) / np.tanh(self.clip)
        y = np.convolve(x, self.response())[: x.size]
        d = int(self.delay_ms * RATE / 1000)
        y = np.concatenate([np.zeros(d), y[: max(0, y.size - d)]])[: x.size]
        y *= 10 ** (-self.erl_db / 20)
        return np.clip(y * 32768.0, -32768, 32767).astype(np.int16)


def mix(*parts: np.ndarray) -> np.ndarray:
    """Sum int16 signals (padded to the longest), clipped to int16."""
    n = max(p.size for p in parts)
    out = np.zeros(n, dtype=np.float64)
    for p in parts:
        out[: p.size] += p
    return np.clip(out, -32768, 32767).astype(np.int16)


def active_rms(x: np.ndarray, frame: int = 320) -> float:
    """RMS over the frames within 30 dB of the loudest (speech level, pauses left out)."""
    n = x.size // frame
    if n == 0:
        return 0.0
    e = np.mean(np.square(x[: n * frame].astype(np.float64).reshape(n, frame)), axis=1)
    on = e[e > e.max() * 1e-3]
    return float(np.sqrt(np.mean(on))) if on.size else 0.0


def scaled_to(x: np.ndarray, reference: np.ndarray, ratio_db: float) -> np.ndarray:
    """``x`` scaled so that its speech level is ``ratio_db`` above ``reference``'s."""
    gain = active_rms(reference) / max(active_rms(x), 1e-9) * 10 ** (ratio_db / 20)
    return np.clip(x.astype(np.float64) * gain, -32768, 32767).astype(np.int16)
