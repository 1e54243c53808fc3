"""Connecting to NATS: credentials and TLS from the settings, one clear line when refused.

Authentication is one of user/password (``NATS_USER``/``NATS_PASSWORD``), a token
(``NATS_TOKEN``), an NKey seed file (``NATS_NKEY_SEED_FILE``), a decentralised-auth ``.creds``
file (``NATS_CREDS_FILE``) or credentials in ``NATS_URL`` itself (``nats://user:pass@host``).
TLS is used when the server asks for it (nats-py upgrades the connection); ``NATS_TLS_CA_FILE``
names the CA to verify the server with (the system's CAs otherwise), ``NATS_TLS_CERT_FILE`` and
``NATS_TLS_KEY_FILE`` a client certificate for servers that verify clients. A ``tls://`` URL or
any TLS setting means TLS or no connection: nats-py upgrades only when the server requires it,
so against a server that offers no TLS it would send ``CONNECT`` (and the credentials) in clear;
:class:`_TlsOnly` refuses such a server before a byte is sent, and upgrades where the server
offers TLS without requiring it.

The first connection fails fast: a refused credential or an untrusted certificate raises a
:class:`RuntimeError` whose ``str()`` is one line naming the cause and the variable to check, never
a secret. Once connected, reconnects are endless (sessions outlive a NATS restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from nats import errors
from nats.aio.client import Client as NATS

from ..config import NatsSettings
from ..config.nats import auth_methods, redact_url, server_urls
from ..floods import FloodLog
from .natsauth import nats_options

log = logging.getLogger(__name__)
NATS_ERRORS_WINDOW_S = 60.0  # the same NATS error is logged once a minute, then counted


class _QuietTlsEof(logging.Filter):
    """asyncio warns on every TLS connection nats-py closes; the warning means nothing here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietTlsEof())


class PlainTextRefused(errors.Error):
    """TLS was asked for, and the server offers none: nothing was sent to it."""

    def __str__(self) -> str:
        return (
            "TLS: the server offers no TLS, and NATS_URL is tls:// or a NATS_TLS_* setting is "
            "set: refusing to connect in clear (nothing, no credentials, was sent)"
        )


class _TlsOnly(NATS):
    """A client that never speaks in clear once TLS is configured (see the module docstring)."""

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection and self.options.get("tls") is not None:
            scheme = self._current_server.uri.scheme if self._current_server else ""
            if scheme not in ("ws", "wss") and not info.get("tls_required"):
                if not info.get("tls_available"):
                    raise PlainTextRefused()
                info["tls_required"] = True  # offered, not required: take it
        await super()._process_info(info, initial_connection)


# what the server says when it refuses the credentials (nats-server's auth errors)
_AUTH_ERRORS = (
    "authorization violation",
    "user authentication expired",
    "user authentication revoked",
    "account authentication expired",
)


def _auth_hint(settings: NatsSettings) -> str:
    methods = auth_methods(settings)
    if not methods:
        return (
            "the server requires credentials: set NATS_USER/NATS_PASSWORD, NATS_TOKEN, "
            "NATS_NKEY_SEED_FILE or NATS_CREDS_FILE"
        )
    return f"check {methods[0]}"


def fatal_reason(exc: BaseException, settings: NatsSettings) -> str | None:
    """Why a first connection can never succeed (bad credentials, TLS), or ``None``."""
    if isinstance(exc, PlainTextRefused):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        what = exc.verify_message or exc.reason or "certificate verify failed"
        if "hostname" in what.lower() or "mismatch" in what.lower():  # (an IP address's too)
            hint = "the certificate is for another address: check NATS_URL's host"
        elif settings.nats_tls_ca_file:
            hint = "check NATS_TLS_CA_FILE"
        else:
            hint = "set NATS_TLS_CA_FILE to the CA that signed the server's certificate"
        return f"TLS: the server's certificate is not trusted: {what} ({hint})"
    if isinstance(exc, ssl.SSLError):
        what = (exc.reason or str(exc)).replace("_", " ").lower()
        if "certificate" in what or "alert" in what:
            hint = (
                "check NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE"
                if settings.nats_tls_cert_file
                else "the server verifies clients: set NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE"
            )
            return f"TLS: the server refused the client: {what} ({hint})"
        return f"TLS: {what}"
    text = str(exc).strip().strip("'").lower()
    text = text.removeprefix("nats: ").strip().strip("'")
    if any(marker in text for marker in _AUTH_ERRORS):
        return f"{text} ({_auth_hint(settings)})"
    return None


