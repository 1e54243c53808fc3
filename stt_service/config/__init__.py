"""The settings: every variable of the contract, read and checked once at start-up, and the
views each part of the service reads (see :mod:`.settings`)."""

from .backends import (
    DeepgramSettings,
    FluxSettings,
    NovaSettings,
    PartialSettings,
    RealtimeSettings,
    SageMakerSettings,
    StreamingSettings,
    WhisperHttpSettings,
    WhisperSettings,
)
from .nats import NatsSettings
from .service import HealthSettings, JetStreamSettings, LimitSettings, TelemetrySettings
from .settings import (
    DEEPGRAM_BACKENDS,
    IMPLEMENTED_BACKENDS,
    BackendName,
    ConfigError,
    Settings,
    comma_list,
    load_settings,
)
from .voice import BACKCHANNELS, BargeInSettings, TurnSettings, VoiceSettings

__all__ = [
    "BACKCHANNELS",
    "DEEPGRAM_BACKENDS",
    "IMPLEMENTED_BACKENDS",
    "BackendName",
    "BargeInSettings",
    "ConfigError",
    "DeepgramSettings",
    "FluxSettings",
    "HealthSettings",
    "JetStreamSettings",
    "LimitSettings",
    "NatsSettings",
    "NovaSettings",
    "PartialSettings",
    "RealtimeSettings",
    "SageMakerSettings",
    "Settings",
    "StreamingSettings",
    "TelemetrySettings",
    "TurnSettings",
    "VoiceSettings",
    "WhisperHttpSettings",
    "WhisperSettings",
    "comma_list",
    "load_settings",
]
