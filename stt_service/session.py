"""The per-session state machine, sans-I/O.

``Session.handle(message, now)``, ``Session.on_event(event, now)`` and ``Session.tick(now)`` take
messages, recognizer events and time, and return :data:`Action` lists: publish a message, send
audio to the recognizer stream, end an utterance, reconfigure, close. Nothing here touches NATS,
asyncio or the clock; ``now`` is epoch seconds supplied by the caller.

Audio time: every 16 kHz sample the session has heard has an index (``offset``). Utterance
boundaries, silence and ``audio_start``/``audio_end`` are counted in these samples, so a client
streaming faster or slower than real time gets the same utterances.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .audio import TARGET_RATE, AudioNormalizer, FrameSplitter, Int16Array
from .backends.base import (
    EndpointHint,
    RecognitionError,
    RecognitionEvent,
    StreamEvent,
    StreamParams,
)
from .bargein import DEFAULT_BACKCHANNELS, Backchannels, BargeIn, Cancel, Decision
from .config import Settings, comma_list
from .endpoint import Endpointer, EndpointEvent
from .interrupt import SURE, InterruptDetector
from .protocol import (
    Chunk,
    Code,
    Configure,
    End,
    Finalize,
    Inbound,
    Start,
    State,
    StateChange,
    error_message,
    interrupt_cancelled_message,
    interrupt_message,
    transcript_message,
)
from .silero import FRAME_MS, shared_model
from .smartturn import WINDOW as TURN_WINDOW
from .turns import TurnJudge, TurnStep
from .vad import FrameInfo, SileroDetector, VoiceDetector, WebrtcDetector

log = logging.getLogger(__name__)

# A finished sentence ends its utterance early only after this much quiet: frames this far below
# the utterance's loudest voiced frame. The VAD's voicing test calls a fricative ("sh", "s", "f")
# silence, and a decode of the pause inside "selfish" reads as a finished "...selfi."; the quiet
# test tells them apart (the "sh" is 5-20 dB below the voice, the pause after a sentence 25+).
QUIET_BELOW_PEAK_DB = 22.0
QUIET_MS = 150
# Inside an utterance, a voiced frame this far below its loudest is not the speaker going on: a
# breath 33 dB down after "...for them" restarted speech and threw away the pause's decode. The
# last voiced frame of "was" in 8 kHz telephone audio is 28 dB down and must still count.
VOICE_BELOW_PEAK_DB = 30.0
# A session's first half second never interrupts: with no audio before it, Silero calls the
# abrupt start of loud hum or music speech for up to 0.45 s (utterances still start there, so
# speech at the very start is transcribed whole).
INTERRUPT_WARMUP = TARGET_RATE // 2


# --- actions --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Publish:
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendAudio:
    samples: Int16Array
    offset: int
    utterance: int


@dataclass(frozen=True, slots=True)
class EndUtterance:
    utterance: int
    until: int | None = None


@dataclass(frozen=True, slots=True)
class Speculate:
    """The speaker paused: decode ``utterance`` so far now (see ``RecognizerStream.speculate``)."""

    utterance: int


@dataclass(frozen=True, slots=True)
class PredictTurn:
    """Ask the end-of-turn model whether the turn is complete: ``audio`` is its last 8 s (16 kHz,
    up to now); the answer goes back through :meth:`Session.turn_verdict` with ``seq``."""

    utterance: int
    seq: int
    audio: Int16Array


@dataclass(frozen=True, slots=True)
class Reconfigure:
    params: StreamParams


@dataclass(frozen=True, slots=True)
class Close:
    reason: str


@dataclass(frozen=True, slots=True)
class Measure:
    """A latency the user feels, for metrics: ``final`` (end of speech to the final),
    ``first_partial`` (start of speech to the utterance's first partial) or ``interrupt``
    (speech onset while responding to the interrupt). Measured from when the audio in question
    reached the session to the ``now`` of the message it produced."""

    name: str
    seconds: float
    utterance: int = -1


Action = (
    Publish | SendAudio | EndUtterance | Speculate | PredictTurn | Reconfigure | Close | Measure
)


# --- configuration shared by all sessions of a worker ---------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionConfig:
    vad: str = "silero"  # the voice detector: "silero" (32 ms frames) or "webrtc"
    vad_threshold: float = 0.5  # silero: speech probability of a voiced frame
    webrtc_frame_ms: int = 30
    vad_enabled: bool = True
    vad_aggressiveness: int = 2
    hangover_s: float = 0.8
    eager_s: float = (
        0.0  # a pause this long is decoded; a finished sentence then ends the utterance
    )
    preroll_ms: int = 300
    trailing_ms: int = 300  # silence kept after the last voiced frame of an utterance
    max_utterance_samples: int = 256_000
    interrupt_enabled: bool = True
    interrupt_min_speech_ms: int = 60
    interrupt_min_words: int = 0  # >0: the interrupt waits for this many words (not backchannels)
    false_interrupt_timeout: float = 2.0  # an interrupt may be taken back this long after; 0: never
    backchannels: tuple[str, ...] = DEFAULT_BACKCHANNELS
    idle_timeout_s: float = 60.0
    max_session_s: float = 14_400.0
    service_endpointing: bool = True  # False: the backend finds turns itself; all audio is sent
    # the end-of-turn model (see stt_service.turns); off: silence and the eager endpoint end turns
    turn_model: bool = False
    turn_pause_s: float = 0.2
    turn_threshold: float = 0.5
    turn_max_pause_s: float = 2.0

    @classmethod
    def from_settings(cls, s: Settings, *, service_endpointing: bool = True) -> SessionConfig:
        return cls(
            vad=s.stt_vad,
            vad_threshold=s.stt_vad_threshold,
            webrtc_frame_ms=s.stt_vad_frame_ms,
            vad_enabled=s.stt_enable_vad,
            vad_aggressiveness=s.stt_vad_aggressiveness,
            hangover_s=s.stt_chunk_timeout,
            eager_s=s.stt_eager_endpoint,
            max_utterance_samples=s.max_utterance_samples,
            interrupt_enabled=s.stt_enable_interrupt_detection,
            interrupt_min_speech_ms=s.stt_interrupt_min_speech_ms,
            interrupt_min_words=s.stt_interrupt_min_words,
            false_interrupt_timeout=s.stt_false_interrupt_timeout,
            backchannels=comma_list(s.stt_backchannel_words),
            idle_timeout_s=s.stt_session_idle_timeout,
            max_session_s=s.stt_max_session_seconds,
            service_endpointing=service_endpointing,
            turn_model=s.stt_turn_model != "off" and s.stt_enable_vad and service_endpointing,
            turn_pause_s=s.stt_turn_pause_ms / 1000,
            turn_threshold=s.stt_turn_threshold,
            turn_max_pause_s=s.stt_turn_max_pause,
        )

    @property
    def frame_ms(self) -> int:
        """The voice detector's frame: Silero's 32 ms, or ``webrtc_frame_ms``."""
        return FRAME_MS if self.vad == "silero" else self.webrtc_frame_ms

    @property
    def frame_samples(self) -> int:
        return TARGET_RATE * self.frame_ms // 1000

    def detector(self) -> VoiceDetector:
        """A new session's voice detector (Silero's model is loaded once per process)."""
        if self.vad == "silero":
            return SileroDetector(
                shared_model(), threshold=self.vad_threshold, aggressiveness=self.vad_aggressiveness
            )
        return WebrtcDetector(self.vad_aggressiveness, self.frame_samples)


@dataclass(slots=True)
class _Utterance:
    index: int
    start: int  # first sample (session index)
    samples: int = 0  # sent + held
    voiced_frames: int = 0
    speculated: bool = False  # decoded at a pause, with its trailing silence sent
    peak_db: float = -120.0  # the loudest voiced frame so far
    quiet_frames: int = 0  # consecutive frames, up to now, far below ``peak_db``
    finished: bool = False  # the decode of this pause reads as a finished sentence
    # the turn's last 8 s of audio, for the end-of-turn model (kept only when it is on)
    audio: deque[Int16Array] = field(default_factory=deque)
    # (frame end sample, dB, voiced) of every frame, to find the quietest cut point
    frames: list[tuple[int, float, bool]] = field(default_factory=list)


class Session:
    """One client session: audio in, actions out."""

    def __init__(self, session_id: str, config: SessionConfig, now: float) -> None:
        self.id = session_id
        self.config = config
        self.state: State = "listening"
        self.speaker_id: str | None = None
        self.params = StreamParams(session_id=session_id)
        self.started_explicitly = False
        self.closed = False
        self.sequence = 0
        self.opened_at = now
        self.last_message_at = now
        # when the audio delivered so far would have finished playing: a real-time client's next
        # chunk is due then, so a slow or jittery client is not mistaken for one that stopped
        self.audio_due_at = now
        self.samples_heard = 0  # 16 kHz samples that went through the VAD
        self._queued = 0  # 16 kHz samples handed to the voice detector (heard, or about to be)
        self._last_voice = 0  # the sample after the last voiced frame
        self.chunks = 0
        self.interrupts = 0

        self._normalizer = AudioNormalizer(16000, 1)
        self._audio_started = False
        fs = config.frame_samples
        self._splitter = FrameSplitter(fs)
        self._detector = config.detector()
        # True when the worker runs the network for many sessions at once (it then calls
        # voice_ready()); False: each chunk's frames are decided before handle() returns
        self.batched = False
        # messages that arrived while frames before them waited for the network: handled in
        # order once those frames are decided, so a finalize or a state change lands where it was
        self._inbox: deque[tuple[Inbound, float]] = deque()
        self._inbox_samples = 0
        self._barge = BargeIn(
            min_words=config.interrupt_min_words,
            false_timeout=config.false_interrupt_timeout,
            backchannels=Backchannels(config.backchannels),
        )
        self.cancelled_interrupts = 0
        self._voice_needed()
        # with the end-of-turn model, the judge ends utterances; the endpointer only starts them
        self._turns: TurnJudge | None = None
        if config.turn_model:
            self._turns = TurnJudge(
                frame_ms=config.frame_ms,
                pause_ms=config.turn_pause_s * 1000,
                threshold=config.turn_threshold,
                timeout_ms=config.hangover_s * 1000,
                max_pause_ms=config.turn_max_pause_s * 1000,
            )
        self._endpointer = Endpointer(
            frame_ms=config.frame_ms,
            hangover_ms=(
                config.hangover_s * 1000 if self._turns is None else 3_600_000.0  # never
            ),
            pause_ms=config.eager_s * 1000 if self._turns is None else 0,
            enabled=config.vad_enabled and config.service_endpointing,
        )
        self._turn_frames = TURN_WINDOW // config.frame_samples + 1
        self._eot: dict[int, float] = {}  # utterance -> the model's verdict at its end
        # A turn the model kept open through a pause goes to the recognizer as one utterance per
        # stretch of speech (Whisper drops the words after a finished-sounding sentence when the
        # utterance then stops mid-way), and is published as one final: turn -> its utterances,
        # and the finals of those that are done, held until the last one's
        self._segments: dict[int, list[int]] = {}
        self._segment_of: dict[int, int] = {}  # utterance -> its turn (multi-utterance turns)
        self._held_finals: dict[int, list[RecognitionEvent]] = {}
        self._interrupts = InterruptDetector(
            frame_ms=config.frame_ms, min_speech_ms=config.interrupt_min_speech_ms
        )
        self._preroll: deque[tuple[int, Int16Array]] = deque(
            maxlen=max(1, config.preroll_ms // config.frame_ms)
        )
        self._held: list[tuple[int, Int16Array]] = []  # trailing unvoiced frames not yet sent
        self._utt: _Utterance | None = None
        self._next_utterance = 0
        self._voice: dict[int, bool] = {}  # utterance -> had voiced frames (for has_voice_activity)
        self._finished: int = -1  # highest utterance whose final was handled
        # (samples heard after a chunk, when it arrived): when did a given sample reach us
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=4096)
        self._speech: dict[int, list[int]] = {}  # utterance -> [first, last] voiced sample
        self._partial_sent: set[int] = set()  # utterances that had their first partial
        # failover bookkeeping (see checkpoint()/restore()): where the last interrupt began
        # (sample) and where the last published final ended (seconds); after a restore, replayed
        # audio at or before these floors publishes nothing a previous owner already published
        self.interrupt_at = -1
        self.final_end = 0.0
        self._interrupt_floor = -1
        self._final_floor = -1.0
        self._turn_open = False  # the backend finds turns: one began and has no final yet
        # the backend's turn numbers -> the session's: a restored session's new stream counts
        # from 0 again, so the base is fixed by its first turn not published before (None)
        self._turn_base: int | None = 0
        self.last_turn = -1  # turn_index of the last final published

    # --- inbound --------------------------------------------------------------------------------
    def handle(self, msg: Inbound, now: float) -> list[Action]:
        if self.closed:
            return []
        self.last_message_at = now
        self._inbox.append((msg, now))
        if isinstance(msg, Chunk):
            self._inbox_samples += self._samples_of(msg.pcm)
        if isinstance(msg, End):
            # decided at once, frames still waiting included: the session must be closed when
            # this returns, so that a 'start' right behind it opens a new session under the id
            return self.close(now, reason="end")
        return self._advance(now)

    def voice_ready(self, now: float) -> list[Action]:
        """The network has decided this session's waiting frames (batched mode): go on."""
        return [] if self.closed else self._advance(now)

    @property
    def queued(self) -> int:
        """16 kHz samples received so far (some may still wait for the voice detector)."""
        return self._queued

    @property
    def voice(self) -> VoiceDetector:
        """This session's voice detector (the worker's batcher runs its network)."""
        return self._detector

    @property
    def awaiting_voice(self) -> bool:
        """Frames (and maybe messages behind them) wait for the network: see ``batched``."""
        return self._detector.waiting

    def _advance(self, now: float) -> list[Action]:
        """Handle what can be handled now: frames whose voice verdict is known, then the
        messages queued behind frames that waited for the network, in arrival order."""
        actions: list[Action] = []
        while not self.closed:
            if not self.batched:
                self._detector.resolve_inline()
            for frame, info in self._detector.ready():
                self._on_frame(frame, info, now, actions)
            if self._detector.waiting or not self._inbox:
                break
            msg, at = self._inbox.popleft()
            if isinstance(msg, Chunk):
                self._inbox_samples -= self._samples_of(msg.pcm)
            actions += self._dispatch(msg, at)
        if self.closed:
            self._inbox.clear()
            self._inbox_samples = 0
        return actions

    def _samples_of(self, pcm: bytes) -> int:
        n = self._normalizer
        return len(pcm) // (2 * n.channels) * TARGET_RATE // n.sample_rate

    @property
    def unheard(self) -> int:
        """16 kHz samples received and not yet through the voice detector (about: a queued
        'start' may change the rate)."""
        return self._queued - self.samples_heard + self._inbox_samples

    def _dispatch(self, msg: Inbound, now: float) -> list[Action]:
        match msg:
            case Chunk():
                if not self.started_explicitly and self.chunks == 0:
                    log.info("session %s: first chunk without start; using defaults", self.id)
                self._on_chunk(msg.pcm, now)
                return []
            case Start():
                return self._on_start(msg, now)
            case StateChange():
                self._barge.reset()  # the client decides about the last interrupt now
                return self._set_state(msg.state)
            case Configure():
                return self._on_configure(msg)
            case Finalize():
                if not self.config.service_endpointing:  # the backend ends its turn now
                    if not self._audio_started:
                        return []
                    # every sample heard goes first, even a partial VAD frame
                    rest = self._splitter.take_rest()
                    actions: list[Action] = []
                    if rest.size:
                        actions.append(SendAudio(rest, self.samples_heard, 0))
                        self.samples_heard += rest.size
                        self._queued += rest.size
                    return [*actions, EndUtterance(0)]
                return self._end_utterance(now)
            case End():
                return self._close(now, reason="end")
        return []  # pragma: no cover - exhaustive above

    def _on_start(self, msg: Start, now: float) -> list[Action]:
        if self._audio_started:
            return [
                self._error(
                    Code.SESSION_ALREADY_STARTED,
                    "start: this session is already streaming audio; send 'end' first "
                    "to start a new stream under the same id",
                    now,
                )
            ]
        self.started_explicitly = True
        self._normalizer = AudioNormalizer(msg.sample_rate, msg.channels)
        self.speaker_id = msg.speaker_id
        self.params = StreamParams(
            session_id=self.id,
            language=msg.language,
            keyterms=tuple(msg.keyterms or ()),
            eot_threshold=msg.eot_threshold,
            eager_eot_threshold=msg.eager_eot_threshold,
            eot_timeout_ms=msg.eot_timeout_ms,
        )
        actions: list[Action] = [Reconfigure(self.params)]
        self._tune_turns()
        self._barge.reset()
        actions += self._set_state(msg.state)
        return actions

    def _on_configure(self, msg: Configure) -> list[Action]:
        changes = {
            k: v for k, v in msg.model_dump(exclude={"type", "session_id"}).items() if v is not None
        }
        if "keyterms" in changes:
            changes["keyterms"] = tuple(changes["keyterms"])
        self.params = StreamParams(**{**_params_dict(self.params), **changes})
        self._tune_turns()
        return [Reconfigure(self.params)]

    def _tune_turns(self) -> None:
        """Flux's per-session ``eot_threshold`` and ``eot_timeout_ms`` tune the end-of-turn model
        the same way: the probability that ends a turn, and the longest pause it waits out."""
        if self._turns is None:
            return
        p, c = self.params, self.config
        self._turns.tune(
            frame_ms=c.frame_ms,
            threshold=c.turn_threshold if p.eot_threshold is None else p.eot_threshold,
            max_pause_ms=(
                c.turn_max_pause_s * 1000 if p.eot_timeout_ms is None else p.eot_timeout_ms
            ),
        )

    def _set_state(self, state: State) -> list[Action]:
        if state != self.state:
            self.state = state
            self._interrupts.reset()
        self._voice_needed()
        return []

    def _voice_needed(self) -> None:
        """Where the backend finds turns, the voice detector runs only for barge-in."""
        if not self.config.service_endpointing:
            self._detector.needed = self._barge.pending or (
                self.state == "responding" and self.config.interrupt_enabled
            )

    # --- audio ----------------------------------------------------------------------------------
    def _on_chunk(self, pcm: bytes, now: float) -> None:
        """Queue the chunk's frames for the voice detector (``_advance`` takes them back)."""
        self.chunks += 1
        self._audio_started = True
        seconds = len(pcm) / (2 * self._normalizer.channels * self._normalizer.sample_rate)
        self.audio_due_at = max(self.audio_due_at, now) + seconds
        frames = self._splitter.push(self._normalizer.push(pcm))
        if frames:
            self._queued += sum(f.size for f in frames)
            self._arrivals.append((self._queued, now))
        for frame in frames:
            self._detector.push(frame)

    def arrival(self, sample: int) -> float | None:
        """When the chunk holding session sample ``sample`` arrived (None: too long ago)."""
        i = bisect.bisect_left(self._arrivals, sample, key=lambda a: a[0])
        if i == len(self._arrivals) or (i == 0 and sample < self._arrivals[0][0] - 48_000):
            return None
        return self._arrivals[i][1]

    def _measure(self, name: str, sample: int, now: float, utterance: int = -1) -> list[Action]:
        at = self.arrival(sample)
        return [] if at is None else [Measure(name, max(0.0, now - at), utterance)]

    def _on_frame(
        self, frame: Int16Array, info: FrameInfo, now: float, actions: list[Action]
    ) -> None:
        cfg = self.config
        offset = self.samples_heard
        self.samples_heard += frame.size
        if info.voiced:
            self._last_voice = self.samples_heard
        barge_in_possible = (
            self.state == "responding"
            and cfg.interrupt_enabled
            and not self._barge.holding
            and offset >= INTERRUPT_WARMUP
        )
        if not cfg.service_endpointing:  # the backend finds turns: stream everything
            if barge_in_possible:
                self._check_interrupt(info, now, actions)
            actions.append(SendAudio(frame, offset, 0))
            return
        if barge_in_possible:
            self._check_interrupt(info, now, actions)

        utt = self._utt
        voiced = info.voiced
        if utt is not None and voiced and info.energy_db < utt.peak_db - VOICE_BELOW_PEAK_DB:
            voiced = False  # far below this utterance's voice: a hum or a breath, not the speaker
        event = self._endpointer.step(voiced, info.probability >= SURE)
        if utt is None:
            if event is EndpointEvent.START:
                utt = self._begin_utterance(offset, actions)
            else:
                self._preroll.append((offset, frame))
                return
        assert utt is not None
        if (
            voiced
            and utt.speculated
            and self._turns is not None
            and self._turns.silent >= self._turns.timeout_frames
        ):
            # the speaker goes on after a pause that silence alone would have ended the utterance
            # at: the recognizer hears the same utterances as without the model, the client one
            # turn (a shorter pause stays inside the utterance, its context kept for the decode)
            utt = self._continue_turn(utt, offset, now, actions)
        utt.samples += frame.size
        utt.frames.append((offset + frame.size, info.energy_db, voiced))
        turn: TurnStep | None = None
        if self._turns is not None:
            utt.audio.append(frame)
            if voiced:
                self._turns.voiced()
            else:
                turn = self._turns.unvoiced()
        if voiced:
            utt.voiced_frames += 1
            utt.peak_db = max(utt.peak_db, info.energy_db)
            self._voice[utt.index] = True
            span = self._speech.setdefault(utt.index, [offset, offset])
            span[1] = offset + frame.size
        if info.energy_db < utt.peak_db - QUIET_BELOW_PEAK_DB:
            utt.quiet_frames += 1
        else:
            utt.quiet_frames = 0
        if voiced or not cfg.vad_enabled:
            utt.speculated = utt.finished = False
            self._send_held(utt, actions)
            actions.append(SendAudio(frame, offset, utt.index))
        else:
            self._held.append((offset, frame))

        if event is EndpointEvent.PAUSE or turn is TurnStep.ASK:
            # what the final would hold if the utterance ended here: its audio and trailing silence
            self._send_held(utt, actions)
            utt.speculated = True
            actions.append(Speculate(utt.index))
            if turn is TurnStep.ASK and self._turns is not None:
                audio = np.concatenate(utt.audio)[-TURN_WINDOW:]
                actions.append(PredictTurn(utt.index, self._turns.seq, audio))
        elif (
            event is EndpointEvent.END
            or turn is TurnStep.END
            or (utt.finished and self._quiet_since_pause(utt))
        ):
            actions += self._end_utterance(now)
        elif utt.samples >= cfg.max_utterance_samples:
            self._cut_utterance(utt, actions)

    def _check_interrupt(self, info: FrameInfo, now: float, actions: list[Action]) -> None:
        if self._interrupts.step(info.voiced, info.probability >= SURE):
            ago = self._interrupts.onset_frames_ago()
            onset = self.samples_heard - ago * self.config.frame_samples
            self._interrupts.reset()
            utterance = self._utt.index if self._utt is not None else self._next_utterance
            decision = self._barge.voice(
                onset / TARGET_RATE,
                now,
                utterance if self.config.service_endpointing else None,
            )
            self._decided(decision, now, actions)
            self._voice_needed()

    def _decided(self, decision: Decision | None, now: float, actions: list[Action]) -> None:
        """Carry out what the barge-in stage decided: interrupt now, or take it back."""
        if decision is None:
            return
        if isinstance(decision, Cancel):
            self.cancelled_interrupts += 1
            actions.append(
                Publish(
                    interrupt_cancelled_message(
                        session_id=self.id,
                        timestamp=now,
                        speaker_id=self.speaker_id,
                        reason=decision.reason,
                    )
                )
            )
            log.info("session %s: interrupt taken back (%s)", self.id, decision.reason)
            self._set_state("responding")
            return
        onset = round(decision.onset * TARGET_RATE)
        actions += self._measure("interrupt", onset, now)
        self._interrupt(now, actions, onset)

    def _interrupt(self, now: float, actions: list[Action], onset: int) -> None:
        """Barge-in: tell the client, and go back to listening."""
        if onset <= self._interrupt_floor:  # replayed after a failover: already published
            self._set_state("listening")
            return
        self.interrupt_at = onset
        self.interrupts += 1
        actions.append(
            Publish(
                interrupt_message(session_id=self.id, timestamp=now, speaker_id=self.speaker_id)
            )
        )
        self._set_state("listening")

    def _begin_utterance(self, offset: int, actions: list[Action]) -> _Utterance:
        start = self._preroll[0][0] if self._preroll else offset
        utt = _Utterance(index=self._next_utterance, start=start)
        self._next_utterance += 1
        self._voice[utt.index] = False
        self._utt = utt
        if self._turns is not None:
            utt.audio = deque(maxlen=self._turn_frames)
        for off, frame in self._preroll:
            actions.append(SendAudio(frame, off, utt.index))
            utt.samples += frame.size
            utt.frames.append((off + frame.size, -120.0, False))
            if self._turns is not None:
                utt.audio.append(frame)
        self._preroll.clear()
        return utt

    def _continue_turn(
        self, utt: _Utterance, offset: int, now: float, actions: list[Action]
    ) -> _Utterance:
        """End ``utt`` where its pause began (its decode at the pause is its final) and begin the
        next utterance of the same turn here, with the end of the pause as its pre-roll."""
        turn = self.turn_of(utt.index)
        self._segment_of[utt.index] = turn
        # an interrupt's take-back time counts from the end of this stretch, as from a turn's
        self._barge.ended(now, utt.index, utt.voiced_frames * self.config.frame_ms / 1000)
        actions.append(EndUtterance(utt.index))
        keep = max(1, self.config.preroll_ms // self.config.frame_ms)
        self._preroll.clear()
        self._preroll.extend(self._held[-keep:])
        self._held.clear()
        nxt = self._begin_utterance(offset, actions)
        nxt.audio = utt.audio  # the model hears the whole turn
        nxt.peak_db = utt.peak_db
        self._segment_of[nxt.index] = turn
        self._segments.setdefault(turn, [turn]).append(nxt.index)
        return nxt

    def turn_of(self, utterance: int) -> int:
        """The turn an utterance belongs to (its own index, or the first of a turn that went on
        after a pause): what the published final's ``turn_index`` says."""
        return self._segment_of.get(utterance, utterance)

    def _send_held(self, utt: _Utterance, actions: list[Action]) -> None:
        for off, held in self._held:
            actions.append(SendAudio(held, off, utt.index))
        self._held.clear()

    def _end_utterance(self, now: float) -> list[Action]:
        """Speech ended (hangover, finalize, clock timeout, end): send the final's audio, flush."""
        utt = self._utt
        if utt is None:
            return []
        # an interrupt's take-back time counts from here
        self._barge.ended(now, utt.index, utt.voiced_frames * self.config.frame_ms / 1000)
        actions: list[Action] = []
        # after a pause was decoded, its trailing silence is already sent: adding more would only
        # make that decode unusable as the final
        keep = 0 if utt.speculated else max(0, self.config.trailing_ms // self.config.frame_ms)
        for off, frame in self._held[:keep]:
            actions.append(SendAudio(frame, off, utt.index))
        for item in self._held[keep:]:
            self._preroll.append(item)
        self._held.clear()
        actions.append(EndUtterance(utt.index))
        self._utt = None
        self._endpointer.reset()
        if self._turns is not None:
            wait = self._turns.silent * self.config.frame_ms / 1000
            actions.append(Measure("turn_wait", wait, utt.index))
            if self._turns.probability is not None:
                self._eot[utt.index] = self._turns.probability
                if len(self._eot) > 1000:  # finals that never came
                    self._eot.clear()
            self._turns.reset()
        return actions

    def _quiet_since_pause(self, utt: _Utterance) -> bool:
        """The last ``QUIET_MS`` of frames were all far below the utterance's voice: silence,
        not an unvoiced sound that the VAD's voicing test does not count as speech."""
        return utt.quiet_frames >= max(1, QUIET_MS // self.config.frame_ms)

    def _cut_utterance(self, utt: _Utterance, actions: list[Action]) -> None:
        """The utterance reached STT_BUFFER_SIZE_BYTES: end it at the quietest frame of its last
        third, so no word is cut, and carry the rest into a new utterance."""
        self._send_held(utt, actions)
        tail = utt.frames[len(utt.frames) * 2 // 3 :] or utt.frames
        cut = min(tail, key=lambda f: f[1])[0]
        head = [f for f in utt.frames if f[0] <= cut]
        rest = [f for f in utt.frames if f[0] > cut]
        self._voice[utt.index] = any(f[2] for f in head)
        actions.append(EndUtterance(utt.index, until=cut))
        nxt = _Utterance(
            index=self._next_utterance,
            start=cut,
            samples=self.samples_heard - cut,
            frames=rest,
            voiced_frames=sum(f[2] for f in rest),
            audio=utt.audio,  # the same turn goes on
        )
        self._next_utterance += 1
        self._voice[nxt.index] = nxt.voiced_frames > 0
        self._utt = nxt

    # --- the end-of-turn model ------------------------------------------------------------------
    def turn_verdict(
        self, utterance: int, seq: int, probability: float | None, now: float
    ) -> list[Action]:
        """The model's answer to :class:`PredictTurn` (None: it failed): end the turn, or wait."""
        utt = self._utt
        if self.closed or self._turns is None or utt is None or utt.index != utterance:
            return []
        if self._turns.verdict(seq, probability):
            return self._end_utterance(now)
        return []

    # --- recognizer results ---------------------------------------------------------------------
    def on_event(self, ev: StreamEvent, now: float) -> list[Action]:
        if isinstance(ev, RecognitionError):
            error: list[Action] = [self._error(ev.code, ev.message, now)]
            u = ev.utterance
            if u is not None and self.config.service_endpointing:
                if u in self._segment_of:
                    # one stretch of a longer turn: the rest of the turn still goes out, without it
                    # (an empty stretch, not an empty final: it must not take an interrupt back)
                    bounds = self._speech.pop(u, None) or [0, 0]
                    lost = RecognitionEvent(
                        u, "", True, bounds[0] / TARGET_RATE, bounds[1] / TARGET_RATE
                    )
                    joined = self._turn_event(lost, self._segment_of[u])
                    if joined is None:
                        self._finished = max(self._finished, u)
                        return error
                    return error + self.on_event(joined, now)
                # the utterance's final failed and will not come: it is done with
                self._finished = max(self._finished, u)
                self._eot.pop(u, None)
            return error
        if isinstance(ev, EndpointHint):
            utt = self._utt
            if (
                self._turns is None  # the model decides where it is on
                and utt is not None
                and utt.index == ev.utterance
                and utt.speculated
                and self._endpointer.paused
                and reads_finished(ev.text)
            ):
                # a finished sentence and still no voice: end now if the pause is quiet, or as
                # soon as it is (a fricative such as the "sh" of "selfish" is no pause)
                utt.finished = True
                if self._quiet_since_pause(utt):
                    return self._end_utterance(now)
            return []
        actions: list[Action] = []
        if (
            ev.started_speaking
            and self.state == "responding"
            and self.config.interrupt_enabled
            and not self._barge.pending
        ):
            self._decided(self._barge.voice(ev.audio_start, now, None), now, actions)
            self._voice_needed()
        if ev.utterance <= self._finished and self.config.service_endpointing:
            return actions  # a late partial, or a repeated final: never publish it
        if ev.audio_end <= self._final_floor + 0.02:
            return actions  # replayed after a failover: its audio's final was published
        if (
            self.config.interrupt_min_words > 0
            and self.state == "responding"
            and self.config.interrupt_enabled
            and not self._barge.pending
            and ev.text.strip()
        ):
            # words before the voice detector decided (the first partial can decode the pre-roll
            # and a word or two): they are what this mode waits for, so they count
            span = self._speech.get(ev.utterance) if self.config.service_endpointing else None
            onset = span[0] / TARGET_RATE if span else ev.audio_start
            utterance = ev.utterance if self.config.service_endpointing else None
            self._barge.voice(onset, now, utterance)
        if self._barge.pending:
            decision = self._barge.heard(
                ev.text,
                final=ev.is_final,
                audio_end=ev.audio_end,
                utterance=ev.utterance if self.config.service_endpointing else None,
                now=now,
            )
            self._decided(decision, now, actions)
            self._voice_needed()
        segment_of = self._segment_of.get(ev.utterance) if self.config.service_endpointing else None
        if segment_of is not None:
            joined = self._turn_event(ev, segment_of)
            if joined is None:  # a stretch of a turn that goes on: its final waits for the rest
                self._finished = max(self._finished, ev.utterance)
                self._speech.pop(ev.utterance, None)
                return actions
            ev = joined
        eot = ev.end_of_turn_confidence
        if ev.is_final:
            self._finished = ev.utterance
            self._turn_open = False
            if self.config.service_endpointing:
                eot = self._eot.pop(ev.utterance, None)
        elif ev.text.strip():
            self._turn_open = True
        turn = ev.utterance if segment_of is None else segment_of
        if ev.turn_index is not None:
            if self._turn_base is None:
                self._turn_base = self.last_turn + 1 - ev.turn_index
            turn = ev.turn_index + self._turn_base
        voice = (
            self._voice.pop(ev.utterance, True)
            if ev.is_final
            else self._voice.get(ev.utterance, True)
        )
        text = ev.text.strip()
        actions += self._latency(ev, bool(text), now)
        if not text:
            return actions
        actions.append(
            Publish(
                transcript_message(
                    session_id=self.id,
                    transcript=text,
                    sequence=self.sequence,
                    is_final=ev.is_final,
                    timestamp=now,
                    speaker_id=self.speaker_id,
                    has_voice_activity=voice,
                    state=self.state,
                    confidence=ev.confidence,
                    words=ev.words,
                    audio_start=round(ev.audio_start, 3),
                    audio_end=round(ev.audio_end, 3),
                    turn_index=turn,
                    event=ev.event,
                    language=ev.language,
                    end_of_turn_confidence=(
                        None if eot is None or not ev.is_final else round(eot, 4)
                    ),
                )
            )
        )
        self.sequence += 1
        if ev.is_final:
            self.final_end = max(self.final_end, ev.audio_end)
            self.last_turn = max(self.last_turn, turn)
        return actions

    def _turn_event(self, ev: RecognitionEvent, turn: int) -> RecognitionEvent | None:
        """``ev`` from one utterance of a turn that spans several: a partial shows the turn so
        far; a final is held (None) until every utterance of the turn has its final, then they
        go out as one."""
        held = self._held_finals.setdefault(turn, [])
        segments = self._segments.get(turn, [turn])
        if ev.is_final:
            held.append(ev)
            done = {e.utterance for e in held}
            if not all(u in done for u in segments):
                return None
            parts = sorted(held, key=lambda e: e.utterance)
            for u in segments:
                self._segment_of.pop(u, None)
                if u != ev.utterance:
                    self._voice.pop(u, None)
            del self._held_finals[turn]
            self._segments.pop(turn, None)
            ev = max(parts, key=lambda e: e.utterance)
        else:
            parts = [*sorted(held, key=lambda e: e.utterance), ev]
        if len(parts) == 1:
            return ev
        confidences = [e.confidence for e in parts if e.confidence is not None]
        words = [w for e in parts for w in (e.words or [])]
        return replace(
            ev,
            text=" ".join(t for t in (e.text.strip() for e in parts) if t),
            audio_start=parts[0].audio_start,
            confidence=sum(confidences) / len(confidences) if confidences else None,
            words=words if any(e.words is not None for e in parts) else None,
        )

    def _latency(self, ev: RecognitionEvent, published: bool, now: float) -> list[Action]:
        """``final`` and ``first_partial`` measurements for a transcript about to be published."""
        if self.config.service_endpointing:  # the VAD saw where speech began and ended
            bounds = self._speech.pop(ev.utterance, None) if ev.is_final else None
            bounds = bounds or self._speech.get(ev.utterance)
        else:  # the model's own word times, else the event's audio window
            first = ev.words[0].start if ev.words else ev.audio_start
            last = ev.words[-1].end if ev.words else ev.audio_end
            bounds = [round(first * TARGET_RATE), round(last * TARGET_RATE)]
        if not published or bounds is None:
            return []
        if ev.is_final:
            self._partial_sent.discard(ev.utterance)
            return self._measure("final", bounds[1], now, ev.utterance)
        if ev.utterance in self._partial_sent:
            return []
        if len(self._partial_sent) > 1000:  # turns whose final never came
            self._partial_sent.clear()
        self._partial_sent.add(ev.utterance)
        return self._measure("first_partial", bounds[0], now, ev.utterance)

    # --- time -----------------------------------------------------------------------------------
    def tick(self, now: float, chunk_timeout_s: float) -> list[Action]:
        """Clock-driven endings: a speaker whose chunks stopped mid-utterance, an idle session,
        a session past its longest duration."""
        if self.closed:
            return []
        if now - self.opened_at >= self.config.max_session_s:
            closing: list[Action] = [
                self._error(
                    Code.SESSION_TOO_LONG,
                    f"the session reached its limit of {self.config.max_session_s:g} s "
                    "(STT_MAX_SESSION_SECONDS) and is closed; its pending speech is still "
                    "transcribed; send 'start' to go on in a new session",
                    now,
                )
            ]
            return closing + self.close(now, reason="too long")
        if now - self.last_message_at >= self.config.idle_timeout_s:
            closing = [
                self._error(
                    Code.SESSION_IDLE_TIMEOUT,
                    f"no message for {self.config.idle_timeout_s:g} s (STT_SESSION_IDLE_TIMEOUT); "
                    "session closed",
                    now,
                )
            ]
            return closing + self.close(now, reason="idle")
        actions: list[Action] = []
        if self._barge.pending:
            speaking = (self.samples_heard - self._last_voice) < chunk_timeout_s * TARGET_RATE
            decision = self._barge.tick(
                now, speaking=speaking, waits_for_final=self.config.service_endpointing
            )
            self._decided(decision, now, actions)
            self._voice_needed()
        pending_audio = self._inbox or self._detector.waiting
        if (
            self._utt is not None
            and not pending_audio
            and now - self.audio_due_at >= chunk_timeout_s
        ):
            actions += self._end_utterance(now)
        return actions

    def close(self, now: float, reason: str) -> list[Action]:
        """Flush pending speech (its final is published before the stream closes), then close.
        Messages still queued behind the voice detector are handled first."""
        if self.closed:
            return []
        self.batched = False
        actions = self._advance(now)  # may close the session itself (an 'end' was queued)
        return actions + self._close(now, reason)

    def _close(self, now: float, reason: str) -> list[Action]:
        if self.closed:
            return []
        actions: list[Action] = []
        if self._audio_started:
            frames = self._splitter.push(self._normalizer.flush())
            last = self._splitter.flush()
            if last is not None:
                frames.append(last)
            for frame in frames:
                self._queued += frame.size
                self._detector.push(frame)
            self._detector.resolve_inline()
            for frame, info in self._detector.ready():
                self._on_frame(frame, info, now, actions)
        actions += self._end_utterance(now)
        self.closed = True
        actions.append(Close(reason))
        return actions

    @property
    def in_utterance(self) -> bool:
        return self._utt is not None

    # --- failover: checkpoint and restore ---------------------------------------------------
    @property
    def idle(self) -> bool:
        """No speech is being collected now: no utterance open (or, where the backend finds
        turns, none of its turns open)."""
        if self.closed or self._inbox or self._detector.waiting:
            return False
        if not self.config.service_endpointing:
            return not self._turn_open
        return self._utt is None

    def finished_before(self, utterance: int) -> bool:
        """Every utterance begun before ``utterance`` has had its final handled."""
        return not self.config.service_endpointing or self._finished >= utterance - 1

    @property
    def settled(self) -> bool:
        """Every sample heard so far is done with: transcribed into a published final, or
        silence outside any utterance. A replay may then start at the next inbound message."""
        return self.idle and self.finished_before(self._next_utterance)

    def snapshot(self) -> dict[str, Any]:
        """What a replay starting at the next inbound message needs (take it while idle; it is
        a valid replay point once ``finished_before(snapshot["next_utt"])``)."""
        return {
            "heard": self.samples_heard,
            "pending": self._splitter.pending,  # of the next VAD frame (silence: we are idle)
            "next_utt": self._next_utterance,
            "state": self.state,
            "speaker": self.speaker_id,
            "params": {**_params_dict(self.params), "keyterms": list(self.params.keyterms)},
            "rate": self._normalizer.sample_rate,
            "channels": self._normalizer.channels,
            "explicit": self.started_explicitly,
            "audio": self._audio_started,
            "opened_at": self.opened_at,
            "chunks": self.chunks,
        }

    def progress(self) -> dict[str, Any]:
        """What was published so far: a restored session never publishes it again."""
        return {
            "sequence": self.sequence,
            "finished": self._finished,
            "interrupt_at": max(self.interrupt_at, self._interrupt_floor),
            "interrupts": self.interrupts,
            "final_end": max(self.final_end, self._final_floor),
            "turn": self.last_turn,
        }

    @classmethod
    def restore(
        cls,
        session_id: str,
        config: SessionConfig,
        now: float,
        snapshot: dict[str, Any],
        progress: dict[str, Any],
    ) -> Session:
        """The session as it was at ``snapshot``, for replaying the inbound messages after it,
        with ``progress`` (from later) keeping what was already published from being published
        again: finals of utterances up to ``finished`` (or turns ending by ``final_end``),
        interrupts beginning by ``interrupt_at``; numbering goes on from ``sequence``."""
        s = cls(session_id, config, float(snapshot["opened_at"]))
        s.last_message_at = now
        s.audio_due_at = now
        s.samples_heard = s._queued = s._last_voice = int(snapshot["heard"])
        # the VAD frames keep their places: zeros stand in for the part-frame held back then
        s._splitter.push(np.zeros(int(snapshot.get("pending", 0)), dtype=np.int16))
        s._next_utterance = int(snapshot["next_utt"])
        s.state = snapshot["state"]
        s.speaker_id = snapshot["speaker"]
        params = dict(snapshot["params"])
        params["keyterms"] = tuple(params.get("keyterms") or ())
        s.params = StreamParams(**params)
        s._normalizer = AudioNormalizer(int(snapshot["rate"]), int(snapshot["channels"]))
        s.started_explicitly = bool(snapshot["explicit"])
        s._audio_started = bool(snapshot["audio"])
        s.chunks = int(snapshot["chunks"])
        s.sequence = int(progress["sequence"])
        s._finished = int(progress["finished"])
        s._interrupt_floor = s.interrupt_at = int(progress["interrupt_at"])
        s.interrupts = int(progress["interrupts"])
        s._final_floor = s.final_end = float(progress["final_end"])
        s.last_turn = int(progress.get("turn", -1))
        s._turn_base = None  # a new recognizer stream: fixed by its first new turn
        return s

    def _error(self, code: str, message: str, now: float) -> Publish:
        return Publish(error_message(session_id=self.id, code=code, message=message, timestamp=now))


def reads_finished(text: str) -> bool:
    """Whether a decode ends like a finished sentence: '.', '?' or '!', but not a trailing '...'.

    Whisper punctuates from the audio, prosody included, so a falling "...man." after a pause is
    a good sign the speaker is done; "...and" or "...because..." is not.
    """
    t = text.rstrip().rstrip("\"')]»”’")
    return t.endswith((".", "?", "!")) and not t.endswith(("..", "…"))


def _params_dict(p: StreamParams) -> dict[str, Any]:
    return {f: getattr(p, f) for f in p.__dataclass_fields__}
