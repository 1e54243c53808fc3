"""Voice activity: is this 16 kHz frame someone speaking?

Two detectors, chosen by ``STT_VAD``; the session core reads both through :class:`VoiceDetector`.

- ``silero`` (the default): Silero VAD v6, a small neural network (:mod:`.silero`) that
  gives each 32 ms frame a speech probability. It calls loud pink, brown and white noise, mains hum,
  music, typing and clicks non-speech, where webrtcvad calls nearly every frame of them speech. A
  cheap gate runs first: a frame quieter than ``GATE_FLOOR_DB`` or that webrtcvad does not call
  speech (and none in the last ``GATE_HANG`` frames was) is silence without running the network,
  so quiet sessions cost nothing. A frame is *voiced* at a probability of ``threshold`` or more,
  and stays voiced down to ``threshold - 0.15`` once voiced (Silero's own hysteresis).
- ``webrtc`` (the detector before it, kept for comparison): a frame is voiced when webrtcvad calls
  it speech, it is louder than an absolute floor and it is periodic in the human pitch range (a
  normalised autocorrelation peak between 70 and 400 Hz). It keeps white noise and clicks out but
  not pink or brown noise, hum or music.

Silero's frames wait for the network: :meth:`VoiceDetector.push` queues a frame, the network runs
either at once (:meth:`VoiceDetector.resolve_inline`, batch 1) or for many sessions in one call
(:func:`resolve`, which the worker's batcher uses), and :meth:`VoiceDetector.ready` hands the
frames back in order with their verdicts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import numpy as np
import numpy.typing as npt
import webrtcvad

from ..audio import TARGET_RATE, Int16Array, rms_dbfs
from .silero import CONTEXT, FRAME, Float32Array, SileroModel, SileroStream

ENERGY_FLOOR_DB = -55.0
PERIODICITY_THRESHOLD = 0.45
_MIN_LAG = TARGET_RATE // 400  # 400 Hz
_MAX_LAG = TARGET_RATE // 70  # 70 Hz
_ANALYSIS = 640  # 40 ms of context for the pitch search


@dataclass(frozen=True, slots=True)
class FrameInfo:
    vad: bool  # webrtcvad's verdict (above the energy floor); for silero, whether the gate was open
    voiced: bool  # the detector's verdict: someone is speaking
    energy_db: float
    periodicity: float = 0.0  # webrtc detector: the pitch-range autocorrelation peak
    probability: float = 0.0  # silero: the network's speech probability (0 when gated out)


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
    """The ``webrtc`` detector's test: webrtcvad + energy + periodicity, one frame at a time."""

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
        voiced = p >= PERIODICITY_THRESHOLD
        return FrameInfo(True, voiced, energy, p, float(voiced))


# --- the detectors, as the session core sees them -------------------------------------------------
GATE_FLOOR_DB = -60.0  # quieter frames are silence without asking the network
GATE_HANG = 8  # frames the network keeps running after the gate's last "speech" (256 ms)
RESET_AFTER = 16  # frames without the network after which it starts afresh (512 ms)
HYSTERESIS = 0.15  # once voiced, a frame stays voiced down to threshold - this
_UNHEARD = FrameInfo(False, False, -120.0)  # a frame no detector looked at


class VoiceDetector(Protocol):
    """One session's voice detector: frames in, the same frames out in order with verdicts."""

    frame_samples: int
    # False: no verdict is wanted (the backend finds turns and no barge-in is possible): frames
    # pass as silence at no cost
    needed: bool

    def push(self, frame: Int16Array) -> None:
        """Queue the next frame of the session's 16 kHz audio (``frame_samples`` long)."""

    @property
    def waiting(self) -> bool:
        """Some queued frame waits for the network (see :func:`resolve`)."""

    def resolve_inline(self) -> None:
        """Run the network now for every waiting frame of this session alone."""

    def ready(self) -> list[tuple[Int16Array, FrameInfo]]:
        """The queued frames whose verdict is known, oldest first, up to the first waiting one."""

    def reset(self) -> None:
        """Forget the audio heard (a new stream starts)."""


class WebrtcDetector:
    """``STT_VAD=webrtc``: :class:`FrameClassifier`, which decides each frame at once."""

    def __init__(self, aggressiveness: int, frame_samples: int) -> None:
        self.frame_samples = frame_samples
        self._aggressiveness = aggressiveness
        self._classifier = FrameClassifier(aggressiveness, frame_samples)
        self._ready: list[tuple[Int16Array, FrameInfo]] = []
        self.needed = True

    def push(self, frame: Int16Array) -> None:
        info = self._classifier.classify(frame) if self.needed else _UNHEARD
        self._ready.append((frame, info))

    @property
    def waiting(self) -> bool:
        return False

    def resolve_inline(self) -> None:
        return None

    def ready(self) -> list[tuple[Int16Array, FrameInfo]]:
        out, self._ready = self._ready, []
        return out

    def reset(self) -> None:
        self._classifier = FrameClassifier(self._aggressiveness, self.frame_samples)
        self._ready.clear()


