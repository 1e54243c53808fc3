"""Deepgram's hosted WebSocket API (``wss://api.deepgram.com/v2/listen``) as a duplex channel.

Connects as Deepgram's own SDK does: ``{base_url}/{path}?{query}`` with the header
``Authorization: Token <key>``, one WebSocket per stream (no shared pool), audio in binary frames,
control messages (``CloseStream``, ``Configure``, ...) in text frames, the model's JSON back in
text frames. Built on ``websockets``' asyncio client; proxies configured in the environment
(``HTTPS_PROXY``, ``NO_PROXY``) are honoured. Every failure becomes a :class:`TransportError`:

* the handshake refused: 401/403 (a bad key) and other 4xx are terminal; 408, 429 (with its
  ``Retry-After``) and 5xx are retryable;
* no connection (refused, unreachable, a timeout, a broken handshake): retryable;
* an open stream dropped (no close frame, close 1011 internal error, 1012/1013 restart or try
  again): retryable; closed by Deepgram with 1008 (policy, e.g. undecodable audio) or one of its
  own 4xxx codes, or for a protocol violation: terminal, with the server's reason.

The API key is sent in the handshake only: it never appears in a message, a log or a repr.
"""

from __future__ import annotations

import contextlib
import email.utils
import ssl
import time
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidProxy,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)
from websockets.frames import CloseCode

from .base import TransportError

DEFAULT_BASE_URL: Final = "wss://api.deepgram.com"
MAX_MESSAGE_BYTES: Final = 16 * 2**20
PING_INTERVAL_S: Final = 20.0
CLOSE_TIMEOUT_S: Final = 5.0

# Close codes after which reconnecting and sending the same audio cannot help: the server found
# fault with what we sent (protocol error, unsupported or invalid data, policy, too big, a missing
# extension); 4000-4999 are Deepgram's own application codes.
_TERMINAL_CLOSE_CODES: Final = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
_NORMAL_CLOSE_CODES: Final = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.NO_STATUS_RCVD})


class WebSocketConnector:
    """Opens one WebSocket per stream to Deepgram's API (or a stand-in at ``base_url``).

    The same client serves the realtime ASR servers (:mod:`..realtime`): ``scheme="Bearer"``
    sends ``Authorization: Bearer <key>`` (none when the key is empty), ``label`` and
    ``key_setting`` name the server and the setting in errors, and an empty ``path`` connects to
    ``base_url`` itself (``wss://host/v1/realtime``)."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        open_timeout: float = 10.0,
        *,
        scheme: str = "Token",
        label: str = "Deepgram API",
        key_setting: str = "DEEPGRAM_API_KEY",
    ) -> None:
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.open_timeout = open_timeout
        self.scheme = scheme
        self.label = label
        self.key_setting = key_setting

    def __repr__(self) -> str:
        return f"WebSocketConnector({self.base_url!r})"

    def describe(self) -> str:
        return f"{self.label} at {self.base_url}"

    async def open(self, path: str, query: str) -> WebSocketDuplex:
        """Connect and finish the handshake; a refused or failed handshake raises here."""
        url = f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url
        if query:
            url = f"{url}{'&' if '?' in url else '?'}{query}"
        where = self.describe()
        headers = {}
        if self._api_key or self.scheme == "Token":
            headers["Authorization"] = f"{self.scheme} {self._api_key}"
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                open_timeout=self.open_timeout,
                ping_interval=PING_INTERVAL_S,
                ping_timeout=PING_INTERVAL_S,
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=MAX_MESSAGE_BYTES,
                compression=None,  # PCM audio does not deflate; nor do short JSON replies
            )
        except InvalidStatus as exc:
            raise _status_error(exc, where, path or "the stream", self.key_setting) from exc
        except ssl.SSLCertVerificationError as exc:
            raise TransportError(
                f"TLS certificate verification failed for {where}: {exc.verify_message}",
                retryable=False,
                cause="TLS verification failed",
            ) from exc
        except ConnectionRefusedError as exc:
            raise TransportError(
                f"connection refused by {where}", retryable=True, cause="connection refused"
            ) from exc
        except TimeoutError as exc:
            raise TransportError(
                f"could not connect to {where} within {self.open_timeout:g} s",
                retryable=True,
                cause="connect timeout",
            ) from exc
        except (InvalidURI, InvalidProxy, ValueError) as exc:
            raise TransportError(
                f"cannot connect to {where}: {exc}", retryable=False, cause="invalid URL"
            ) from exc
        except (OSError, WebSocketException) as exc:
            # unreachable, reset during the handshake, a malformed or truncated response
            raise TransportError(
                f"could not connect to {where}: {_describe(exc)}",
                retryable=True,
                cause="connect failed",
            ) from exc
        return WebSocketDuplex(ws, where)

    async def aclose(self) -> None:
        """Nothing is shared between streams: nothing to release."""


class WebSocketDuplex:
    """One open WebSocket to a Deepgram model. Text frames are returned as str, binary as bytes."""

    def __init__(self, ws: ClientConnection, where: str = "Deepgram") -> None:
        self._ws = ws
        self._where = where

    @property
    def request_id(self) -> str | None:
        """Deepgram's ``dg-request-id`` for this stream, when the server sent one."""
        response = self._ws.response
        return None if response is None else response.headers.get("dg-request-id")

    async def send_binary(self, data: bytes) -> None:
        await self._send(data)

    async def send_text(self, text: str) -> None:
        await self._send(text)

    async def _send(self, message: str | bytes) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosedOK as exc:
            # Deepgram closed the stream normally (e.g. after CloseStream), or we did
            raise TransportError(
                f"cannot send: the stream to {self._where} is closed ({_describe(exc)})",
                retryable=True,
                cause="connection closed",
            ) from exc
        except ConnectionClosed as exc:
            raise _closed_error(exc, self._where) from exc
        except (OSError, WebSocketException) as exc:
            raise TransportError(
                f"cannot send to {self._where}: {_describe(exc)}",
                retryable=True,
                cause="connection reset",
            ) from exc

    async def receive(self) -> str | bytes | None:
        """The next message; None once the server has closed the stream normally (1000)."""
        try:
            return await self._ws.recv()
        except ConnectionClosedOK as exc:
            code = _close_code(exc)
            if code is None or code in _NORMAL_CLOSE_CODES:
                return None
            raise _closed_error(exc, self._where) from exc  # 1001 going away: cut short
        except ConnectionClosed as exc:
            raise _closed_error(exc, self._where) from exc
        except (OSError, WebSocketException) as exc:
            raise TransportError(
                f"stream from {self._where} failed: {_describe(exc)}",
                retryable=True,
                cause="connection reset",
            ) from exc

    async def close_input(self) -> None:
        """Does nothing: a WebSocket cannot half-close. The Deepgram protocol's ``CloseStream``
        text message is what tells the server the audio has ended; it answers with its last
        results and then closes the socket (1000), which :meth:`receive` reports as None."""

    async def aclose(self) -> None:
        """Close the socket (1000), waiting at most a few seconds for the server; never raises."""
        with contextlib.suppress(Exception):
            await self._ws.close()


