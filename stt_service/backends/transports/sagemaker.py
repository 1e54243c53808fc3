"""SageMaker ``InvokeEndpointWithBidirectionalStream`` as a duplex byte/text channel.

Built on the AWS SDK (``aws-sdk-sagemaker-runtime-http2``) with the awscrt HTTP/2 transport, one
client shared by every session. The endpoint is ``https://runtime.sagemaker.{region}.amazonaws.com:8443``
unless ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2`` overrides it; credentials come from the standard
AWS chain. ``AWS_CA_BUNDLE`` is applied here, because the awscrt transport does not read it.
"""

from __future__ import annotations

import contextlib
import os
from copy import deepcopy
from typing import Any

from aws_sdk_sagemaker_runtime_http2.client import AsyncSageMakerRuntimeHTTP2Client
from aws_sdk_sagemaker_runtime_http2.config import AsyncSageMakerRuntimeHTTP2Config
from aws_sdk_sagemaker_runtime_http2.models import (
    InvokeEndpointWithBidirectionalStreamInput,
    RequestPayloadPart,
    RequestStreamEventPayloadPart,
    ResponseStreamEventPayloadPart,
)
from awscrt import io as crt_io
from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig


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


class SageMakerDuplex:
    """One bidirectional stream: binary audio and text control messages out, model output in."""

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
                endpoint_name=endpoint_name, model_invocation_path=path, model_query_string=query
            )
        )
        try:
            _, receiver = await stream.await_output()
        except BaseException:
            await _quietly_close(stream)
            raise
        return cls(stream, receiver)

    async def send_binary(self, data: bytes) -> None:
        await self._send(data, "BINARY")

    async def send_text(self, text: str) -> None:
        await self._send(text.encode(), "UTF8")

    async def _send(self, data: bytes, data_type: str) -> None:
        part = RequestPayloadPart(bytes_=data, data_type=data_type)
        await self._stream.input_stream.send(RequestStreamEventPayloadPart(value=part))

    async def receive(self) -> str | bytes | None:
        """The next message from the model (text when it says UTF8), None when the stream ends.
        In-stream failures (``ModelStreamError``, ``InternalStreamFailure``) raise here."""
        while True:
            event = await self._receiver.receive()
            if event is None:
                return None
            if isinstance(event, ResponseStreamEventPayloadPart):
                part = event.value
                data = part.bytes_ or b""
                return data.decode() if part.data_type == "UTF8" else data
            # unknown event kinds from a newer service: skip them

    async def close_input(self) -> None:
        if not self._input_closed:
            self._input_closed = True
            await self._stream.input_stream.close()

    async def aclose(self) -> None:
        await _quietly_close(self._stream, input_closed=self._input_closed)
        self._input_closed = True


async def _quietly_close(stream: Any, input_closed: bool = False) -> None:
    # already closed or broken: nothing is left to flush
    if not input_closed:
        with contextlib.suppress(Exception):
            await stream.input_stream.close()
    with contextlib.suppress(Exception):
        await stream.close()
