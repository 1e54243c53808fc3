"""Recognizers behind one interface (:mod:`.base`)."""

from __future__ import annotations

from ..config import Settings
from .base import Recognizer


def make_recognizer(settings: Settings) -> Recognizer:
    """The recognizer ``STT_BACKEND`` names (configuration has already checked it exists),
    given its own settings."""
    if settings.stt_backend == "whisper":
        from .whisper_local import WhisperLocal

        return WhisperLocal(settings.whisper)
    if settings.stt_backend == "flux":
        from .deepgram.flux import flux_backend

        return flux_backend(settings.flux)
    if settings.stt_backend == "nova":
        from .deepgram.nova import nova_backend

        return nova_backend(settings.nova)
    if settings.stt_backend == "whisper-http":
        from .whisper_http import WhisperHTTP

        return WhisperHTTP(settings.whisper_http)
    if settings.stt_backend == "realtime":
        from .realtime.backend import RealtimeBackend

        return RealtimeBackend(settings.realtime)
    raise ValueError(f"STT_BACKEND={settings.stt_backend!r} is not available in this version")
