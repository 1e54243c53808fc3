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

from ..bus.embedded import free_port
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
class Fault:
    """What the emulator does to one request instead of serving it normally (tests' knobs).

    With ``status``, the request is answered at once with that HTTP status and
    ``x-amzn-errortype: error_type`` (429 ``ThrottlingException``, 503 ``ServiceUnavailable``,
    400 ``ValidationError``, 424 ``ModelError``...). With ``after_bytes``, the stream is served
    and fails once the model has received that many audio bytes: an in-stream exception event
    ``stream_error`` (``InternalStreamFailure``, ``ModelStreamError``), ``"reset"`` to cut
    the HTTP/2 stream, or ``"stall"``: the stream stays open and keeps reading, and the model
    neither hears nor says anything more (a hung model: pipecat-ai/pipecat#5735).
    """

    status: int | None = None
    error_type: str = ""
    message: str = "injected fault"
    retry_after: float | None = None
    after_bytes: int | None = None
    stream_error: str = "InternalStreamFailure"


def exception_event(kind: str, message: str, error_code: str | None = None) -> bytes:
    body: dict[str, str] = {"Message": message}
    if error_code:
        body["ErrorCode"] = error_code
    return EventMessage(
        headers={
            ":message-type": "exception",
            ":exception-type": kind,
            ":content-type": "application/json",
        },
        payload=json.dumps(body).encode(),
    ).encode()


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
    streams: list[Any] = field(default_factory=list)  # the model of each served stream
    faults: list[Fault] = field(default_factory=list)  # consumed one per request, in order
    keep_audio: bool = False  # record each stream's audio in ``audio``
    stalls: int = 0  # streams a "stall" fault hung
    # a new stream goes on with the script where the earlier streams' turns left it, as the
    # same speaker would after a reconnect (for single-session fault tests)
    resume_script: bool = False
    audio: list[bytearray] = field(default_factory=list)
    on_reset: Callable[[], None] | None = None  # cuts the TCP connections (see ``_Relay``)
    # invocation path -> model factory, over :func:`_models` (``""``: no path, the realtime
    # bridge's container)
    models: dict[str, Callable[..., Any]] = field(default_factory=dict)

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
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None and fault.status is not None:
            await _error(
                send, receive, fault.status, fault.error_type, fault.message, fault.retry_after
            )
            return
        if self.endpoints is not None and match.group(1) not in self.endpoints:
            await _error(
                send,
                receive,
                400,
                "ValidationError",
                f"Endpoint {match.group(1)} of account 000000000000 not found.",
            )
            return
        factory = {**_models(), **self.models}.get(path or "")
        if factory is None:
            await _error(
                send,
                receive,
                400,
                "ValidationError",
                f"model invocation path {path!r} is not served by this endpoint",
            )
            return
        script = list(self.script)
        if self.resume_script and script:
            done = sum(getattr(m, "turns_done", 0) for m in self.streams) % len(script)
            script = script[done:] + script[:done]
        model = factory(query=query, script=script)
        self.streams.append(model)
        recorded = bytearray()
        if self.keep_audio:
            self.audio.append(recorded)
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
        stalled = False  # a "stall" fault struck: read on, say nothing

        def later(text: str | None) -> None:
            if not stalled:
                out.put_nowait(None if text is None else payload_part(text.encode(), "UTF8"))

        if hasattr(model, "bind"):  # a model that answers later too (the realtime emulator)
            model.bind(later)
        for text in model.connected():
            out.put_nowait(payload_part(text.encode(), "UTF8"))

        async def reader() -> None:
            nonlocal stalled
            # hypercorn's receive queue must be drained for the whole request, or it stalls
            frames = FrameSplitter()
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    out.put_nowait(None)
                    return
                for wrapper in frames.feed(msg.get("body", b"")):
                    if not wrapper.payload or stalled:
                        continue  # the signed end-of-stream frame, or a hung model
                    inner = Event.decode(io.BytesIO(wrapper.payload))
                    if inner is None or inner.message.headers.get(":event-type") != "PayloadPart":
                        continue
                    data = inner.message.payload
                    if inner.message.headers.get("DataType") == "UTF8":
                        replies = model.on_text(data.decode())
                    else:
                        replies = model.on_audio(data)
                        if self.keep_audio:
                            recorded.extend(data)
                    for text in replies:
                        out.put_nowait(payload_part(text.encode(), "UTF8"))
                    if (
                        fault is not None
                        and fault.after_bytes is not None
                        and model.received_bytes >= fault.after_bytes
                    ):
                        if fault.stream_error == "stall":
                            stalled = True
                            self.stalls += 1
                            continue
                        if fault.stream_error == "reset" and self.on_reset is not None:
                            self.on_reset()  # a connection reset: every stream on it fails
                        else:
                            event = exception_event(fault.stream_error, fault.message)
                            out.put_nowait(event)
                            out.put_nowait(None)
                        while (await receive())["type"] != "http.disconnect":
                            pass
                        return
                if not msg.get("more_body", False):
                    if stalled:
                        continue  # hung: the response stays open until the client goes
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
            if hasattr(model, "close"):
                model.close()
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()


