"""Silero VAD v6 on onnxruntime: the speech probability of 32 ms frames, many streams per call.

The network is small, but a call costs more than a frame: on the 2-core CI machine 204 us of CPU
for one frame alone, 80 us a frame in a batch of 32, 76 in a batch of 100 (a faster CPU measured
60 and 26), so the frames of many sessions go through one call where they can
(:class:`SileroModel` takes a batch; :mod:`.voicebatch` gathers them in the worker).
Each stream keeps its own recurrent state and the last 64 samples of audio it heard
(:class:`SileroStream`); nothing here knows about sessions. The model file is bundled
(``stt_service/models``, MIT licence).
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

FRAME = 512  # samples at 16 kHz: 32 ms
CONTEXT = 64  # samples of the previous frame the network sees with each frame
FRAME_MS = 32
MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "silero_vad_v6_16k.onnx"
_STATE = (2, 1, 128)
_SAMPLE_RATE = np.array(16000, dtype=np.int64)

Float32Array = npt.NDArray[np.float32]


class SileroError(RuntimeError):
    """The model cannot be loaded; ``str()`` says which file and why, in one line."""


class SileroStream:
    """One audio stream's recurrent state (the next frame's input is built by the caller)."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: Float32Array = np.zeros(_STATE, dtype=np.float32)

    def reset(self) -> None:
        self.state = np.zeros(_STATE, dtype=np.float32)


class SileroModel:
    """The network, loaded once per process and shared by every session (onnxruntime sessions
    may be run from several threads). Counts its calls and frames, so batch sizes can be read."""

    def __init__(self, path: Path | str = MODEL_PATH) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a base dependency
            raise SileroError(f"STT_VAD=silero needs onnxruntime: {exc}") from None
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        try:
            self._session: Any = ort.InferenceSession(
                str(path), providers=["CPUExecutionProvider"], sess_options=opts
            )
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SileroError(f"cannot load the Silero VAD model {path}: {reason}") from None
        self.path = Path(path)
        self.calls = 0
        self.frames = 0

    def probabilities(
        self, streams: Sequence[SileroStream], inputs: Sequence[Float32Array]
    ) -> Float32Array:
        """Speech probability of one frame per stream, in one call; each stream's state moves on.

        ``inputs[i]``: ``CONTEXT + FRAME`` float samples in [-1, 1] (the previous frame's last 64
        samples, then the frame)."""
        n = len(streams)
        x = np.stack(inputs) if n > 1 else inputs[0].reshape(1, -1)
        state = streams[0].state if n == 1 else np.concatenate([s.state for s in streams], axis=1)
        out, new = self._session.run(None, {"input": x, "state": state, "sr": _SAMPLE_RATE})
        for i, s in enumerate(streams):
            s.state = new[:, i : i + 1, :]
        self.calls += 1
        self.frames += n
        return np.asarray(out, dtype=np.float32).reshape(n)

    @property
    def mean_batch(self) -> float:
        return self.frames / self.calls if self.calls else 0.0


@functools.cache
def shared_model(path: str = str(MODEL_PATH)) -> SileroModel:
    """The process's one copy of the model (loaded on first use; raises :class:`SileroError`)."""
    model = SileroModel(path)
    log.debug("Silero VAD loaded from %s", path)
    return model
