"""Recognizers behind one interface (:mod:`.base`)."""

from __future__ import annotations

from ..config import Settings
from .base import Recognizer


def make_recognizer(settings: Settings) -> Recognizer:
    """The recognizer ``STT_BACKEND`` names (configuration has already checked it exists)."""
    if settings.stt_backend == "whisper":
        from .whisper_local import WhisperLocal

        return WhisperLocal(settings)
    if settings.stt_backend == "flux":
        from .flux import flux_backend

        return flux_backend(settings)
    if settings.stt_backend == "nova":
        from .nova import nova_backend

        return nova_backend(settings)
    if settings.stt_backend == "whisper-http":
        from .whisper_http import WhisperHTTP

        return WhisperHTTP(settings)
    if settings.stt_backend == "realtime":
        from .realtime import RealtimeBackend

        return RealtimeBackend(settings)
    raise ValueError(f"STT_BACKEND={settings.stt_backend!r} is not available in this version")
