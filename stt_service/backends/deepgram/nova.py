"""``STT_BACKEND=nova``: Deepgram Nova (``v1/listen``), on SageMaker or Deepgram's hosted API.

Every frame of the session's audio is streamed; interim results become partials and each
utterance's ``is_final`` segments become one final when Nova's endpointing says ``speech_final``
(``NOVA_ENDPOINTING_MS`` of silence), on ``finalize`` or at the end. The service's own VAD still
drives ``has_voice_activity`` and barge-in interrupts. The protocol lives in
:mod:`.nova_protocol`; the stream, its retries, replay and keep-alive in :mod:`.backend`.
"""

from __future__ import annotations

from ...config import NovaSettings, comma_list
from ..base import StreamParams
from .backend import DeepgramBackend
from .dialect import Options
from .nova_protocol import CLOSE_STREAM, FINALIZE, KEEP_ALIVE, PATH, NovaOptions, NovaReceiver


class NovaDialect:
    name = "Nova"
    path = PATH
    force_end = FINALIZE
    close_stream = CLOSE_STREAM
    stall_s = 4.0  # an interim result about every second of speech
    keep_alive: str | None = KEEP_ALIVE

    def __init__(self, settings: NovaSettings) -> None:
        self.defaults = NovaOptions(
            model=settings.nova_model,
            language=settings.nova_language or None,
            endpointing_ms=settings.nova_endpointing_ms,
            smart_format=settings.nova_smart_format,
            keyterms=comma_list(settings.nova_keyterms),
        )

    def options(self, params: StreamParams) -> NovaOptions:
        return self.defaults.for_session(params)

    def configure_message(self, options: Options) -> str | None:
        """Nova-3 takes new keyterms mid-stream; older models only at connection time."""
        assert isinstance(options, NovaOptions)
        return options.configure_message() if options.keyterm_prompting else None

    def receiver(self) -> NovaReceiver:
        return NovaReceiver()

    def describe(self) -> str:
        return self.defaults.model


def nova_backend(settings: NovaSettings) -> DeepgramBackend:
    return DeepgramBackend(settings, NovaDialect(settings), name="nova")
