"""The corpus builder's foundation (``bench/corpus.py``): the clip format (16 kHz mono float32,
written as 16-bit WAV), the error a source raises, the command runner, and the audio and text
helpers the steps share: load and synthesise with sox, levels, trimming, splitting, fades,
loops and crossfades, normalising, the tonal and same-recording checks, words of a transcript."""

from __future__ import annotations

import math
import re
import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Audio = npt.NDArray[np.float32]
Json = dict[str, Any]

SR = 16000
SEED = 20240611
FRAME = 160  # 10 ms energy frames


class SourceError(Exception):
    """A source that could not be fetched, unpacked or read."""


def log(msg: str) -> None:
    print(msg, flush=True)


def run(cmd: Sequence[str], *, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(list(cmd), cwd=cwd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SourceError(f"{cmd[0]} failed: {err[-1] if err else proc.returncode}")
    return proc.stdout


def load(path: Path) -> Audio:
    """Any file sox reads (wav, ogg, flac), as 16 kHz mono float32."""
    if not path.is_file():
        raise SourceError(f"missing {path}")
    typ = ["-t", "ogg"] if path.suffix in (".oga", ".opus") else []
    raw = run(
        [
            "sox",
            "-V1",
            *typ,
            str(path),
            "-t",
            "raw",
            "-e",
            "floating-point",
            "-b",
            "32",
            "-c",
            "1",
            "-r",
            str(SR),
            "-",
        ]
    )
    x = np.frombuffer(raw, dtype=np.float32).copy()
    if len(x) == 0:
        raise SourceError(f"no audio in {path}")
    return x


def synth(seconds: float, channels: int, spec: Sequence[str]) -> Audio:
    """``sox -n synth`` in repeatable mode (fixed seed), mixed to mono."""
    raw = run(
        [
            "sox",
            "-R",
            "-r",
            str(SR),
            "-c",
            str(channels),
            "-n",
            "-t",
            "raw",
            "-e",
            "floating-point",
            "-b",
            "32",
            "-",
            "synth",
            f"{seconds:g}",
            *spec,
        ]
    )
    return np.frombuffer(raw, dtype=np.float32).copy()


def write_wav(path: Path, x: Audio) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def rms_db(x: Audio) -> float:
    return 20 * math.log10(math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))) + 1e-10)


