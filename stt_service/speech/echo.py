"""Echo cancellation: the agent's own voice, taken back out of one session's microphone.

A client that plays the agent's speech to the user sends it as ``playback`` (the contract's echo
reference), paced as it is played, between its microphone ``chunk``s. Two parts:

- :class:`Reference` puts the playback on the microphone's clock. A playback is taken as playing
  from the moment it arrives: it starts where the microphone's audio received so far ends, or
  right after the playback before it when that is still ahead (a client may send a little ahead;
  the canceller finds delays of 0-500 ms, so a reference up to a chunk early is aligned). Where
  no playback covers the microphone, the reference is silence. A reference more than
  ``MAX_LEAD_S`` ahead of the microphone (a microphone that stalled, a client that sent a whole
  reply at once) is resynchronised: the newest playback is taken as playing now, the rest dropped
  (:attr:`Reference.resyncs`; the session logs it). Playback that arrives before the microphone's
  first chunk is placed by the wall clock: what has been played by then is dropped.
- :class:`EchoCanceller` runs WebRTC's AEC3 (the canceller in Chrome, through ``pywebrtc-audio``)
  over the microphone in 10 ms blocks with the reference beside them: the recognizer hears what
  it leaves. It runs from the session's first playback to its end (AEC3 keeps learning the echo
  path), and costs nothing in a session that never sends one.

  The voice detector hears the microphone itself, not the cancelled signal: in double talk AEC3's
  suppressor chops the user's words into 10-30 ms pieces, and Silero heard them 250-1,000 ms late
  or never (measured: 5 of 5 heard at +6 dB, 3 of 5 at -6 dB). Instead the canceller says which
  blocks the reference *explains*: while the agent was heard in the last ``ECHO_TAIL_MS``, a
  block the canceller took more than ``EXPLAINED_DB`` out of, or left at the room's noise floor,
  is echo (the user's voice over the agent keeps most of its level through AEC3: 2-6 dB less at
  user-to-echo ratios of +6 to -6 dB). :meth:`EchoCanceller.voice` calls a voiced frame made
  mostly of such blocks no voice, and while the agent is audible counts voice only from the
  ``RUN``-th unexplained voiced frame in a row (the ``RUN_CONVERGING``-th in the first 2 s of
  the agent's sound, while AEC3 converges): residual echo neither interrupts nor becomes a
  transcript, mostly (on a loudspeaker clipped hard at 0-3 dB echo return loss some residual
  still gets through: ``bench/echo.py``). During double talk AEC3's suppressor also takes much
  of the user's voice out of what the recognizer hears (see docs/benchmarks.md#echo).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from pywebrtc_audio import EchoCanceller as _Aec3

from ..audio import EMPTY, TARGET_RATE, AudioNormalizer, Int16Array

BLOCK = TARGET_RATE // 100  # AEC3 works in 10 ms blocks
DELAY = 128  # AEC3's output is its input 8 ms later (its band-split filters), measured
MAX_LEAD_S = 10.0  # a reference further ahead of the microphone than this is resynchronised
ECHO_TAIL_MS = 800  # the agent counts as audible this long after its last sound (echo + room)
EXPLAINED_DB = 15.0  # a block the canceller took this much out of, the agent audible, is echo
_SOUND_DB = -60.0  # a reference block louder than this is the agent's voice
_QUIET_DB = -65.0  # a microphone block quieter than this explains nothing (nothing to explain)
RUN = 4  # while the agent is audible, voice counts from its fourth unexplained frame in a row
# (3: a leak of 100 ms on a hard-clipped loudspeaker interrupted, 4 of 8 minutes; 4 costs 30 ms)
RUN_CONVERGING = 8  # ... and from the eighth while AEC3 is still learning the echo path:
CONVERGED_BLOCKS = 200  # its first 2 s of the agent's sound (a leak of 1-2 s measured there)
_DIGITAL_SILENCE_DB = -100.0
_FLOOR_RISE_DB = 0.05  # the noise floor follows a quieter block at once, a louder at 5 dB/s
_OVER_FLOOR_DB = 6.0  # a cancelled block within this of the noise floor holds no voice


def level_db(x: Int16Array) -> float:
    """RMS level in dB relative to full scale (-120 for silence)."""
    if x.size == 0:
        return -120.0
    ms = float(np.mean(np.square(x, dtype=np.float64)))
    return -120.0 if ms <= 0 else 10.0 * float(np.log10(ms / 32768.0**2))


def levels_db(x: Int16Array) -> list[float]:
    """:func:`level_db` of each whole 10 ms block of ``x``."""
    n = x.size // BLOCK
    blocks = x[: n * BLOCK].astype(np.float64).reshape(n, BLOCK)
    ms = np.mean(blocks * blocks, axis=1) / 32768.0**2
    result: list[float] = np.where(ms > 0, 10 * np.log10(np.maximum(ms, 1e-12)), -120.0).tolist()
    return result


class Reference:
    """The agent's playback on the microphone's clock (see the module docstring)."""

    def __init__(self) -> None:
        self._normalizer: AudioNormalizer | None = None
        self._buf: Int16Array = EMPTY
        self.start = 0  # the microphone sample that _buf[0] plays beside
        self.received_s = 0.0  # seconds of playback received
        self.messages = 0
        self.resyncs = 0
        self.dropped_s = 0.0  # seconds of reference dropped by resyncs and the pre-roll
        self._first_at: float | None = None  # wall clock of the first playback

    def add(self, pcm: bytes, sample_rate: int, mic_end: int, now: float) -> bool:
        """A ``playback`` at ``now``, the microphone having sent ``mic_end`` samples; True when
        the reference had to be resynchronised."""
        if self._normalizer is None or self._normalizer.sample_rate != sample_rate:
            # cubic, not the microphone's HQ filter: HQ holds 60 ms of each playback back, and
            # the canceller, taking the microphone as it comes, would lack that much reference
            self._normalizer = AudioNormalizer(sample_rate, 1, quality="QQ")
        x = self._normalizer.push(pcm)
        self.messages += 1
        self.received_s += x.size / TARGET_RATE
        if self._first_at is None:
            self._first_at = now
        end = self.start + self._buf.size
        if end <= mic_end:  # the agent was silent for a while: this plays from now
            self.start, self._buf = mic_end, x
            return False
        self._buf = np.concatenate([self._buf, x])
        if end - mic_end > MAX_LEAD_S * TARGET_RATE:
            self.resyncs += 1
            self.dropped_s += (self._buf.size - x.size) / TARGET_RATE
            self.start, self._buf = mic_end, x
            return True
        return False

    def first_chunk(self, began: float) -> None:
        """The microphone's first chunk arrived, its audio recorded from ``began`` (wall clock):
        playback sent before that has been playing since it arrived, so what was already played
        by then is no reference for the microphone's audio."""
        if self._first_at is None or self.start != 0:
            return
        played = min(self._buf.size, max(0, int((began - self._first_at) * TARGET_RATE)))
        self._buf = self._buf[played:]
        self.dropped_s += played / TARGET_RATE

    def take(self, start: int, n: int) -> Int16Array:
        """The reference beside microphone samples ``[start, start + n)`` (silence where none);
        what lies before ``start + n`` is then forgotten."""
        out = np.zeros(n, dtype=np.int16)
        lo, hi = max(start, self.start), min(start + n, self.start + self._buf.size)
        if hi > lo:
            out[lo - start : hi - start] = self._buf[lo - self.start : hi - self.start]
        keep = max(0, start + n - self.start)
        if keep:
            self._buf = self._buf[keep:]
            self.start += keep
        return out

    def ahead_s(self, mic_end: int) -> float:
        """How far the reference reaches past the microphone's audio, in seconds."""
        return max(0, self.start + self._buf.size - mic_end) / TARGET_RATE