async def connect_nats(
    settings: NatsSettings | str,
    *,
    url: str | None = None,
    name: str = "stt-service",
    first_connect_timeout: float = 10.0,
) -> NATS:
    """Connect with endless reconnects (sessions outlive a NATS restart); fail fast at first.

    ``settings`` may be a bare URL (no credentials besides the URL's own); ``url`` replaces the
    settings' ``NATS_URL``. A first connection that is refused (credentials, TLS) or gets no
    answer in ``first_connect_timeout`` seconds raises :class:`RuntimeError` with one line
    naming the cause.
    """
    if isinstance(settings, str):
        settings = NatsSettings.model_construct(nats_url=settings)
    if url is not None:
        settings = settings.model_copy(update={"nats_url": url})
    url = settings.nats_url
    shown = redact_url(url)
    try:
        options = nats_options(settings)
    except ValueError as exc:
        raise RuntimeError(f"cannot connect to NATS at {shown}: {exc}") from None

    nc = _TlsOnly()
    connected = False
    fatal: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    last_error: list[str] = []
    hung_up: list[str] = []
    floods = FloodLog(log, window_s=NATS_ERRORS_WINDOW_S, first=1)

    def shutting_down() -> bool:
        return nc.is_closed or nc.is_draining

    async def on_error(exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        if connected:  # (a password changed on the server: this at every reconnect, 2/s)
            floods.warning(f"NATS errors ({text})", None, "NATS: %s", text)
            return
        # the first connection: the RuntimeError below tells what went wrong, in one line
        log.debug("NATS: first connection: %s", text)
        last_error[:] = [text]
        reason = fatal_reason(exc, settings)
        server_info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
        if reason is None and isinstance(exc, OSError) and server_info.get("tls_verify"):
            # TLS 1.3: the server refuses a client certificate after the handshake, so its alert
            # may reach us as a broken pipe or a reset instead
            hung_up.append(text)
            if not settings.nats_tls_cert_file:
                reason = (
                    "TLS: the server verifies clients and closed the connection (set "
                    "NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE)"
                )
            elif len(hung_up) >= 3:
                reason = (
                    "TLS: the server verifies clients and closed the connection (check "
                    "NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE: a certificate of a CA it trusts?)"
                )
        if reason is not None and not fatal.done():
            fatal.set_result(reason)

    async def on_disconnect() -> None:
        if connected and not shutting_down():
            log.warning("NATS: disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("NATS: reconnected")

    # endless reconnects once connected, but a first connection that fails is reported
    connecting = asyncio.ensure_future(
        nc.connect(
            servers=server_urls(url),
            name=name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,  # type: ignore[arg-type]
            connect_timeout=3,
            ping_interval=10,
            max_outstanding_pings=3,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            **options,
        )
    )
    waiting: set[asyncio.Future[Any]] = {connecting, fatal}
    done, _ = await asyncio.wait(
        waiting, timeout=first_connect_timeout, return_when=asyncio.FIRST_COMPLETED
    )
    if connecting in done:
        failure = connecting.exception()
        if failure is None:
            connected = True
            return nc
        reason = fatal_reason(failure, settings) or str(failure) or type(failure).__name__
    else:
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        reason = (
            fatal.result()
            if fatal.done()
            else f"no answer in {first_connect_timeout:g} s"
            + (f" (last error: {last_error[0]})" if last_error else "")
        )
    with contextlib.suppress(Exception):
        await nc.close()
    raise RuntimeError(f"cannot connect to NATS at {shown}: {reason}")