def frame_db(x: Audio) -> npt.NDArray[np.float64]:
    n = max(1, len(x) // FRAME)
    y = np.zeros(n * FRAME, dtype=np.float64)
    y[: min(len(x), n * FRAME)] = x[: n * FRAME]
    return 10 * np.log10(np.mean(np.square(y.reshape(n, FRAME)), axis=1) + 1e-12)


def activity(x: Audio, rel_db: float, floor_db: float) -> npt.NDArray[np.bool_]:
    e = frame_db(x)
    return e > max(float(e.max()) - rel_db, floor_db)


def trim(x: Audio, rel_db: float = 40, floor_db: float = -60, pad: float = 0.05) -> Audio:
    """Leading and trailing silence off, ``pad`` seconds of margin kept."""
    act = np.flatnonzero(activity(x, rel_db, floor_db))
    if len(act) == 0:
        return x[:0]
    a = max(0, act[0] * FRAME - int(pad * SR))
    b = min(len(x), (act[-1] + 1) * FRAME + int(pad * SR))
    return x[a:b]


def segments(
    x: Audio, rel_db: float = 35, floor_db: float = -60, min_gap: float = 0.25, pad: float = 0.05
) -> list[tuple[int, int]]:
    """Sounding stretches (sample ranges) separated by at least ``min_gap`` s of silence."""
    act = activity(x, rel_db, floor_db)
    runs: list[list[int]] = []
    for i in np.flatnonzero(act):
        if runs and i - runs[-1][1] <= int(min_gap * SR / FRAME):
            runs[-1][1] = int(i)
        else:
            runs.append([int(i), int(i)])
    p = int(pad * SR)
    return [(max(0, a * FRAME - p), min(len(x), (b + 1) * FRAME + p)) for a, b in runs]


def split_long(x: Audio, max_s: float = 3.0, min_s: float = 1.5) -> list[tuple[Audio, int]]:
    """Pieces of at most ``max_s`` s, cut at the quietest frame between ``min_s`` and ``max_s``,
    each with its offset in ``x`` (samples)."""
    out: list[tuple[Audio, int]] = []
    at = 0
    while len(x) - at > max_s * SR:
        e = frame_db(x[at:])
        lo, hi = int(min_s * SR / FRAME), int(max_s * SR / FRAME)
        cut = at + (lo + int(np.argmin(e[lo:hi]))) * FRAME
        out.append((x[at:cut], at))
        act = np.flatnonzero(activity(x[cut:], 40, -60))
        at = cut + max(0, int(act[0]) * FRAME - SR // 50) if len(act) else len(x)
    if len(x) > at:
        out.append((x[at:], at))
    return out


def fade(x: Audio, seconds: float = 0.01) -> Audio:
    n = min(int(seconds * SR), len(x) // 2)
    if n == 0:
        return x
    y = x.copy()
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    y[:n] *= ramp
    y[-n:] *= ramp[::-1]
    return y


def xfade_concat(a: Audio, b: Audio, seconds: float) -> Audio:
    """``a`` then ``b``, overlapped by an equal-power crossfade."""
    n = min(int(seconds * SR), len(a), len(b))
    if n == 0:
        return np.concatenate([a, b])
    t = np.linspace(0.0, np.pi / 2, n, dtype=np.float32)
    mid = a[-n:] * np.cos(t) + b[:n] * np.sin(t)
    return np.concatenate([a[:-n], mid, b[n:]]).astype(np.float32)


def loop_to(x: Audio, seconds: float, xfade: float = 0.5) -> Audio:
    """Repeated with crossfades to ``seconds`` (or cut, if longer)."""
    target = int(seconds * SR)
    xf = min(xfade, len(x) / SR / 4)
    y = x
    while len(y) < target:
        y = xfade_concat(y, x, xf)
    return fade(y[:target], 0.05)


def soft_limit(x: Audio, knee: float = 0.7) -> Audio:
    a = np.abs(x)
    over = a > knee
    y = x.copy()
    y[over] = np.sign(x[over]) * (knee + (1 - knee) * np.tanh((a[over] - knee) / (1 - knee)))
    return y


def normalise(x: Audio, target_db: float) -> Audio:
    """Scaled to ``target_db`` dBFS RMS; peaks soft-limited below full scale."""
    y = x
    for _ in range(8):
        y = (y * 10 ** ((target_db - rms_db(y)) / 20)).astype(np.float32)
        if np.abs(y).max() <= 0.99:
            break
        y = soft_limit(y)
        if abs(rms_db(y) - target_db) < 0.05:
            break
    return y.astype(np.float32)


def harmonicity(x: Audio) -> tuple[float, float]:
    """Median pitch strength (autocorrelation peak, 50-500 Hz lags) and spectral flatness
    (160-5000 Hz) over the sounding frames: speech and music are high and low, noise low and high.
    """
    n = 640
    frames = x[: len(x) // n * n].reshape(-1, n).astype(np.float64)
    e = np.mean(np.square(frames), axis=1)
    frames = frames[e > max(float(e.max()) * 1e-3, 1e-9)] if len(e) else frames
    if len(frames) == 0:
        return 0.0, 0.0
    frames = frames - frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(frames, 2 * n, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :n]
    ac = ac / (ac[:, :1] + 1e-12)
    pitch = np.median(ac[:, SR // 500 : SR // 50].max(axis=1))
    power = np.abs(spec[:, 13:400]) ** 2 + 1e-12
    flat = np.median(np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1))
    return float(pitch), float(flat)


def same_sound(a: Audio, b: Audio, max_lag: int = SR // 40) -> bool:
    """Whether two recordings are one: lengths within 20 ms and either the waveforms correlate
    (> 0.95 at a lag within 25 ms) or, for copies processed differently, the 10 ms loudness
    contours do (> 0.97, within 1.5 dB on average once the gain is taken out)."""
    if abs(len(a) - len(b)) > SR // 50 or min(len(a), len(b)) < SR // 20:
        return False
    n = min(len(a), len(b), 10 * SR)
    ea, eb = frame_db(a[:n]), frame_db(b[:n])
    diff = ea - eb
    contour = np.std(ea) > 0 and np.std(eb) > 0 and float(np.corrcoef(ea, eb)[0, 1]) > 0.97
    if contour and float(np.mean(np.abs(diff - np.median(diff)))) < 1.5:
        return True
    x, y = a[:n].astype(np.float64), b[:n].astype(np.float64)
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    if den == 0:
        return False
    size = 1 << (2 * n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    near = np.concatenate([xc[: max_lag + 1], xc[-max_lag:]])
    return float(np.max(np.abs(near))) / den > 0.95


def letters(s: str) -> str:
    return re.sub(r"[^a-z]", "", s.lower())


def words_of(s: str) -> list[str]:
    return [w for w in re.sub(r"[^\w' -]", " ", s.lower()).split() if any(c.isalnum() for c in w)]