class EchoCanceller:
    """AEC3 over one session's microphone, from the sample ``begin`` on (see the module
    docstring). :meth:`push` takes 16 kHz samples and returns the cancelled ones, whole 10 ms
    blocks only (the rest waits for the next push, or :meth:`flush`)."""

    def __init__(self, begin: int) -> None:
        self._aec = _Aec3(sample_rate=TARGET_RATE, num_channels=1)
        self.reference = Reference()
        self._pending: Int16Array = EMPTY
        self._last = np.zeros(DELAY, dtype=np.int16)  # the input's last DELAY samples
        self._at = begin  # the microphone sample _pending[0] is
        self._heard_until = -(10**9)  # the microphone sample until which the agent is audible
        self.floor_db = 0.0  # the cancelled signal's noise floor: its quietest blocks lately
        # (first sample, explained) of recent blocks, oldest first
        self._blocks: deque[tuple[int, bool]] = deque(maxlen=4096)
        self.blocks = 0
        self.explained_blocks = 0
        self.suppressed_frames = 0  # voiced frames the reference explained (set by the intake)
        self.agent_blocks = 0  # blocks in which the agent's playback sounded
        self._run = 0  # voiced frames in a row the reference did not explain, up to _run_end
        self._run_end = -1

    @property
    def received(self) -> int:
        """Microphone samples pushed so far (where the next playback starts)."""
        return self._at + self._pending.size

    def push(self, mic: Int16Array) -> tuple[Int16Array, Int16Array]:
        """The cancelled samples of whole blocks, and the microphone's own beside them (the
        same samples, as late as the canceller's output is)."""
        x = np.concatenate([self._pending, mic]) if self._pending.size else mic
        whole = x.size - x.size % BLOCK
        self._pending = x[whole:]
        if whole == 0:
            return EMPTY, EMPTY
        near = np.ascontiguousarray(x[:whole], dtype=np.int16)
        far = self.reference.take(self._at, whole)
        out: Int16Array = self._aec.process(near, far)
        lined = np.concatenate([self._last, near])  # the input each output sample comes from
        self._last = lined[-DELAY:]
        tail = ECHO_TAIL_MS * TARGET_RATE // 1000
        starts = self._at + np.arange(0, whole, BLOCK)
        far_db, mic_db, out_db = (levels_db(x) for x in (far, lined[:whole], out))
        for start, f, m, o in zip(starts.tolist(), far_db, mic_db, out_db, strict=True):
            if f > _SOUND_DB:
                self._heard_until = start + BLOCK + tail
                self.agent_blocks += 1
            if o > _DIGITAL_SILENCE_DB:  # (zeros are no room: the canceller's first 8 ms)
                self.floor_db = min(o, self.floor_db + _FLOOR_RISE_DB)
            explained = (
                start < self._heard_until
                and m > _QUIET_DB
                and o < max(m - EXPLAINED_DB, self.floor_db + _OVER_FLOOR_DB)
            )
            self._blocks.append((start, explained))
            self.explained_blocks += explained
        self.blocks += starts.size
        self._at += whole
        return out, lined[:whole]

    def flush(self) -> Int16Array:
        """The session ends: the samples short of a block, and those in the canceller's delay,
        as they are (under 20 ms)."""
        rest = np.concatenate([self._last, self._pending])
        self._pending = EMPTY
        self._at += rest.size - DELAY
        return rest

    def audible(self, sample: int) -> bool:
        """The agent's playback could be heard (as echo) at microphone sample ``sample``."""
        return sample < self._heard_until

    def voice(self, start: int, n: int) -> bool:
        """Whether a frame the voice detector called speech (microphone samples ``[start, start
        + n)``) may be the user's: the reference does not explain it and, while the agent is
        audible, the ``RUN - 1`` voiced frames before it were not explained either
        (``RUN_CONVERGING - 1`` in the canceller's first 2 s of the agent's sound). AEC3's
        suppressor lets the first 20-100 ms of the agent's words through after a pause or on a
        clipping loudspeaker: alone, such a leak is no voice."""
        if self.explains(start, n):
            self._run = 0
            return False
        self._run = self._run + 1 if start == self._run_end else 1
        self._run_end = start + n
        if not self.audible(start):
            return True
        return self._run >= (RUN if self.agent_blocks >= CONVERGED_BLOCKS else RUN_CONVERGING)

    def explains(self, start: int, n: int) -> bool:
        """Most of the blocks in microphone samples ``[start, start + n)`` are echo."""
        hits = total = 0
        for b, explained in reversed(self._blocks):
            if b + BLOCK <= start:
                break
            if b < start + n:
                total += 1
                hits += explained
        return total > 0 and 2 * hits > total
