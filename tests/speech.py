"""Real speech for the tests: Debian's pocketsphinx-testdata LibriVox utterances (16 kHz mono),
shared with the benchmarks (:mod:`bench.speech`, re-exported here), plus the noise and the sox
resampling that only the tests use."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from bench.speech import (
    LIBRIVOX,
    PREFIX,
    Utterance,
    joined,
    pcm16,
    silence,
    speech_bounds,
    utterance,
    utterances,
)
from stt_service.audio import WavAudio, read_wav

__all__ = [
    "LIBRIVOX",
    "PREFIX",
    "Utterance",
    "clicks",
    "joined",
    "pcm16",
    "silence",
    "sox_convert",
    "speech_bounds",
    "utterance",
    "utterances",
    "white_noise",
]


def white_noise(seconds: float, rms: float = 3000.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, rms, int(16000 * seconds)), -32768, 32767).astype(np.int16)


def clicks(seconds: float, every_s: float = 0.25, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(int(16000 * seconds), dtype=np.int16)
    for i in range(0, out.size, int(16000 * every_s)):
        out[i : i + 40] = (20000 * np.sign(rng.normal(size=out[i : i + 40].size))).astype(np.int16)
    return out


def sox_convert(audio: WavAudio, rate: int, channels: int) -> WavAudio:
    """Resample/re-channel with the sox command (an implementation independent of soxr-python)."""
    if shutil.which("sox") is None:
        raise RuntimeError("sox is missing: install Debian's sox (.ci/run does)")
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.wav", Path(d) / "out.wav"
        with wave.open(str(src), "wb") as w:
            w.setnchannels(audio.channels)
            w.setsampwidth(2)
            w.setframerate(audio.sample_rate)
            w.writeframes(audio.pcm)
        subprocess.run(
            ["sox", str(src), "-r", str(rate), "-c", str(channels), str(dst)],
            check=True,
            capture_output=True,
        )
        return read_wav(dst)
