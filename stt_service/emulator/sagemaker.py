"""A local stand-in for SageMaker's bidirectional-streaming runtime (HTTP/2 over TLS, port 8443).

``POST /endpoints/{name}/invocations-bidirectional-stream`` with AWS event-stream frames both
ways: each request event is a signed wrapper (signatures are not checked) around a ``PayloadPart``
event; responses are plain ``PayloadPart`` events. The model invocation path picks the model:
``v2/listen`` is a :class:`~.flux.FluxEmulator`. Lets the real AWS SDK be tested end to end with
no AWS account. Serve it with :class:`SageMakerEmulator` (hypercorn, a throwaway ``trustme`` CA).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import struct
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smithy_aws_event_stream.events import Event, EventMessage

from ..embedded import free_port
from .flux import FluxEmulator

PATH_RE = re.compile(r"^/endpoints/([^/]+)/invocations-bidirectional-stream$")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def payload_part(data: bytes, data_type: str) -> bytes:
    return EventMessage(
        headers={
            ":message-type": "event",
            ":event-type": "PayloadPart",
            ":content-type": "application/octet-stream",
            "DataType": data_type,
            "CompletionState": "COMPLETE",
        },
        payload=data,
    ).encode()


class FrameSplitter:
    """Incremental AWS event-stream decoder: bytes in, complete events out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[EventMessage]:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            (total,) = struct.unpack("!I", self._buf[:4])
            if len(self._buf) < total:
                break
            frame = bytes(self._buf[:total])
            del self._buf[:total]
            event = Event.decode(io.BytesIO(frame))
            if event is not None:
                out.append(event.message)
        return out


@dataclass
class RecordedRequest:
    endpoint: str
    invocation_path: str | None
    query_string: str | None
    http_version: str | None


@dataclass
class SageMakerApp:
    """The ASGI application. ``script`` is what Flux 'hears' in each turn."""

    script: Sequence[str] = ("hello world",)
    endpoints: frozenset[str] | None = None  # None: every endpoint name exists
    requests: list[RecordedRequest] = field(default_factory=list)
    streams: list[FluxEmulator] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        match = PATH_RE.match(scope["path"])
        if scope["method"] != "POST" or match is None:
            await _error(send, receive, 404, "UnknownOperationException", "no such operation")
            return
        path = headers.get("x-amzn-sagemaker-model-invocation-path")
        query = headers.get("x-amzn-sagemaker-model-query-string", "")
        self.requests.append(
            RecordedRequest(match.group(1), path, query, scope.get("http_version"))
        )
        if self.endpoints is not None and match.group(1) not in self.endpoints:
            await _error(
                send,
                receive,
                400,
                "ValidationError",
                f"Endpoint {match.group(1)} of account 000000000000 not found.",
            )
            return
        if path != "v2/listen":
            await _error(
                send,
                receive,
                400,
                "ValidationError",
                f"model invocation path {path!r} is not served by this endpoint",
            )
            return
        model = FluxEmulator(query=query, script=self.script)
        self.streams.append(model)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/vnd.amazon.eventstream"),
                    (b"x-amzn-invoked-production-variant", b"AllTraffic"),
                ],
            }
        )
        out: asyncio.Queue[bytes | None] = asyncio.Queue()
        for text in model.connected():
            out.put_nowait(payload_part(text.encode(), "UTF8"))

        async def reader() -> None:
            # hypercorn's receive queue must be drained for the whole request, or it stalls
            frames = FrameSplitter()
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    out.put_nowait(None)
                    return
                for wrapper in frames.feed(msg.get("body", b"")):
                    if not wrapper.payload:
                        continue  # the signed end-of-stream frame
                    inner = Event.decode(io.BytesIO(wrapper.payload))
                    if inner is None or inner.message.headers.get(":event-type") != "PayloadPart":
                        continue
                    data = inner.message.payload
                    if inner.message.headers.get("DataType") == "UTF8":
                        replies = model.on_text(data.decode())
                    else:
                        replies = model.on_audio(data)
                    for text in replies:
                        out.put_nowait(payload_part(text.encode(), "UTF8"))
                if not msg.get("more_body", False):
                    out.put_nowait(None)  # the client's input ended: so does the response
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    return

        task = asyncio.create_task(reader())
        try:
            while (chunk := await out.get()) is not None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()


async def _error(send: Send, receive: Receive, status: int, kind: str, message: str) -> None:
    """Answer at once, as SageMaker does, while the client may still be sending; then drain."""
    body = json.dumps({"__type": kind, "message": message, "Message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-amzn-errortype", kind.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect" or not msg.get("more_body", False):
            return


def _tolerate_late_data() -> None:
    """hypercorn 0.18 drops the whole connection (every stream on it) when DATA arrives for a
    stream whose response already ended, e.g. the SDK's end-of-stream frame after an early HTTP
    error. Drop such DATA instead, still crediting flow control."""
    import h2.events
    from hypercorn.protocol.h2 import H2Protocol

    original = H2Protocol._handle_events
    if getattr(original, "_tolerates_late_data", False):
        return

    async def handle(self: Any, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, h2.events.DataReceived) and ev.stream_id not in self.streams:
                with contextlib.suppress(Exception):
                    self.connection.acknowledge_received_data(
                        ev.flow_controlled_length, ev.stream_id
                    )
                continue
            await original(self, [ev])

    handle._tolerates_late_data = True  # type: ignore[attr-defined]
    H2Protocol._handle_events = handle  # type: ignore[method-assign]


class SageMakerEmulator:
    """``async with SageMakerEmulator() as emu:`` serves on ``emu.url``; trust ``emu.ca_path``."""

    def __init__(
        self,
        script: Sequence[str] = ("hello world",),
        port: int | None = None,
        endpoints: Sequence[str] | None = None,
    ) -> None:
        self.app = SageMakerApp(
            script=script, endpoints=None if endpoints is None else frozenset(endpoints)
        )
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="stt-sagemaker-emulator-")
        self.ca_path = str(Path(self._dir.name) / "ca.pem")
        self._shutdown = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __aenter__(self) -> SageMakerEmulator:
        import trustme
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        _tolerate_late_data()
        ca = trustme.CA()
        ca.cert_pem.write_to_path(self.ca_path)
        chain = str(Path(self._dir.name) / "server.pem")
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(chain)
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.certfile = config.keyfile = chain
        config.alpn_protocols = ["h2"]
        config.loglevel = "WARNING"
        self._task = asyncio.create_task(
            serve(self.app, config, shutdown_trigger=self._shutdown.wait)  # type: ignore[arg-type]
        )
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.025)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._shutdown.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        self._dir.cleanup()
