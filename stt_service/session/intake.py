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
import logging
from collections import deque
from dataclasses import replace

import numpy as np

from ..audio import TARGET_RATE, AudioNormalizer, FrameSplitter, Int16Array
from ..speech.echo import MAX_LEAD_S, EchoCanceller
from ..speech.vad import FrameInfo, VoiceDetector
from .actions import Action, Measure
from .config import SessionConfig

log = logging.getLogger(__name__)


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
        # the agent's playback taken back out of the microphone: from the first ``playback``
        self.echo: EchoCanceller | None = None
        self._mic = FrameSplitter(config.frame_samples)  # the microphone's own, echo and all
        self._cancelled: deque[Int16Array] = deque()  # beside the detector's frames

    def set_format(self, sample_rate: int, channels: int) -> None:
        """The ``start``'s audio format (before any chunk)."""
        self.normalizer = AudioNormalizer(sample_rate, channels)

    def samples_of(self, pcm: bytes) -> int:
        """How many 16 kHz samples ``pcm`` (in the session's format) makes."""
        n = self.normalizer
        return len(pcm) // (2 * n.channels) * TARGET_RATE // n.sample_rate

    def playback(self, pcm: bytes, sample_rate: int | None, now: float) -> str | None:
        """A ``playback``: the echo reference (see :mod:`..speech.echo`). What to tell the
        client (None: nothing) when it had to be resynchronised, too far ahead of the
        microphone."""
        if self.echo is None:
            self.echo = EchoCanceller(self._received)
            rest = self.splitter.take_rest()  # both streams start with what waits for a frame
            self.splitter.push(rest)
            self._mic.push(rest.copy())
            log.info("echo reference: the first playback; echo cancellation on")
        echo = self.echo
        rate = sample_rate or self.normalizer.sample_rate
        ahead = echo.reference.ahead_s(echo.received)
        if not echo.reference.add(pcm, rate, echo.received, now):
            return None
        message = (
            f"playback: the reference ran {ahead:.1f} s ahead of the microphone (over "
            f"{MAX_LEAD_S:.0f} s); resynchronised: this playback is taken as playing now, the "
            "earlier reference not yet played is dropped. Send playback as it is played"
        )
        log.warning("%s", message)
        return message

    @property
    def _received(self) -> int:
        """16 kHz samples out of the normaliser so far."""
        return self.queued + self.splitter.pending

    def push(self, pcm: bytes, now: float) -> None:
        """A chunk: its whole frames go to the voice detector (:meth:`ready` takes them back)."""
        self.chunks += 1
        self.started = True
        n = self.normalizer
        self.due_at = max(self.due_at, now) + len(pcm) / (2 * n.channels * n.sample_rate)
        x = n.push(pcm)
        if self.echo is not None and self.chunks == 1:
            # the chunk arrives as its audio ends: the microphone began one chunk earlier
            self.echo.reference.first_chunk(now - x.size / TARGET_RATE)
        frames, mics = self._split(x)
        if frames:
            self.queued += sum(f.size for f in frames)
            self._arrivals.append((self.queued, now))
        self._detect(frames, mics)

    def _split(
        self, x: Int16Array, last: bool = False
    ) -> tuple[list[Int16Array], list[Int16Array]]:
        """Whole frames of ``x`` (cancelled, with echo cancellation on) and the microphone's
        own frames beside them (none without it); ``last``: the stream ends, its last short
        frame too."""
        mics: list[Int16Array] = []
        if self.echo is not None:
            x, mic = self.echo.push(x)
            if last:
                rest = self.echo.flush()
                x, mic = np.concatenate([x, rest]), np.concatenate([mic, rest])
            mics = self._mic.push(mic)
            if last and (f := self._mic.flush()) is not None:
                mics.append(f)
        frames = self.splitter.push(x)
        if last and (f := self.splitter.flush()) is not None:
            frames.append(f)
        return frames, mics

    def _detect(self, frames: list[Int16Array], mics: list[Int16Array]) -> None:
        """The voice detector hears the frames (with echo cancellation on: the microphone's own
        beside them, and :meth:`ready` hands the cancelled ones back)."""
        if self.echo is None:
            for frame in frames:
                self.detector.push(frame)
            return
        for frame, mic in zip(frames, mics, strict=True):
            self.detector.push(mic)
            self._cancelled.append(frame)

    def ready(self, inline: bool) -> list[tuple[Int16Array, FrameInfo]]:
        """The frames whose verdict is known, oldest first; ``inline``: run the network for the
        waiting ones first (else the worker's batcher runs it for many sessions)."""
        if inline:
            self.detector.resolve_inline()
        frames = self.detector.ready()
        if self.echo is None:
            return frames
        at = self.heard  # the session takes these frames, in order, before it asks again
        for i, (frame, info) in enumerate(frames):
            if self._cancelled:
                frame = self._cancelled.popleft()
            if info.voiced and not self.echo.voice(at, frame.size):
                info = replace(info, voiced=False)
                self.echo.suppressed_frames += 1
            frames[i] = (frame, info)
            at += frame.size
        return frames

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
        self._mic.take_rest()
        offset = self.heard
        self.heard += rest.size
        self.queued += rest.size
        return rest, offset

    def drain(self) -> list[tuple[Int16Array, FrameInfo]]:
        """The session closes: everything received, a last short frame too, decided now."""
        if self.started:
            frames, mics = self._split(self.normalizer.flush(), last=True)
            self.queued += sum(f.size for f in frames)
            self._detect(frames, mics)
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