def _close_code(exc: ConnectionClosed) -> int | None:
    """The code the server closed with; None when no close frame came (the TCP connection
    dropped, or this side failed the connection)."""
    return None if exc.rcvd is None else exc.rcvd.code


def _closed_error(exc: ConnectionClosed, where: str) -> TransportError:
    code = _close_code(exc)
    if code is None:
        # no close frame from the server: a reset, or our own failure (keepalive ping timeout)
        detail = "connection lost" if exc.sent is None else f"closed here: {exc.sent}"
        return TransportError(
            f"the stream to {where} was cut off ({detail})",
            retryable=True,
            cause="connection reset",
        )
    assert exc.rcvd is not None
    reason = exc.rcvd.reason
    name = _close_name(code)
    said = f": {reason}" if reason else ""
    terminal = code in _TERMINAL_CLOSE_CODES or 4000 <= code <= 4999
    return TransportError(
        f"{where} closed the stream with {code} ({name}){said}",
        retryable=not terminal,
        cause=f"close {code}",
    )


def _close_name(code: int) -> str:
    try:
        return CloseCode(code).name.lower().replace("_", " ")
    except ValueError:
        return "application error" if 4000 <= code <= 4999 else "unknown code"


def _status_error(
    exc: InvalidStatus, where: str, path: str, key_setting: str = "DEEPGRAM_API_KEY"
) -> TransportError:
    response = exc.response
    status = response.status_code
    cause = f"HTTP {status}"
    label = f"HTTP {status} {response.reason_phrase}".rstrip()
    detail = _short_body(bytes(response.body))
    request_id = response.headers.get("dg-request-id")
    extra = (f": {detail}" if detail else "") + (f" (request {request_id})" if request_id else "")
    if status in (401, 403):
        return TransportError(
            f"authentication failed: {where} refused the API key ({label}){extra}; "
            f"check {key_setting}",
            retryable=False,
            cause=cause,
        )
    if status in (408, 429) or status >= 500:
        return TransportError(
            f"{where} is unavailable for {path} ({label}){extra}",
            retryable=True,
            cause=cause,
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    return TransportError(
        f"{where} refused the stream to {path} ({label}){extra}", retryable=False, cause=cause
    )


def _short_body(body: bytes, limit: int = 300) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
