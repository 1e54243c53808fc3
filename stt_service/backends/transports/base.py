"""What a Deepgram stream needs from a transport, and how transports report failure.

A :class:`Duplex` is one open stream to a Deepgram model (``v2/listen`` Flux or ``v1/listen``
Nova): binary audio and text control messages out, the model's JSON messages in. Two transports
implement it: SageMaker's HTTP/2 bidirectional streaming (:mod:`.sagemaker`) and Deepgram's
hosted WebSocket API (:mod:`.websocket`). Every failure a transport raises, when opening or on an
open stream, is a :class:`TransportError` that says whether trying again can help.
"""

from __future__ import annotations

from typing import Protocol


class TransportError(Exception):
    """A failure of the stream's transport.

    ``retryable``: throttling, 5xx, an internal stream failure, a reset connection or a connect
    timeout (trying again later may work); otherwise terminal: validation, authentication, an
    unknown endpoint, the model refusing the request (trying again cannot help).
    ``cause``: a short name for it (``ThrottlingException``, ``HTTP 401``, ``connection reset``),
    ``retry_after``: seconds the server asked to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        cause: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.cause = cause or ("transient" if retryable else "rejected")
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class Duplex(Protocol):
    """One open bidirectional stream. Methods raise :class:`TransportError` on failure."""

    async def send_binary(self, data: bytes) -> None: ...

    async def send_text(self, text: str) -> None: ...

    async def receive(self) -> str | bytes | None:
        """The next message from the model; None when the stream has ended cleanly."""
        ...

    async def close_input(self) -> None:
        """No more messages will be sent (the model may still answer)."""
        ...

    async def aclose(self) -> None:
        """Release the stream; never raises."""
        ...


class Connector(Protocol):
    """Opens a :class:`Duplex` to a model path (``v2/listen``) with a query string."""

    async def open(self, path: str, query: str) -> Duplex: ...

    def describe(self) -> str:
        """Where streams go, for logs and errors (``SageMaker endpoint x (us-east-1)``)."""
        ...

    async def aclose(self) -> None: ...
