"""``STT_BACKEND=realtime``: a realtime ASR server (vLLM Realtime, OpenAI Realtime), as a
:class:`~..base.Recognizer`: one connector (SageMaker's HTTP/2 bidirectional stream, or a
WebSocket to ``REALTIME_URL``) shared by every session's :class:`~.stream.RealtimeStream`, which
does the streaming, the faults and the replay (see :mod:`.stream`)."""

from __future__ import annotations

from typing import Literal

from ...config import RealtimeSettings
from ..base import StreamParams
from ..streaming import StreamingBackend, sagemaker_connector
from ..transports.base import Connector
from .protocol import Dialect, make_dialect
from .stream import RATE, RealtimeStream


class RealtimeBackend(StreamingBackend):
    """A :class:`~.base.Recognizer` for one realtime server over one transport."""

    endpointing: Literal["service", "backend"] = "service"
    name = "realtime"

    def __init__(self, settings: RealtimeSettings) -> None:
        super().__init__(settings)
        self.realtime = settings
        self.dialect_name = settings.realtime_dialect
        self.model = settings.resolved_realtime_model()
        self.max_segment_bytes = round(settings.realtime_max_utterance_s * RATE) * 2

    async def make_connector(self) -> Connector:
        """A WebSocket to ``REALTIME_URL`` when it is set, else the SageMaker endpoint."""
        settings = self.realtime
        if not settings.realtime_url:
            return await sagemaker_connector(settings)
        from ..transports.websocket import WebSocketConnector

        key = settings.realtime_api_key.get_secret_value() if settings.realtime_api_key else ""
        return WebSocketConnector(
            key,
            base_url=settings.realtime_url,
            scheme="Bearer",
            label="realtime server",
            key_setting="REALTIME_API_KEY",
        )

    def dialect(self) -> Dialect:
        return make_dialect(self.dialect_name, self.model)

    def describe(self) -> str:
        return f"{self.dialect().name} model {self.model!r} on {self.where()}"

    def open_stream(self, params: StreamParams) -> RealtimeStream:
        return RealtimeStream(self, params)
