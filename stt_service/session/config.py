"""How every session of a worker behaves: :class:`SessionConfig`, built once from the settings.

The settings are the environment's (:mod:`stt_service.config`); this is the session core's own
reading of them, in its own units (16 kHz samples, seconds, milliseconds as the names say), so
the core never reads the environment and a test can build one with only what it changes.
``STT_CHUNK_TIMEOUT`` reaches the core here and nowhere else (``hangover_s``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..audio import TARGET_RATE
from ..config import BACKCHANNELS, Settings, comma_list
from ..speech.silero import FRAME_MS, shared_model
from ..speech.vad import SileroDetector, VoiceDetector, WebrtcDetector


@dataclass(frozen=True, slots=True)
class SessionConfig:
    # --- voice and utterances (STT_VAD*, STT_CHUNK_TIMEOUT, STT_EAGER_ENDPOINT, STT_BUFFER_*)
    vad: str = "silero"  # the voice detector: "silero" (32 ms frames) or "webrtc"
    vad_threshold: float = 0.5  # silero: speech probability of a voiced frame
    webrtc_frame_ms: int = 30
    vad_enabled: bool = True
    vad_aggressiveness: int = 2
    hangover_s: float = 0.8  # STT_CHUNK_TIMEOUT: silence that ends an utterance
    eager_s: float = 0.0  # a pause this long is decoded; a finished sentence then ends it
    preroll_ms: int = 300
    trailing_ms: int = 300  # silence kept after the last voiced frame of an utterance
    max_utterance_samples: int = 256_000
    # False: the backend finds turns (Flux, Nova); all audio is sent, the session cuts nothing
    service_endpointing: bool = True
    # --- barge-in (STT_ENABLE_INTERRUPT_DETECTION, STT_INTERRUPT_*, STT_FALSE_*, STT_BACK*)
    interrupt_enabled: bool = True
    interrupt_min_speech_ms: int = 60
    interrupt_min_words: int = 0  # >0: the interrupt waits for this many words (not backchannels)
    false_interrupt_timeout: float = 2.0  # an interrupt may be taken back this long after; 0: never
    backchannels: tuple[str, ...] = BACKCHANNELS
    # --- the end of the turn (STT_TURN_*); off: silence and the eager endpoint end turns
    turn_model: bool = False
    turn_pause_s: float = 0.096
    turn_threshold: float = 0.5
    turn_max_pause_s: float = 2.0
    eager_eot_threshold: float | None = None  # STT_EAGER_EOT_THRESHOLD: announce eager ends
    # --- limits (STT_SESSION_IDLE_TIMEOUT, STT_MAX_SESSION_SECONDS)
    idle_timeout_s: float = 60.0
    max_session_s: float = 14_400.0

    @classmethod
    def from_settings(cls, s: Settings, *, service_endpointing: bool = True) -> SessionConfig:
        """The settings' voice, barge-in, turn and limit views, for a recognizer whose turns the
        service ends (``service_endpointing``) or that ends its own."""
        voice, barge, turn, limits = s.voice, s.bargein, s.turn, s.limits
        return cls(
            vad=voice.stt_vad,
            vad_threshold=voice.stt_vad_threshold,
            webrtc_frame_ms=voice.stt_vad_frame_ms,
            vad_enabled=voice.stt_enable_vad,
            vad_aggressiveness=voice.stt_vad_aggressiveness,
            hangover_s=voice.stt_chunk_timeout,
            eager_s=voice.stt_eager_endpoint,
            max_utterance_samples=voice.max_utterance_samples,
            service_endpointing=service_endpointing,
            interrupt_enabled=barge.stt_enable_interrupt_detection,
            interrupt_min_speech_ms=barge.stt_interrupt_min_speech_ms,
            interrupt_min_words=barge.stt_interrupt_min_words,
            false_interrupt_timeout=barge.stt_false_interrupt_timeout,
            backchannels=comma_list(barge.stt_backchannel_words),
            turn_model=turn.stt_turn_model != "off"
            and voice.stt_enable_vad
            and service_endpointing,
            turn_pause_s=turn.stt_turn_pause_ms / 1000,
            turn_threshold=turn.stt_turn_threshold,
            turn_max_pause_s=turn.stt_turn_max_pause,
            eager_eot_threshold=turn.stt_eager_eot_threshold,
            idle_timeout_s=limits.stt_session_idle_timeout,
            max_session_s=limits.stt_max_session_seconds,
        )

    @property
    def frame_ms(self) -> int:
        """The voice detector's frame: Silero's 32 ms, or ``webrtc_frame_ms``."""
        return FRAME_MS if self.vad == "silero" else self.webrtc_frame_ms

    @property
    def frame_samples(self) -> int:
        return TARGET_RATE * self.frame_ms // 1000

    def frames(self, ms: float) -> int:
        """How many of the voice detector's frames ``ms`` milliseconds make (at least 1)."""
        return max(1, int(ms // self.frame_ms))

    def detector(self) -> VoiceDetector:
        """A new session's voice detector (Silero's model is loaded once per process)."""
        if self.vad == "silero":
            return SileroDetector(
                shared_model(), threshold=self.vad_threshold, aggressiveness=self.vad_aggressiveness
            )
        return WebrtcDetector(self.vad_aggressiveness, self.frame_samples)