class _Frame:
    __slots__ = ("energy", "gate", "input", "prob", "samples")

    def __init__(
        self,
        samples: Int16Array,
        energy: float,
        gate: bool,
        inp: Float32Array | None,
        prob: float | None,
    ) -> None:
        self.samples = samples
        self.energy = energy
        self.gate = gate
        self.input = inp  # the network's input, when it must run
        self.prob = prob  # None until the network answered


class SileroDetector:
    """``STT_VAD=silero``: the gate, then the network, then the hysteresis (see the module)."""

    frame_samples = FRAME

    def __init__(
        self, model: SileroModel, *, threshold: float = 0.5, aggressiveness: int = 2
    ) -> None:
        self.model = model
        self.threshold = threshold
        self.stream = SileroStream()
        self._aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)
        self._frames: deque[_Frame] = deque()  # queued, not handed back yet
        self._todo: deque[_Frame] = deque()  # of those, the ones the network has not run on
        self._tail: Float32Array = np.zeros(CONTEXT, dtype=np.float32)
        self._hang = 0  # frames the network still runs after the gate's last "speech"
        self._off = RESET_AFTER  # frames since the network last ran
        self._voiced = False
        self.network_frames = 0  # frames the network ran on (the gate let them through)
        self.frames = 0
        self.needed = True

    def push(self, frame: Int16Array) -> None:
        self.frames += 1
        if not self.needed:
            self._frames.append(_Frame(frame, _UNHEARD.energy_db, False, None, 0.0))
            self._tail = frame[-CONTEXT:].astype(np.float32) * np.float32(1 / 32768)
            self._hang = 0
            self._off += 1
            return
        energy = rms_dbfs(frame)
        gate = energy >= GATE_FLOOR_DB and self._vad.is_speech(frame[:480].tobytes(), TARGET_RATE)
        if gate:
            self._hang = GATE_HANG
        run = gate or self._hang > 0
        if not gate and self._hang > 0:
            self._hang -= 1
        x = frame.astype(np.float32) * np.float32(1 / 32768)
        if run:
            if self._off >= RESET_AFTER:
                # the network starts afresh after a long gap: a state left by earlier speech
                # calls the breath before the next words speech, and a replay after a failover
                # (which starts in such a gap) must hear what the first owner heard. After a
                # short gap it goes on: fresh, it calls the abrupt return of loud music speech
                self.stream.reset()
            self._off = 0
            item = _Frame(frame, energy, gate, np.concatenate((self._tail, x)), None)
            self._todo.append(item)
            self.network_frames += 1
        else:
            self._off += 1
            item = _Frame(frame, energy, gate, None, 0.0)
        self._frames.append(item)
        self._tail = x[-CONTEXT:]

    @property
    def waiting(self) -> bool:
        return bool(self._todo)

    def next_input(self) -> Float32Array:
        """The input of the oldest frame waiting for the network (only while :attr:`waiting`)."""
        inp = self._todo[0].input
        assert inp is not None
        return inp

    def answer(self, probability: float) -> None:
        """The network's probability for the frame :meth:`next_input` gave."""
        item = self._todo.popleft()
        item.prob = probability
        item.input = None

    def resolve_inline(self) -> None:
        resolve(self.model, [self])

    def ready(self) -> list[tuple[Int16Array, FrameInfo]]:
        out: list[tuple[Int16Array, FrameInfo]] = []
        frames = self._frames
        while frames and frames[0].prob is not None:
            item = frames.popleft()
            p = item.prob
            assert p is not None
            floor = self.threshold - HYSTERESIS if self._voiced else self.threshold
            self._voiced = p >= floor
            out.append((item.samples, FrameInfo(item.gate, self._voiced, item.energy, 0.0, p)))
        return out

    def reset(self) -> None:
        self.stream.reset()
        self._frames.clear()
        self._todo.clear()
        self._tail = np.zeros(CONTEXT, dtype=np.float32)
        self._hang = 0
        self._off = RESET_AFTER
        self._voiced = False


def resolve(model: SileroModel, detectors: Sequence[SileroDetector]) -> int:
    """Run the network for every waiting frame of these detectors: one call per round, each round
    the oldest waiting frame of every detector that has one (a stream's frames go in order: each
    needs the state the one before it left). Returns the number of calls."""
    calls = 0
    group = [d for d in detectors if d.waiting]
    while group:
        probs = model.probabilities([d.stream for d in group], [d.next_input() for d in group])
        for d, p in zip(group, probs, strict=True):
            d.answer(float(p))
        calls += 1
        group = [d for d in group if d.waiting]
    return calls


def resolve_all(detectors: Sequence[VoiceDetector]) -> tuple[int, int]:
    """Decide every waiting frame of these detectors, Silero's in shared calls (:func:`resolve`).
    Returns (network calls, frames decided by the network)."""
    calls = frames = 0
    groups: dict[int, tuple[SileroModel, list[SileroDetector]]] = {}
    for d in detectors:
        if isinstance(d, SileroDetector):
            if d.waiting:
                groups.setdefault(id(d.model), (d.model, []))[1].append(d)
        else:
            d.resolve_inline()
    for model, group in groups.values():
        before = model.frames
        calls += resolve(model, group)
        frames += model.frames - before
    return calls, frames
