"""SageMaker ``InvokeEndpointWithBidirectionalStream`` as a duplex byte/text channel.

Built on the AWS SDK (``aws-sdk-sagemaker-runtime-http2``) with the awscrt HTTP/2 transport, one
client shared by every session. The endpoint is ``https://runtime.sagemaker.{region}.amazonaws.com:8443``
unless ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2`` overrides it; credentials come from the standard
AWS chain. ``AWS_CA_BUNDLE`` is applied here, because the awscrt transport does not read it.

The SDK never retries this call and its errors carry no uniform status: :func:`classify` turns
each into a :class:`~.base.TransportError` that says whether a retry can help (measured with the
local emulator; see the README's fault table).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from copy import deepcopy
from typing import Any

from aws_sdk_sagemaker_runtime_http2.client import AsyncSageMakerRuntimeHTTP2Client
from aws_sdk_sagemaker_runtime_http2.config import AsyncSageMakerRuntimeHTTP2Config
from aws_sdk_sagemaker_runtime_http2.models import (
    InputValidationError,
    InternalServerError,
    InternalStreamFailure,
    InvokeEndpointWithBidirectionalStreamInput,
    ModelError,
    ModelStreamError,
    RequestPayloadPart,
    RequestStreamEventPayloadPart,
    ResponseStreamEventInternalStreamFailure,
    ResponseStreamEventModelStreamError,
    ResponseStreamEventPayloadPart,
    ServiceUnavailableError,
)
from awscrt import io as crt_io
from smithy_core.exceptions import CallError, SmithyError
from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig

from .base import TransportError

_StreamErrorEvents = (ResponseStreamEventModelStreamError, ResponseStreamEventInternalStreamFailure)
CLOSE_TIMEOUT_S = 0.5
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
AUTH_STATUS = frozenset({401, 403})


def default_endpoint(region: str) -> str:
    return os.environ.get(
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2",
        f"https://runtime.sagemaker.{region}.amazonaws.com:8443",
    )


class _CRTClient(AWSCRTHTTPClient):
    """awscrt over HTTP/2 only, trusting an extra CA bundle when one is given. The SDK deep-copies
    its transport, and the base class's copy would forget the TLS context: keep it."""

    def __init__(self, ca_bundle: str | None = None, *, tls: Any = None, **kw: Any) -> None:
        kw.setdefault("client_config", AWSCRTHTTPClientConfig(force_http_2=True))
        super().__init__(**kw)
        self._ca_bundle = ca_bundle
        if tls is None and ca_bundle:
            opts = crt_io.TlsContextOptions()
            opts.override_default_trust_store_from_path(ca_filepath=ca_bundle)
            tls = crt_io.ClientTlsContext(opts)
        if tls is not None:
            self._tls_ctx = tls

    def __deepcopy__(self, memo: dict[int, Any]) -> _CRTClient:
        return _CRTClient(
            self._ca_bundle,
            tls=self._tls_ctx,
            eventloop=self._eventloop,
            client_config=deepcopy(self._config, memo),
        )


async def make_client(
    region: str, endpoint_uri: str | None = None, ca_bundle: str | None = None
) -> AsyncSageMakerRuntimeHTTP2Client:
    """One client for the whole worker."""
    config = await AsyncSageMakerRuntimeHTTP2Config.resolve(
        endpoint_uri=endpoint_uri or default_endpoint(region),
        region=region,
        transport=_CRTClient(ca_bundle or os.environ.get("AWS_CA_BUNDLE") or None),
    )
    return AsyncSageMakerRuntimeHTTP2Client(config=config)


