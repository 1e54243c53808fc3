"""``STT_BACKEND=flux``: Deepgram Flux (``v2/listen``), on SageMaker or Deepgram's hosted API.

Flux finds turns itself, so every frame of the session's audio is streamed and the service's VAD
only adds its own barge-in detection. The protocol lives in :mod:`.flux_protocol`; the stream,
its retries, replay and keep-alive in :mod:`.backend`; the transports in
:mod:`stt_service.backends.transports`.
"""

from __future__ import annotations

from ...config import FluxSettings, comma_list
from ..base import StreamParams
from .backend import DeepgramBackend
from .dialect import Options
from .flux_protocol import CLOSE_STREAM, FORCE_END_TURN, PATH, FluxOptions, FluxReceiver


class FluxDialect:
    name = "Flux"
    path = PATH
    force_end = FORCE_END_TURN
    close_stream = CLOSE_STREAM
    keep_alive: str | None = None  # Flux has no KeepAlive message: silence keeps it open
    stall_s = 3.0  # an Update about every 250 ms of a turn: 12 missed is a stalled stream

    def __init__(self, settings: FluxSettings) -> None:
        self.defaults = FluxOptions(
            model=settings.flux_model,
            eot_threshold=settings.flux_eot_threshold,
            eager_eot_threshold=settings.flux_eager_eot_threshold,
            eot_timeout_ms=settings.flux_eot_timeout_ms,
            keyterms=comma_list(settings.flux_keyterms),
        )

    def options(self, params: StreamParams) -> FluxOptions:
        return self.defaults.for_session(params)

    def configure_message(self, options: Options) -> str | None:
        assert isinstance(options, FluxOptions)
        return options.configure_message()

    def receiver(self) -> FluxReceiver:
        return FluxReceiver()

    def describe(self) -> str:
        return self.defaults.model


def flux_backend(settings: FluxSettings) -> DeepgramBackend:
    return DeepgramBackend(settings, FluxDialect(settings), name="flux")
