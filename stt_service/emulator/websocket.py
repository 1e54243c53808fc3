"""A local stand-in for Deepgram's hosted WebSocket API (``wss://api.deepgram.com``), over ``ws://``.

``GET /v2/listen?...`` (Flux, a :class:`~.flux.FluxEmulator`) and ``GET /v1/listen?...`` (Nova, a
``NovaEmulator``) upgraded to WebSocket, authenticated as Deepgram does with
``Authorization: Token <key>``: a wrong or missing key is refused with HTTP 401 and a short JSON
body, an unknown path with 404. Binary frames are audio, text frames control messages; every
reply goes back as a text frame, and once the model has seen ``CloseStream`` the server closes the
socket with 1000 after its last replies. Lets the real ``websockets`` client (and
:class:`~stt_service.backends.transports.websocket.WebSocketConnector`) be tested end to end.

Faults for reconnect tests: ``drop_after_bytes`` cuts the first stream off once it has received
that much audio (the TCP connection is aborted, no close frame; or closed with ``drop_close``'s
code and reason), ``stall_after_bytes`` hangs the first stream's model once it has received that
much (the socket stays open and is read, nothing more is answered, ``CloseStream`` included), and
``reject`` refuses the next handshakes with given HTTP statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..bus.embedded import free_port
from .flux import FluxEmulator

MAX_MESSAGE_BYTES = 16 * 2**20


class StreamModel(Protocol):
    """What a model emulator offers: the JSON strings to send back for each client message."""

    @property
    def closed(self) -> bool: ...

    def connected(self) -> list[str]: ...

    def on_audio(self, pcm: bytes) -> list[str]: ...

    def on_text(self, text: str) -> list[str]: ...


ModelFactory = Callable[[str, Sequence[str]], StreamModel]
"""``factory(query, script)``: a fresh model for one stream."""


def _flux(query: str, script: Sequence[str]) -> StreamModel:
    return FluxEmulator(query=query, script=script)


def _nova(query: str, script: Sequence[str]) -> StreamModel:
    # imported when a /v1/listen stream opens, so this module works without it
    nova = importlib.import_module("stt_service.emulator.nova")
    return cast(StreamModel, nova.NovaEmulator(query=query, script=script))


def default_models() -> dict[str, ModelFactory]:
    """The paths served when ``models`` is not given."""
    return {"/v2/listen": _flux, "/v1/listen": _nova}


@dataclass
class RecordedRequest:
    """One handshake: the path, the raw query string, the headers (names lower-cased, the key in
    ``authorization`` replaced by ``***``) and the status answered (101 when accepted)."""

    path: str
    query: str
    headers: dict[str, str]
    status: int = 101


@dataclass(frozen=True)
class Rejection:
    """An HTTP answer instead of the WebSocket upgrade (``Rejection(429, headers={"Retry-After":
    "2"})``); ``body`` defaults to a Deepgram-style JSON error."""

    status: int
    body: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class DeepgramWebSocketEmulator:
    """``async with DeepgramWebSocketEmulator() as emu:`` serves on ``emu.url`` (``ws://``).

    ``script``: what the models 'hear', one line per turn. ``api_key``: the only key accepted.
    ``models``: path -> factory, replacing :func:`default_models` when given. ``requests`` and
    ``streams`` (the model objects, in order) record what happened.
    """

    def __init__(
        self,
        script: Sequence[str] = ("hello world",),
        api_key: str = "test-key",
        port: int | None = None,
        models: Mapping[str, ModelFactory] | None = None,
        *,
        drop_after_bytes: int | None = None,
        drop_close: tuple[int, str] | None = None,
        stall_after_bytes: int | None = None,
        reject: Sequence[Rejection] = (),
    ) -> None:
        self.script = script
        self.api_key = api_key
        self.port = port or free_port()
        routes = default_models() if models is None else models
        self.models = {_norm(p): f for p, f in routes.items()}
        self.drop_after_bytes = drop_after_bytes
        self.drop_close = drop_close
        self.stall_after_bytes = stall_after_bytes
        self.stalls = 0
        self.reject = list(reject)
        self.requests: list[RecordedRequest] = []
        self.streams: list[StreamModel] = []
        self.dropped = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> DeepgramWebSocketEmulator:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            process_request=self._process_request,
            max_size=MAX_MESSAGE_BYTES,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 10)
            self._server = None

    # --- handshake ------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        split = urlsplit(request.path)
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        auth = headers.get("authorization")
        if auth is not None:
            headers["authorization"] = f"{auth.partition(' ')[0]} ***"
        record = RecordedRequest(_norm(split.path), split.query, headers)
        self.requests.append(record)

        answer: Rejection | None = None
        scheme, _, key = (auth or "").partition(" ")
        if scheme.lower() != "token" or key.strip() != self.api_key:
            answer = Rejection(401, _error_body("INVALID_AUTH", "Invalid credentials."))
        elif record.path not in self.models:
            answer = Rejection(404, _error_body("NOT_FOUND", f"No such route: {record.path}"))
        elif self.reject:
            answer = self.reject.pop(0)
        if answer is None:
            return None
        record.status = answer.status
        return _response(connection, answer)

    # --- one stream -----------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        split = urlsplit(ws.request.path)
        model = self.models[_norm(split.path)](split.query, self.script)
        first = not self.streams
        self.streams.append(model)
        drop_at = self.drop_after_bytes if first else None
        stall_at = self.stall_after_bytes if first else None
        received = 0
        try:
            for text in model.connected():
                await ws.send(text)
            async for message in ws:
                if stall_at is not None and received >= stall_at:
                    continue  # hung: read on, answer nothing
                if isinstance(message, str):
                    replies = model.on_text(message)
                else:
                    received += len(message)
                    if drop_at is not None and received >= drop_at:
                        await self._drop(ws)
                        return
                    if stall_at is not None and received >= stall_at:
                        self.stalls += 1
                        continue
                    replies = model.on_audio(message)
                for text in replies:
                    await ws.send(text)
                if model.closed:
                    await ws.close()  # 1000, once every reply is on its way
                    return
        except ConnectionClosed:
            return  # the client went away

    async def _drop(self, ws: ServerConnection) -> None:
        self.dropped += 1
        if self.drop_close is None:
            ws.transport.abort()  # no close frame: the client sees the connection reset
        else:
            code, reason = self.drop_close
            await ws.close(code, reason)


def _norm(path: str) -> str:
    return "/" + path.strip("/")


def _error_body(code: str, message: str) -> str:
    return json.dumps({"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())})


def _response(connection: ServerConnection, answer: Rejection) -> Response:
    body = answer.body
    if body is None:
        body = _error_body(f"HTTP_{answer.status}", f"HTTP {answer.status}")
    response = connection.respond(answer.status, body)
    extra = dict(answer.headers)
    if body.lstrip().startswith("{"):
        extra.setdefault("Content-Type", "application/json")
    for name, value in extra.items():
        if name in response.headers:
            del response.headers[name]
        response.headers[name] = value
    return response
