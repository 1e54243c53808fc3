"""A realtime ASR server for tests, benchmarks and ``stt-service emulate``: vLLM Realtime and
OpenAI Realtime (transcription mode), with real recognition by the bundled Whisper tiny.en.

:class:`RealtimeEmulator` is one connection, speaking either dialect exactly (see
:mod:`stt_service.backends.realtime.protocol`); :class:`RealtimeServer` serves it over WebSocket
at ``/v1/realtime`` (``?intent=transcription`` picks the OpenAI dialect, as OpenAI's URL has it),
and the SageMaker emulator serves it when no model invocation path is given, as the AWS sample's
bridge container does (its model query string carries ``intent=transcription`` for OpenAI).

vLLM's semantics are kept where a client can trip on them: a commit while a generation runs is
dropped silently; audio appended between the final commit and ``transcription.done`` is
discarded; ``done.text`` is the concatenation of the deltas; a generation longer than
``max_audio_s`` (``--max-model-len``) kills the connection with no error frame, as the engine's
death does. Deltas come while audio arrives: words two successive decodes agree on that ended a
second before the audio did (word timestamps), as a streaming model's stable prefix. Faults
(:class:`RealtimeFaults`): a dropped connection, an error event in mid-generation, a refused model.

The connection is :mod:`.realtime_session` (with :mod:`.realtime_decode`), the model behind it
:mod:`.transcriber`; this module serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

from ..bus.embedded import free_port
from .realtime_session import RealtimeEmulator, RealtimeFaults
from .transcriber import Transcriber, shared_transcriber

__all__ = ["RealtimeEmulator", "RealtimeFaults", "RealtimeServer", "shared_transcriber"]


class RealtimeServer:
    """``async with RealtimeServer() as srv:`` serves ``srv.url`` (``ws://.../v1/realtime``).

    ``api_key``: when set, only ``Authorization: Bearer <key>`` is accepted (401 otherwise).
    ``served_model``: the only model accepted (None: any for vLLM, OpenAI's names for OpenAI).
    ``faults``: per-connection faults, in order. ``streams``: every connection's emulator."""

    def __init__(
        self,
        *,
        port: int | None = None,
        api_key: str | None = None,
        served_model: str | None = None,
        max_audio_s: float | None = None,
        partials: bool = True,
        faults: RealtimeFaults | None = None,
        transcriber: Transcriber | None = None,
    ) -> None:
        self.port = port or free_port()
        self.api_key = api_key
        self.served_model = served_model
        self.max_audio_s = max_audio_s
        self.partials = partials
        self.faults = faults or RealtimeFaults()
        self.transcriber = transcriber
        self.streams: list[RealtimeEmulator] = []
        self.refused = 0
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def model(self, query: str) -> RealtimeEmulator:
        """A fresh emulator for one connection (also what the SageMaker emulator serves)."""
        n = len(self.streams)
        drops, errors = self.faults.drop_after_bytes, self.faults.error_after_bytes
        stalls = self.faults.stall_after_bytes
        emu = RealtimeEmulator(
            query,
            served_model=self.served_model,
            transcriber=self.transcriber,
            max_audio_s=self.max_audio_s,
            partials=self.partials,
            drop_after_bytes=drops[n] if n < len(drops) else None,
            error_after=errors[n] if n < len(errors) else None,
            stall_after_bytes=stalls[n] if n < len(stalls) else None,
        )
        self.streams.append(emu)
        return emu

    async def __aenter__(self) -> RealtimeServer:
        from websockets.asyncio.server import serve

        self._server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            process_request=self._process_request,
            max_size=16 * 2**20,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 10)
            self._server = None

    def _process_request(self, connection: Any, request: Any) -> Any:
        path = "/" + urlsplit(request.path).path.strip("/")
        if path != "/v1/realtime":
            self.refused += 1
            return connection.respond(404, f"no such route: {path}\n")
        if self.api_key is not None:
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.api_key}":
                self.refused += 1
                return connection.respond(401, "invalid API key\n")
        return None

    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        model = self.model(urlsplit(ws.request.path).query)
        out: asyncio.Queue[str | None] = asyncio.Queue()
        model.bind(out.put_nowait)

        async def writer() -> None:
            while (text := await out.get()) is not None:
                await ws.send(text)
            ws.transport.abort()  # the engine died: no close frame

        task = asyncio.create_task(writer())
        try:
            for text in model.connected():
                out.put_nowait(text)
            async for message in ws:
                replies = (
                    model.on_text(message) if isinstance(message, str) else model.on_audio(message)
                )
                for text in replies:
                    out.put_nowait(text)
                if task.done():
                    break
        except ConnectionClosed:
            pass
        finally:
            model.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 0.5)
            task.cancel()
