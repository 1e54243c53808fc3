"""Audio normalisation: raw PCM chunks of any rate and channel count -> 16 kHz mono int16 frames.

``AudioNormalizer`` carries an incomplete sample (odd trailing byte, half a stereo frame) into the
next chunk, downmixes stereo and resamples with a streaming soxr resampler, so chunk boundaries
leave no clicks. ``FrameSplitter`` cuts the result into fixed-size frames for the VAD.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

TARGET_RATE = 16000
Int16Array = npt.NDArray[np.int16]
EMPTY = np.zeros(0, dtype=np.int16)


class AudioNormalizer:
    """Stateful converter for one session's audio stream. ``quality`` is soxr's: "HQ" holds
    about 60 ms back inside its filter (for the recognizer); "QQ" (cubic) holds none, for a
    signal that must be on time rather than clean (the echo reference)."""

    def __init__(self, sample_rate: int, channels: int, quality: str = "HQ") -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self._frame_bytes = 2 * channels
        self._carry = b""
        self._resampler = (
            None
            if sample_rate == TARGET_RATE
            else soxr.ResampleStream(sample_rate, TARGET_RATE, 1, dtype="int16", quality=quality)
        )

    def push(self, pcm: bytes) -> Int16Array:
        """Normalise one chunk; returns the 16 kHz mono samples it completes (maybe none)."""
        if self._carry:
            pcm = self._carry + pcm
        usable = len(pcm) - len(pcm) % self._frame_bytes
        self._carry = pcm[usable:]
        if usable == 0:
            return EMPTY
        samples = np.frombuffer(pcm, dtype="<i2", count=usable // 2)
        if self.channels == 2:
            samples = ((samples[0::2].astype(np.int32) + samples[1::2]) // 2).astype(np.int16)
        if self._resampler is None:
            return samples.astype(np.int16, copy=False)
        out: Int16Array = self._resampler.resample_chunk(samples)
        return out

    def flush(self) -> Int16Array:
        """End of stream: the resampler's tail (a dangling odd byte is dropped; it is no sample)."""
        self._carry = b""
        if self._resampler is None:
            return EMPTY
        out: Int16Array = self._resampler.resample_chunk(EMPTY, last=True)
        return out

    @property
    def pending_bytes(self) -> int:
        return len(self._carry)


class FrameSplitter:
    """Accumulates samples and yields complete frames of ``frame_samples``."""

    def __init__(self, frame_samples: int) -> None:
        self.frame_samples = frame_samples
        self._buf = EMPTY

    def push(self, samples: Int16Array) -> list[Int16Array]:
        buf = np.concatenate((self._buf, samples)) if self._buf.size else samples
        n = buf.size // self.frame_samples
        frames = [buf[i * self.frame_samples : (i + 1) * self.frame_samples] for i in range(n)]
        self._buf = buf[n * self.frame_samples :].copy()
        return frames

    @property
    def pending(self) -> int:
        """Samples held for the next frame."""
        return int(self._buf.size)

    def take_rest(self) -> Int16Array:
        """The samples of the incomplete last frame, as they are (maybe none)."""
        rest, self._buf = self._buf, EMPTY
        return rest

    def flush(self) -> Int16Array | None:
        """The incomplete last frame, zero-padded, or None."""
        if not self._buf.size:
            return None
        frame = np.zeros(self.frame_samples, dtype=np.int16)
        frame[: self._buf.size] = self._buf
        self._buf = EMPTY
        return frame


def rms_dbfs(frame: Int16Array) -> float:
    if not frame.size:
        return -120.0
    x = frame.astype(np.float32)
    power = float(np.mean(x * x))
    return 10.0 * float(np.log10(power / (32768.0**2) + 1e-12))


def to_float32(samples: Int16Array) -> npt.NDArray[np.float32]:
    return samples.astype(np.float32) / 32768.0


def wav_bytes(samples: Int16Array, rate: int = TARGET_RATE) -> bytes:
    """A mono 16-bit PCM WAV file in memory."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2", copy=False).tobytes())
    return buf.getvalue()


@dataclass(frozen=True, slots=True)
class WavAudio:
    pcm: bytes
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return len(self.pcm) / (2 * self.channels * self.sample_rate)


def read_wav(path: str | Path) -> WavAudio:
    """Read a 16-bit PCM WAV file, with a message that says how to convert anything else."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
                raise ValueError("not 16-bit PCM")
            if w.getnchannels() not in (1, 2):
                raise ValueError(f"{w.getnchannels()} channels; 1 or 2 are supported")
            return WavAudio(w.readframes(w.getnframes()), w.getframerate(), w.getnchannels())
    except (wave.Error, ValueError, EOFError) as exc:
        raise ValueError(
            f"{path}: {exc}. Convert it with: ffmpeg -i IN -ar 16000 -ac 1 -sample_fmt s16 OUT.wav"
        ) from None
