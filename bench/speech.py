"""Real speech for the benchmarks (and the tests, through ``tests/speech.py``): Debian's
pocketsphinx-testdata LibriVox utterances (16 kHz mono), and the small helpers that join them
with silence and find where their speech starts and ends."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from stt_service.audio import WavAudio, read_wav

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
PREFIX = "sense_and_sensibility_01_austen_64kb-"


@dataclass(frozen=True)
class Utterance:
    name: str
    audio: WavAudio
    reference: str

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(self.audio.pcm, dtype=np.int16)


@cache
def utterances() -> tuple[Utterance, ...]:
    """All five utterances with their reference transcripts, in file order."""
    if not LIBRIVOX.is_dir():
        raise RuntimeError(
            f"{LIBRIVOX} is missing: install Debian's pocketsphinx-testdata (.ci/run does)"
        )
    refs: dict[str, str] = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        text, _, name = line.rpartition("(")
        refs[name.strip(" )")] = text.replace("<s>", "").replace("</s>", "").strip()
    out = []
    for name in (LIBRIVOX / "fileids").read_text().split():
        out.append(Utterance(name, read_wav(LIBRIVOX / f"{name}.wav"), refs[name]))
    return tuple(out)


def utterance(suffix: str) -> Utterance:
    return next(u for u in utterances() if u.name.endswith(suffix))


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def pcm16(samples: np.ndarray, rate: int = 16000, channels: int = 1) -> WavAudio:
    return WavAudio(samples.astype(np.int16).tobytes(), rate, channels)


def joined(parts: list[Utterance], gap_s: float = 1.5) -> WavAudio:
    """Utterances separated (and surrounded) by silence, as one 16 kHz stream."""
    chunks = [silence(0.5)]
    for u in parts:
        chunks += [u.samples, silence(gap_s)]
    return pcm16(np.concatenate(chunks))


def speech_bounds(samples: np.ndarray, frame: int = 480) -> tuple[float, float]:
    """First and last 30 ms frame louder than -40 dBFS: where speech starts and ends."""
    n = samples.size // frame
    x = samples[: n * frame].astype(np.float32).reshape(n, frame) / 32768.0
    db = 10 * np.log10(np.mean(x * x, axis=1) + 1e-12)
    loud = np.flatnonzero(db > -40)
    return float(loud[0] * frame / 16000), float((loud[-1] + 1) * frame / 16000)
