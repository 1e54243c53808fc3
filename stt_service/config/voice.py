"""How a session hears speech: the voice detector and utterances (``STT_VAD*``,
``STT_CHUNK_TIMEOUT``, ``STT_EAGER_ENDPOINT``, ``STT_BUFFER_SIZE_BYTES``), barge-in
(``STT_ENABLE_INTERRUPT_DETECTION``, ``STT_INTERRUPT_*``, ``STT_FALSE_INTERRUPT_TIMEOUT``,
``STT_BACKCHANNEL_WORDS``) and the end of the turn (``STT_TURN_*``). The session core reads them
as :class:`stt_service.session.SessionConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

# what STT_BACKCHANNEL_WORDS lists by default: speech of only these is no barge-in
BACKCHANNELS = (
    "uh-huh",
    "mm-hmm",
    "mhm",
    "yeah",
    "yep",
    "yes",
    "okay",
    "ok",
    "right",
    "sure",
    "alright",
    "all right",
    "oh",
    "i see",
    "got it",
    "aha",
)


class VoiceSettings(BaseModel):
    """The voice detector, and the silence and length that end an utterance."""

    stt_buffer_size_bytes: int = Field(
        512_000,
        ge=32_000,
        le=960_000,
        description="longest utterance, in bytes of 16 kHz mono 16-bit PCM (512000 = 16 s); a "
        "longer one is cut at its quietest recent point",
    )
    stt_chunk_timeout: float = Field(
        0.8, gt=0.05, le=30.0, description="seconds of silence (audio time) that end an utterance"
    )
    stt_enable_vad: bool = Field(
        True, description="segment utterances with voice activity detection"
    )
    stt_vad: Literal["silero", "webrtc"] = Field(
        "silero",
        description="voice detector: silero (Silero VAD v6, a neural network: noise, hum and music "
        "are not speech) or webrtc (webrtcvad, an energy floor and a pitch test: the detector "
        "before it)",
    )
    stt_vad_threshold: float = Field(
        0.5,
        ge=0.05,
        le=0.95,
        description="silero: speech probability from which a 32 ms frame is voiced",
    )
    stt_vad_batch_ms: float = Field(
        10.0,
        ge=0.0,
        le=100.0,
        description="silero: milliseconds the worker gathers sessions' frames into one network "
        "call (cheaper per frame, adds up to this much latency); 0: each chunk at once",
    )
    stt_vad_aggressiveness: int = Field(
        2, ge=0, le=3, description="webrtcvad aggressiveness 0-3 (webrtc; for silero, its gate)"
    )
    stt_vad_frame_ms: int = Field(
        30, description="VAD frame length in ms: 10, 20 or 30 (webrtc; silero's frames are 32 ms)"
    )
    stt_eager_endpoint: float = Field(
        0.25,
        ge=0.0,
        le=30.0,
        description="seconds of silence after which the utterance so far is decoded; if it reads "
        "as a finished sentence (ends in . ? !) it ends there, without waiting STT_CHUNK_TIMEOUT; "
        "0 disables",
    )

    @field_validator("stt_vad_frame_ms")
    @classmethod
    def _frame_ms(cls, v: int) -> int:
        # an int Literal refuses the environment's "20": checked here instead
        if v not in (10, 20, 30):
            raise ValueError("must be 10, 20 or 30 (webrtcvad's frame lengths)")
        return v

    @property
    def max_utterance_samples(self) -> int:
        return self.stt_buffer_size_bytes // 2


class BargeInSettings(BaseModel):
    """When the user's speech interrupts the assistant, and when an interrupt is taken back."""

    stt_enable_interrupt_detection: bool = Field(True, description="publish barge-in interrupts")
    stt_interrupt_min_speech_ms: int = Field(
        60,
        ge=30,
        le=5000,
        description="voiced speech while responding before an interrupt fires (2 of Silero's "
        "32 ms frames, one of them sure)",
    )
    stt_interrupt_min_words: int = Field(
        0,
        ge=0,
        le=20,
        description="0: interrupt as soon as voice is heard; N: only once the recognizer has "
        "heard N words that are not backchannels",
    )
    stt_false_interrupt_timeout: float = Field(
        2.0,
        ge=0.0,
        le=30.0,
        description="seconds after an interrupt within which it is taken back "
        "(interrupt_cancelled) if its speech held no words or only backchannels; 0: never",
    )
    stt_backchannel_words: str = Field(
        ",".join(BACKCHANNELS),
        description="comma-separated backchannels: speech of only these does not interrupt "
        "(with STT_INTERRUPT_MIN_WORDS) or is taken back",
    )


class TurnSettings(BaseModel):
    """The end-of-turn model, where the service ends turns (whisper, whisper-http, realtime)."""

    stt_turn_model: Literal["smart-turn", "off"] = Field(
        "smart-turn",
        description="end-of-turn model for the backends whose turns the service ends (whisper, "
        "whisper-http, realtime): smart-turn (Smart Turn v3.2, bundled) hears each pause and "
        "says whether the speaker is done; off: silence (STT_CHUNK_TIMEOUT) and the eager "
        "endpoint alone",
    )
    stt_turn_model_path: str = Field(
        "", description="an ONNX file to use instead of the bundled Smart Turn v3.2 model"
    )
    stt_turn_pause_ms: int = Field(
        96,
        ge=32,
        le=2000,
        description="milliseconds of silence after which the end-of-turn model first hears the "
        "turn (and the pause is decoded); a turn it calls complete, whose words read as a "
        "finished sentence, ends there. It hears the turn again at 320 and 640 ms",
    )
    stt_turn_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="end-of-turn probability from which a turn is complete at the pause",
    )
    stt_turn_max_pause: float = Field(
        2.0,
        gt=0.05,
        le=30.0,
        description="seconds of silence that end a turn the model called incomplete",
    )
    stt_eager_eot_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="the default eager_eot_threshold for every session (off when unset): from "
        "this end-of-turn probability, with words that read as finished, a partial with event "
        "eager_end_of_turn announces the turn's probable end; turn_resumed follows if the user "
        "goes on (whisper, whisper-http, realtime; Flux has FLUX_EAGER_EOT_THRESHOLD)",
    )

    @model_validator(mode="after")
    def _model_file(self) -> TurnSettings:
        path = self.stt_turn_model_path
        if self.stt_turn_model != "off" and path and not Path(path).is_file():
            raise ValueError(f"STT_TURN_MODEL_PATH: no such file {path!r}")
        return self
