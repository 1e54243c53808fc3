"""The service around the sessions: limits (``STT_MAX_*``, ``STT_SESSION_IDLE_TIMEOUT``,
``STT_DRAIN_TIMEOUT``), scale-out (``STT_MODE``, ``STT_JS_*``), health checks
(``STT_HEALTH_*``), telemetry and logs (``OTEL_ENABLED``, ``HYPERDX_*``, ``STT_LOG_*``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator


class LimitSettings(BaseModel):
    """What a worker refuses or ends: too many sessions, idle or long ones, big chunks, a
    recognizer that fell behind, a drain that takes too long."""

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


class JetStreamSettings(BaseModel):
    """Many replicas, each session on one of them (``STT_MODE=jetstream``)."""

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

    @field_validator("stt_js_stream")
    @classmethod
    def _stream_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", v):
            raise ValueError("must be 1-32 characters of A-Z, a-z, 0-9, _ and -")
        return v


class HealthSettings(BaseModel):
    """``/healthz`` and ``/readyz`` of ``serve``."""

    stt_health_port: int = Field(
        8080, ge=0, le=65535, description="port of /healthz and /readyz for serve; 0: none"
    )
    stt_health_host: str = Field("0.0.0.0", description="address the health checks listen on")


class TelemetrySettings(BaseModel):
    """OpenTelemetry traces and metrics, HyperDX, and the log lines."""

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

    @model_validator(mode="after")
    def _hyperdx_key(self) -> TelemetrySettings:
        if self.hyperdx_enabled and self.otel_enabled and not self.hyperdx_api_key:
            raise ValueError("HYPERDX_API_KEY: required when HYPERDX_ENABLED=true")
        return self