def classify(exc: BaseException) -> TransportError:
    """What an SDK or awscrt failure means for the stream: retry, or give up and say why.

    Retryable: throttling (429), 5xx and ``ServiceUnavailable``, ``InternalStreamFailure``,
    connection-level errors, error responses the SDK cannot read (a proxy's 502 page).
    Terminal: validation (400, which is also how an unknown endpoint answers), authentication
    (401/403: bad or expired credentials), ``ModelError`` (424: the model refused the request),
    ``ModelStreamError`` (the model failed the stream), a TLS failure.
    """
    if isinstance(exc, TransportError):
        return exc
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, ModelStreamError):
        code = f" {exc.error_code}" if exc.error_code else ""
        return TransportError(
            f"the model failed the stream{code}: {message}",
            retryable=False,
            cause="ModelStreamError",
        )
    if isinstance(exc, InternalStreamFailure):
        return TransportError(
            f"internal stream failure: {message}", retryable=True, cause="InternalStreamFailure"
        )
    if isinstance(exc, ServiceUnavailableError | InternalServerError):
        return TransportError(message, retryable=True, cause=type(exc).__name__)
    if isinstance(exc, ModelError):
        return TransportError(
            f"the model refused the request (HTTP 424): {message}",
            retryable=False,
            cause="ModelError",
        )
    if isinstance(exc, InputValidationError):
        return TransportError(
            f"invalid request (HTTP 400): {message}", retryable=False, cause="ValidationError"
        )
    if isinstance(exc, CallError):
        status = exc.response_metadata.http_status_code
        kind = _error_type(message)
        shown = f"HTTP {status}" + (f" {kind}" if kind else "") if status else message
        if exc.is_throttling_error or status == 429:
            return TransportError(
                f"throttled ({shown})",
                retryable=True,
                cause=kind or "ThrottlingException",
                retry_after=exc.retry_after,
            )
        if status in AUTH_STATUS:
            return TransportError(
                f"not authorised ({shown}): check the AWS credentials and the role's "
                "sagemaker:InvokeEndpointWithBidirectionalStream permission",
                retryable=False,
                cause=kind or f"HTTP {status}",
            )
        if status in RETRYABLE_STATUS or (status is None and exc.fault == "server"):
            return TransportError(shown, retryable=True, cause=kind or f"HTTP {status}")
        if status is not None and 400 <= status < 500:
            return TransportError(
                f"rejected ({shown})", retryable=False, cause=kind or f"HTTP {status}"
            )
        return TransportError(shown, retryable=bool(exc.is_retry_safe), cause=kind or "error")
    if isinstance(exc, SmithyError):  # an error response the SDK could not read (no error type)
        return TransportError(
            f"unreadable error response ({type(exc).__name__}: {message})",
            retryable=True,
            cause="unreadable error",
        )
    crt_name = getattr(exc, "name", "")
    if "TLS" in crt_name:
        return TransportError(
            f"TLS failure ({crt_name}): check AWS_CA_BUNDLE and the endpoint URL",
            retryable=False,
            cause=crt_name,
        )
    if crt_name or isinstance(exc, OSError | ConnectionError | TimeoutError | RuntimeError):
        # awscrt's AwsCrtError (connection closed, refused, socket timeout...) and friends
        return TransportError(
            f"connection failed: {message}", retryable=True, cause=crt_name or "connection reset"
        )
    return TransportError(f"{type(exc).__name__}: {message}", retryable=False, cause="error")


def _error_type(message: str) -> str:
    """The error type the SDK's generic message carries (``... - id: ns#ThrottlingException``)."""
    if " - id: " not in message:
        return ""
    kind = message.rpartition(" - id: ")[2].rpartition("#")[2].strip(" .,")
    return kind if kind.isidentifier() else ""


