"""Smart Turn v3.2 on onnxruntime: the probability that a speaker's turn is complete.

The model (pipecat-ai/smart-turn, BSD-2, bundled in ``stt_service/models``) hears the last 8 s of
a turn as Whisper-style log-mel features and answers one number: how sure it is that the speaker
is done, from the words and the prosody of the end (a falling "...for four people." against a
level "...a table for"). It costs tens of milliseconds of CPU, so the worker runs it off the event
loop, and only in the pauses the voice detector finds (:mod:`stt_service.session.turns`).

The features are this module's own numpy code; they follow the Whisper feature extractor the
model was trained with (Hugging Face's ``WhisperFeatureExtractor(chunk_length=8)`` with
``do_normalize``: the 8 s window, silence padded in front, normalised to zero mean and unit
variance, a 400-point periodic Hann STFT every 160 samples, 80 Slaney mel bands, log10 clamped
8 below its peak, scaled to about [-1, 1]).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

RATE = 16_000
WINDOW_S = 8
WINDOW = RATE * WINDOW_S  # samples the model hears: the end of the turn
MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "smart_turn_v3_2_cpu.onnx"
_N_FFT = 400
_HOP = 160
_N_MELS = 80

Float32Array = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


class SmartTurnError(RuntimeError):
    """The model cannot be loaded or run; ``str()`` says which file and why, in one line."""


def _slaney_mel(f: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Hertz to mels, Slaney's scale: linear to 1 kHz, logarithmic above."""
    lin = 3.0 * f / 200.0
    log_part = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(f >= 1000.0, log_part, lin)


def _slaney_hz(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    lin = 200.0 * m / 3.0
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log_part, lin)


def _mel_filters() -> npt.NDArray[np.float32]:
    """80 triangular filters over 0-8 kHz, area-normalised (Slaney): (80, 201)."""
    edges = _slaney_hz(np.linspace(0.0, _slaney_mel(np.array([RATE / 2.0]))[0], _N_MELS + 2))
    bins = np.linspace(0.0, RATE / 2.0, _N_FFT // 2 + 1)
    lower = (bins[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    upper = (edges[2:, None] - bins[None, :]) / np.diff(edges)[1:, None]
    tri = np.maximum(0.0, np.minimum(lower, upper))
    tri *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return tri.astype(np.float32)


_FILTERS = _mel_filters()
_HANN = np.hanning(_N_FFT + 1)[:-1].astype(np.float64)  # periodic


def features(audio: Int16Array | Float32Array) -> Float32Array:
    """The model's input for a turn's audio (16 kHz; int16 or float in [-1, 1]): (80, 800).

    Only the last 8 s count; a shorter turn is padded with silence in front."""
    x = np.asarray(audio, dtype=np.float32)
    if audio.dtype == np.int16:
        x = x / 32768.0
    x = x[-WINDOW:]
    if x.size < WINDOW:
        x = np.concatenate([np.zeros(WINDOW - x.size, np.float32), x])
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), _N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]
    power = np.abs(np.fft.rfft(frames * _HANN, axis=-1)) ** 2  # (801, 201)
    mel = np.log10(np.maximum(power[:-1] @ _FILTERS.T.astype(np.float64), 1e-10)).T  # (80, 800)
    mel = np.maximum(mel, mel.max() - 8.0)
    out: Float32Array = ((mel + 4.0) / 4.0).astype(np.float32)
    return out


class SmartTurnModel:
    """The network, loaded once per process (onnxruntime sessions may run from several threads;
    the worker's runner, :mod:`.turnbatch`, counts its calls and their CPU time)."""

    def __init__(self, path: Path | str = MODEL_PATH, *, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a base dependency
            raise SmartTurnError(f"the end-of-turn model needs onnxruntime: {exc}") from None
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 4
        try:
            self._session: Any = ort.InferenceSession(
                str(path), providers=["CPUExecutionProvider"], sess_options=opts
            )
            inputs = [i.name for i in self._session.get_inputs()]
            if inputs != ["input_features"]:
                raise ValueError(f"inputs {inputs}, expected ['input_features']")
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SmartTurnError(f"cannot load the end-of-turn model {path}: {reason}") from None
        self.path = Path(path)

    def probabilities(self, turns: Sequence[Int16Array | Float32Array]) -> Float32Array:
        """Probability that each turn is complete (its audio ends where the speaker stopped)."""
        if not turns:
            return np.zeros(0, np.float32)
        x = np.stack([features(t) for t in turns])
        out = self._session.run(None, {"input_features": x})[0]
        return np.asarray(out, dtype=np.float32).reshape(len(turns))

    def probability(self, turn: Int16Array | Float32Array) -> float:
        return float(self.probabilities([turn])[0])


@functools.cache
def shared_model(path: str = str(MODEL_PATH)) -> SmartTurnModel:
    """The process's one copy of the model (loaded on first use; raises :class:`SmartTurnError`)."""
    model = SmartTurnModel(path)
    log.debug("Smart Turn loaded from %s", path)
    return model
