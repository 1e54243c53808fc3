"""``STT_BACKEND=flux``: Deepgram Flux on a SageMaker endpoint, one bidirectional stream a session.

Flux finds turns itself, so every frame of the session's audio is streamed (in 80 ms chunks) and
the service's VAD only adds its own barge-in detection. The protocol lives in
:mod:`.flux_protocol`; this module moves it over :class:`~.transports.sagemaker.SageMakerDuplex`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from ..audio import Int16Array
from ..config import Settings
from ..protocol import Code
from .base import RecognitionError, StreamEvent, StreamParams
from .flux_protocol import CLOSE_STREAM, FORCE_END_TURN, PATH, FluxOptions, FluxReceiver

log = logging.getLogger(__name__)

CHUNK_BYTES = 2560  # 80 ms of 16 kHz 16-bit mono
MAX_QUEUED_CHUNKS = 750  # 60 s of audio waiting for a slow connection, then the session is told
CONNECT_WAIT_S = 10.0
CLOSE_WAIT_S = 10.0  # after CloseStream, how long the last EndOfTurn may take


class FluxSageMaker:
    name = "flux"
    endpointing: Literal["service", "backend"] = "backend"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.options = FluxOptions(
            model=settings.flux_model,
            eot_threshold=settings.flux_eot_threshold,
            eager_eot_threshold=settings.flux_eager_eot_threshold,
            eot_timeout_ms=settings.flux_eot_timeout_ms,
            keyterms=tuple(t.strip() for t in settings.flux_keyterms.split(",") if t.strip()),
        )
        self._client: Any = None

    async def start(self) -> None:
        try:
            from .transports.sagemaker import make_client
        except ImportError as exc:
            raise RuntimeError(
                f"the 'flux' backend needs the AWS SDK: install stt-service[sagemaker] ({exc})"
            ) from None
        s = self.settings
        self._client = await make_client(
            s.aws_region,
            endpoint_uri=s.aws_endpoint_url_sagemaker_runtime_http2 or None,
            ca_bundle=s.aws_ca_bundle or None,
        )
        log.info("%s", self.describe())

    def ready(self) -> bool:
        return self._client is not None

    def describe(self) -> str:
        s = self.settings
        endpoint = s.sagemaker_endpoint_name
        return f"Deepgram {s.flux_model} on SageMaker endpoint {endpoint} ({s.aws_region})"

    def open_stream(self, params: StreamParams) -> FluxStream:
        return FluxStream(self, params)

    async def connect(self, query: str) -> Any:
        from .transports.sagemaker import SageMakerDuplex

        return await SageMakerDuplex.open(
            self._client, self.settings.sagemaker_endpoint_name, PATH, query
        )

    async def aclose(self) -> None:
        self._client = None


class FluxStream:
    """One session's Flux stream: audio and control messages out, turn events in."""

    def __init__(self, backend: FluxSageMaker, params: StreamParams) -> None:
        self._backend = backend
        self._session = params.session_id
        self._options = backend.options.for_session(params)
        self._rx = FluxReceiver()
        self._events: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
        self._outbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self._pending = bytearray()
        self._overflowed = False
        self._closing = False
        self._connecting = False
        self._task = asyncio.create_task(self._run(), name=f"flux-{params.session_id}")

    # --- RecognizerStream -----------------------------------------------------------------------
    def send_audio(self, samples: Int16Array, offset: int, utterance: int) -> None:
        self._pending += samples.astype("<i2", copy=False).tobytes()
        while len(self._pending) >= CHUNK_BYTES:
            self._queue(bytes(self._pending[:CHUNK_BYTES]))
            del self._pending[:CHUNK_BYTES]

    def flush(self, utterance: int, until: int | None = None) -> None:
        self._flush_pending()
        self._queue(FORCE_END_TURN)

    def configure(self, params: StreamParams) -> None:
        options = self._backend.options.for_session(params)
        if options != self._options:
            self._options = options
            if self._connecting:  # else the options go in the query string (e.g. from start)
                self._queue(options.configure_message())

    async def aclose(self) -> None:
        if not self._closing:
            self._closing = True
            self._flush_pending()
            self._outbox.put_nowait(CLOSE_STREAM)
            self._outbox.put_nowait(None)
        await self._task

    async def events(self) -> AsyncIterator[StreamEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    # --- internals ------------------------------------------------------------------------------
    def _flush_pending(self) -> None:
        if self._pending:
            self._queue(bytes(self._pending))
            self._pending.clear()

    def _queue(self, item: bytes | str) -> None:
        if self._closing:
            return
        if isinstance(item, bytes) and self._outbox.qsize() >= MAX_QUEUED_CHUNKS:
            if not self._overflowed:
                self._overflowed = True
                self._events.put_nowait(
                    RecognitionError(
                        Code.BACKEND_ERROR,
                        f"Flux is not keeping up: over {MAX_QUEUED_CHUNKS * 80 // 1000} s of audio "
                        "is waiting to be sent; newer audio is dropped until it catches up",
                    )
                )
            return
        self._overflowed = False
        self._outbox.put_nowait(item)

    async def _run(self) -> None:
        self._connecting = True
        query = self._options.query_string()
        try:
            endpoint = self._backend.settings.sagemaker_endpoint_name
            try:
                duplex = await asyncio.wait_for(self._backend.connect(query), CONNECT_WAIT_S)
            except TimeoutError:
                self._fail(
                    f"cannot open a Flux stream on SageMaker endpoint {endpoint!r}: no "
                    f"connection within {CONNECT_WAIT_S:g} s"
                )
                await self._discard_outbox()
                return
            except Exception as exc:
                detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                self._fail(
                    f"cannot open a Flux stream on SageMaker endpoint {endpoint!r}: {detail}"
                )
                await self._discard_outbox()
                return
            reader = asyncio.create_task(self._read(duplex))
            try:
                while (item := await self._outbox.get()) is not None:
                    if isinstance(item, bytes):
                        await duplex.send_binary(item)
                    else:
                        await duplex.send_text(item)
                await duplex.close_input()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), CLOSE_WAIT_S)
            except Exception as exc:
                self._fail(f"the Flux stream failed: {str(exc) or type(exc).__name__}")
                await self._discard_outbox()
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
                await duplex.aclose()
        finally:
            self._events.put_nowait(None)

    async def _read(self, duplex: Any) -> None:
        try:
            while (message := await duplex.receive()) is not None:
                for event in self._rx.feed(message):
                    self._events.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(f"Flux reported: {getattr(exc, 'message', None) or exc}")

    def _fail(self, message: str) -> None:
        log.error("session %s: %s", self._session, message)
        self._events.put_nowait(RecognitionError(Code.BACKEND_ERROR, message))

    async def _discard_outbox(self) -> None:
        """After a failure: take what the session still sends until it closes, and drop it."""
        while await self._outbox.get() is not None:
            pass
