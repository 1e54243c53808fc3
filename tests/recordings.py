"""Recorded non-speech and prompts for the voice-detection tests, from Debian packages that
``.ci/run`` installs: ALSA's speaker-test noise (alsa-utils), Asterisk's music on hold
(asterisk-moh-opsound-wav) and Asterisk's English prompts (asterisk-core-sounds-en-wav); sox
makes coloured noise and mains hum. Everything comes back as 16 kHz mono int16."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

from stt_service.audio import read_wav

from .speech import sox_convert

ALSA_NOISE = Path("/usr/share/sounds/alsa/Noise.wav")
MUSIC_ON_HOLD = Path("/usr/share/asterisk/moh")
PROMPTS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
PACKAGES = {
    ALSA_NOISE: "alsa-utils",
    MUSIC_ON_HOLD: "asterisk-moh-opsound-wav",
    PROMPTS: "asterisk-core-sounds-en-wav",
}


def _need(path: Path) -> Path:
    if not path.exists():
        root = next((p for p in PACKAGES if path == p or p in path.parents), path)
        raise RuntimeError(
            f"{path} is missing: install Debian's {PACKAGES.get(root, 'package')} (.ci/run does)"
        )
    return path


@cache
def _read16k(path: Path) -> np.ndarray:
    audio = sox_convert(read_wav(_need(path)), 16000, 1)
    return np.frombuffer(audio.pcm, dtype=np.int16).copy()


def at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    """``x`` scaled to an RMS of ``dbfs``."""
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) + 1e-9
    return np.clip(x * (32768 * 10 ** (dbfs / 20) / rms), -32768, 32767).astype(np.int16)


def looped(x: np.ndarray, seconds: float) -> np.ndarray:
    return np.resize(x, int(seconds * 16000))


def alsa_noise() -> np.ndarray:
    """ALSA speaker-test's pink noise (1.4 s), as recorded."""
    return _read16k(ALSA_NOISE)


def music(track: str, seconds: float = 10.0, skip: float = 5.0) -> np.ndarray:
    """Part of an Asterisk music-on-hold track (e.g. ``macroform-robot_dity``)."""
    x = _read16k(MUSIC_ON_HOLD / f"{track}.wav")
    return x[int(skip * 16000) : int((skip + seconds) * 16000)]


def prompt(name: str) -> np.ndarray:
    """An Asterisk prompt, 8 kHz telephone speech brought to 16 kHz (e.g. ``digits/oh``)."""
    return _read16k(PROMPTS / f"{name}.wav")


@cache
def synth(spec: str, seconds: float = 8.0) -> np.ndarray:
    """``sox -n ... synth SECONDS {spec}``: ``pinknoise``, ``brownnoise``, or sines for hum."""
    if shutil.which("sox") is None:
        raise RuntimeError("sox is missing: install Debian's sox (.ci/run does)")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "synth.wav"
        subprocess.run(
            [
                "sox",
                "-R",
                "-n",
                "-r",
                "16000",
                "-c",
                "1",
                "-b",
                "16",
                str(out),
                "synth",
                str(seconds),
                *spec.split(),
            ],
            check=True,
            capture_output=True,
        )
        return np.frombuffer(read_wav(out).pcm, dtype=np.int16).copy()


def mains_hum(seconds: float = 8.0) -> np.ndarray:
    """50 Hz hum with its harmonics, the way a ground loop sounds."""
    spec = "sine 50 sine 100 sine 150 sine 250 sine 350 remix 1-5"
    return synth(spec, seconds)