def _models() -> dict[str, Callable[..., Any]]:
    """The model behind each invocation path."""
    models: dict[str, Callable[..., Any]] = {"v2/listen": FluxEmulator}
    with contextlib.suppress(ImportError):
        from .realtime import RealtimeEmulator

        models[""] = lambda query, script: RealtimeEmulator(query, script)
    with contextlib.suppress(ImportError):
        from .nova import NovaEmulator

        models["v1/listen"] = NovaEmulator
    return models


async def _error(
    send: Send,
    receive: Receive,
    status: int,
    kind: str,
    message: str,
    retry_after: float | None = None,
) -> None:
    """Answer at once, as SageMaker does, while the client may still be sending; then drain."""
    fields = {"__type": kind, "message": message, "Message": message}
    body = json.dumps({k: v for k, v in fields.items() if v}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if kind:
        headers.append((b"x-amzn-errortype", kind.encode()))
    if retry_after is not None:
        headers.append((b"retry-after", f"{retry_after:g}".encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
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


class _Relay:
    """A TCP relay in front of the server whose :meth:`cut` aborts every connection through it,
    as a network failure or a load balancer restart would (TLS passes through untouched)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self.cuts = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer.transport, up_writer.transport)
        self._transports.update(pair)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._transports.difference_update(pair)

    def cut(self) -> None:
        self.cuts += 1
        for transport in list(self._transports):
            transport.abort()

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


class SageMakerEmulator:
    """``async with SageMakerEmulator() as emu:`` serves on ``emu.url``; trust ``emu.ca_path``."""

    def __init__(
        self,
        script: Sequence[str] = ("hello world",),
        port: int | None = None,
        endpoints: Sequence[str] | None = None,
        faults: Sequence[Fault] = (),
        keep_audio: bool = False,
        relay: bool = False,
        resume_script: bool = False,
        models: dict[str, Callable[..., Any]] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.app = SageMakerApp(
            script=script,
            endpoints=None if endpoints is None else frozenset(endpoints),
            faults=list(faults),
            keep_audio=keep_audio,
            resume_script=resume_script,
            models=dict(models or {}),
        )
        # connection resets need a relay to cut; clients connect through it
        self._relay: _Relay | None = None
        if relay or any(f.stream_error == "reset" for f in faults):
            self._relay = _Relay(self.port)
            self.app.on_reset = self._relay.cut
        self._dir = tempfile.TemporaryDirectory(prefix="stt-sagemaker-emulator-")
        self.ca_path = str(Path(self._dir.name) / "ca.pem")
        self._shutdown = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        port = self._relay.port if self._relay is not None else self.port
        return f"https://127.0.0.1:{port}"

    def cut_connections(self) -> None:
        """Abort every client connection (only with ``relay=True`` or a ``reset`` fault)."""
        if self._relay is None:
            raise RuntimeError("cut_connections needs SageMakerEmulator(relay=True)")
        self._relay.cut()

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
        if self._relay is not None:
            await self._relay.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._relay is not None:
            await self._relay.aclose()
        self._shutdown.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        self._dir.cleanup()
