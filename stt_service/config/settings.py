"""Settings from the environment, validated once at start-up, with one view per concern.

The variable names are the contract's (``../shared/CONTRACT.md``, kept in ``docs/CONTRACT.md``):
each field is one variable, in lower case. They are declared by concern, each in the module of
its concern (:mod:`.nats`, :mod:`.voice`, :mod:`.backends`, :mod:`.service`); :class:`Settings` is
all of them, read from the environment at once, and its views (``settings.whisper``,
``settings.turn``, ...) hand each part of the service only its own slice. An invalid value fails
start-up with one line naming the variable (:class:`ConfigError`). Settings added from now on
say their unit in their name (``_MS``, ``_S``, ``_BYTES``).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .backends import (
    FluxSettings,
    NovaSettings,
    RealtimeSettings,
    SageMakerSettings,
    StreamingSettings,
    WhisperHttpSettings,
    WhisperSettings,
)
from .nats import NatsSettings
from .service import HealthSettings, JetStreamSettings, LimitSettings, TelemetrySettings
from .voice import BargeInSettings, TurnSettings, VoiceSettings

BackendName = Literal["whisper", "whisper-http", "flux", "nova", "realtime"]
IMPLEMENTED_BACKENDS: frozenset[str] = frozenset(
    {"whisper", "whisper-http", "flux", "nova", "realtime"}
)
DEEPGRAM_BACKENDS: frozenset[str] = frozenset({"flux", "nova"})


class ConfigError(Exception):
    """A configuration value is invalid; ``str()`` is one line naming the variable."""


class Settings(
    NatsSettings,
    WhisperSettings,
    WhisperHttpSettings,
    FluxSettings,
    NovaSettings,
    RealtimeSettings,
    VoiceSettings,
    BargeInSettings,
    TurnSettings,
    LimitSettings,
    JetStreamSettings,
    HealthSettings,
    TelemetrySettings,
    BaseSettings,
):
    """Every knob of the service. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    stt_backend: BackendName = Field("whisper", description="which recognizer serves sessions")

    @model_validator(mode="after")
    def _backend_available(self) -> Settings:
        """What the chosen backend needs (each concern checks its own values itself)."""
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
        if self.stt_backend not in IMPLEMENTED_BACKENDS:
            raise ValueError(
                f"STT_BACKEND={self.stt_backend!r} is not available in this version "
                f"(available: {', '.join(sorted(IMPLEMENTED_BACKENDS))})"
            )
        return self

    # --- the views: each part of the service takes its own slice ---------------------------
    @property
    def nats(self) -> NatsSettings:
        return self

    @property
    def voice(self) -> VoiceSettings:
        return self

    @property
    def bargein(self) -> BargeInSettings:
        return self

    @property
    def turn(self) -> TurnSettings:
        return self

    @property
    def whisper(self) -> WhisperSettings:
        return self

    @property
    def whisper_http(self) -> WhisperHttpSettings:
        return self

    @property
    def sagemaker(self) -> SageMakerSettings:
        return self

    @property
    def streaming(self) -> StreamingSettings:
        return self

    @property
    def flux(self) -> FluxSettings:
        return self

    @property
    def nova(self) -> NovaSettings:
        return self

    @property
    def realtime(self) -> RealtimeSettings:
        return self

    @property
    def limits(self) -> LimitSettings:
        return self

    @property
    def jetstream(self) -> JetStreamSettings:
        return self

    @property
    def health(self) -> HealthSettings:
        return self

    @property
    def telemetry(self) -> TelemetrySettings:
        return self


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
