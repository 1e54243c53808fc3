"""Audio in: a session's chunks become 16 kHz frames with the voice detector's verdicts.

:class:`Intake` owns everything about the audio a session has received: its format (the
``start``'s rate and channels, resampled and downmixed to 16 kHz mono), the frames it is cut
into, the voice detector that hears them, and two clocks:

- **audio time**: every 16 kHz sample has an index. ``queued`` counts the samples handed to the
  detector, ``heard`` those it has decided and the session has taken; utterance boundaries,
  silence and ``audio_start``/``audio_end`` are counted in these, so a client streaming faster or
  slower than real time gets the same utterances;
- **arrival time**: when the chunk holding a given sample reached the session (:meth:`arrival`),
  what every latency is measured from; and when the audio received so far would have finished
  playing (``due_at``): a real-time client's next chunk is due then, so a slow or jittery client
  is not mistaken for one that stopped.
"""

from __future__ import annotations

import bisect
from collections import deque

import numpy as np

from ..audio import TARGET_RATE, AudioNormalizer, FrameSplitter, Int16Array
from ..speech.vad import FrameInfo, VoiceDetector
from .actions import Action, Measure
from .config import SessionConfig


class Intake:
    """One session's audio, from chunks to decided frames (see the module docstring)."""

    def __init__(self, config: SessionConfig, now: float) -> None:
        self.normalizer = AudioNormalizer(TARGET_RATE, 1)
        self.splitter = FrameSplitter(config.frame_samples)
        self.detector: VoiceDetector = config.detector()
        self.started = False  # a chunk was received
        self.chunks = 0
        self.queued = 0  # 16 kHz samples handed to the voice detector (heard, or about to be)
        self.heard = 0  # 16 kHz samples the session has taken, decided
        self.last_voice = 0  # the sample after the last voiced frame
        self.due_at = now
        # (samples queued after a chunk, when it arrived): when did a given sample reach us
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=4096)

    def set_format(self, sample_rate: int, channels: int) -> None:
        """The ``start``'s audio format (before any chunk)."""
        self.normalizer = AudioNormalizer(sample_rate, channels)

    def samples_of(self, pcm: bytes) -> int:
        """How many 16 kHz samples ``pcm`` (in the session's format) makes."""
        n = self.normalizer
        return len(pcm) // (2 * n.channels) * TARGET_RATE // n.sample_rate

    def push(self, pcm: bytes, now: float) -> None:
        """A chunk: its whole frames go to the voice detector (:meth:`ready` takes them back)."""
        self.chunks += 1
        self.started = True
        n = self.normalizer
        self.due_at = max(self.due_at, now) + len(pcm) / (2 * n.channels * n.sample_rate)
        frames = self.splitter.push(n.push(pcm))
        if frames:
            self.queued += sum(f.size for f in frames)
            self._arrivals.append((self.queued, now))
        for frame in frames:
            self.detector.push(frame)

    def ready(self, inline: bool) -> list[tuple[Int16Array, FrameInfo]]:
        """The frames whose verdict is known, oldest first; ``inline``: run the network for the
        waiting ones first (else the worker's batcher runs it for many sessions)."""
        if inline:
            self.detector.resolve_inline()
        return self.detector.ready()

    @property
    def waiting(self) -> bool:
        """Frames wait for the voice detector's network."""
        return self.detector.waiting

    def take(self, frame: Int16Array, info: FrameInfo) -> int:
        """The session takes the next decided frame: its first sample's index."""
        offset = self.heard
        self.heard += frame.size
        if info.voiced:
            self.last_voice = self.heard
        return offset

    def take_rest(self) -> tuple[Int16Array, int]:
        """The samples of a frame not yet whole, taken as they are (a backend that finds turns
        is told to end one: every sample heard goes first), and their first sample's index."""
        rest = self.splitter.take_rest()
        offset = self.heard
        self.heard += rest.size
        self.queued += rest.size
        return rest, offset

    def drain(self) -> list[tuple[Int16Array, FrameInfo]]:
        """The session closes: everything received, a last short frame too, decided now."""
        if self.started:
            frames = self.splitter.push(self.normalizer.flush())
            last = self.splitter.flush()
            if last is not None:
                frames.append(last)
            for frame in frames:
                self.queued += frame.size
                self.detector.push(frame)
        return self.ready(inline=True)

    def speaking(self, within_s: float) -> bool:
        """The last voiced frame is less than ``within_s`` of audio ago."""
        return (self.heard - self.last_voice) < within_s * TARGET_RATE

    def arrival(self, sample: int) -> float | None:
        """When the chunk holding session sample ``sample`` arrived (None: too long ago)."""
        i = bisect.bisect_left(self._arrivals, sample, key=lambda a: a[0])
        if i == len(self._arrivals) or (i == 0 and sample < self._arrivals[0][0] - 48_000):
            return None
        return self._arrivals[i][1]

    def measure(self, name: str, sample: int, now: float, utterance: int = -1) -> list[Action]:
        """A :class:`Measure` from the arrival of ``sample`` to ``now`` (none if unknown)."""
        at = self.arrival(sample)
        return [] if at is None else [Measure(name, max(0.0, now - at), utterance)]

    def resume(self, heard: int, pending: int, sample_rate: int, channels: int) -> None:
        """A restored session's audio clock (see :mod:`.snapshot`): ``heard`` samples so far, of
        which ``pending`` wait for the next whole frame (zeros stand in for them, so the frames
        keep their places)."""
        self.heard = self.queued = self.last_voice = heard
        self.splitter.push(np.zeros(pending, dtype=np.int16))
        self.normalizer = AudioNormalizer(sample_rate, channels)