class SageMakerConnector:
    """Opens Flux/Nova streams on one SageMaker endpoint through one shared SDK client."""

    def __init__(self, client: AsyncSageMakerRuntimeHTTP2Client, endpoint: str, region: str):
        self._client: AsyncSageMakerRuntimeHTTP2Client | None = client
        self.endpoint = endpoint
        self.region = region

    @classmethod
    async def create(
        cls,
        endpoint: str,
        region: str,
        endpoint_uri: str | None = None,
        ca_bundle: str | None = None,
    ) -> SageMakerConnector:
        client = await make_client(region, endpoint_uri=endpoint_uri, ca_bundle=ca_bundle)
        return cls(client, endpoint, region)

    async def open(self, path: str, query: str) -> SageMakerDuplex:
        if self._client is None:
            raise TransportError("the SageMaker client is closed", retryable=False)
        try:
            return await SageMakerDuplex.open(self._client, self.endpoint, path, query)
        except TransportError:
            raise
        except Exception as exc:
            raise classify(exc) from exc

    def describe(self) -> str:
        return f"SageMaker endpoint {self.endpoint!r} ({self.region})"

    async def aclose(self) -> None:
        self._client = None


class SageMakerDuplex:
    """One bidirectional stream: binary audio and text control messages out, model output in.
    Every method raises :class:`~.base.TransportError` on failure."""

    def __init__(self, stream: Any, receiver: Any) -> None:
        self._stream = stream
        self._receiver = receiver
        self._input_closed = False

    @classmethod
    async def open(
        cls, client: AsyncSageMakerRuntimeHTTP2Client, endpoint_name: str, path: str, query: str
    ) -> SageMakerDuplex:
        """Connect; HTTP-level failures (unknown endpoint, throttling, 5xx) raise here."""
        stream = await client.invoke_endpoint_with_bidirectional_stream(
            InvokeEndpointWithBidirectionalStreamInput(
                endpoint_name=endpoint_name,
                model_invocation_path=path or None,  # none: the container's own WebSocket path
                model_query_string=query or None,
            )
        )
        try:
            _, receiver = await stream.await_output()
        except BaseException as exc:
            await _quietly_close(stream)
            if isinstance(exc, Exception):
                raise classify(exc) from exc
            raise
        return cls(stream, receiver)

    async def send_binary(self, data: bytes) -> None:
        await self._send(data, "BINARY")

    async def send_text(self, text: str) -> None:
        await self._send(text.encode(), "UTF8")

    async def _send(self, data: bytes, data_type: str) -> None:
        part = RequestPayloadPart(bytes_=data, data_type=data_type)
        try:
            await self._stream.input_stream.send(RequestStreamEventPayloadPart(value=part))
        except Exception as exc:
            raise classify(exc) from exc

    async def receive(self) -> str | bytes | None:
        """The next message from the model (text when it says UTF8), None when the stream ends.
        In-stream failures (``ModelStreamError``, ``InternalStreamFailure``) raise here. A
        dropped connection also ends the stream (None): the SDK does not tell them apart."""
        while True:
            try:
                event = await self._receiver.receive()
            except Exception as exc:
                raise classify(exc) from exc
            if event is None:
                return None
            if isinstance(event, ResponseStreamEventPayloadPart):
                part = event.value
                data = part.bytes_ or b""
                return data.decode() if part.data_type == "UTF8" else data
            if isinstance(
                event,
                ResponseStreamEventModelStreamError | ResponseStreamEventInternalStreamFailure,
            ):
                raise classify(event.value)
            # unknown event kinds from a newer service: skip them

    async def close_input(self) -> None:
        if not self._input_closed:
            self._input_closed = True
            try:
                await self._stream.input_stream.close()
            except Exception as exc:
                raise classify(exc) from exc

    async def aclose(self) -> None:
        await _quietly_close(self._stream, input_closed=self._input_closed)
        self._input_closed = True


async def _quietly_close(stream: Any, input_closed: bool = False) -> None:
    """Close what is left of a stream, never raising and never waiting long: on a dropped
    connection awscrt's close can wait forever."""

    async def close() -> None:
        if not input_closed:
            with contextlib.suppress(Exception):
                await stream.input_stream.close()
        with contextlib.suppress(Exception):
            await stream.close()

    # not wait_for: it would wait for the cancelled close too
    task = asyncio.create_task(close())
    await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_S)
    if not task.done():
        task.cancel()
