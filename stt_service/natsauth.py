"""NATS credentials and TLS from the settings: checked when the settings load (one line naming
the variable at fault), and turned into ``nats.connect()`` options.

It needs nothing of :mod:`stt_service.config` (which calls :func:`check_security` from its
validator): the settings are read through :class:`NatsAuthSettings`.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import SecretStr


class NatsAuthSettings(Protocol):
    """The settings this module reads (``NATS_URL`` and the ``NATS_*`` credentials and TLS)."""

    @property
    def nats_url(self) -> str: ...
    @property
    def nats_user(self) -> str: ...
    @property
    def nats_password(self) -> SecretStr | None: ...
    @property
    def nats_token(self) -> SecretStr | None: ...
    @property
    def nats_nkey_seed_file(self) -> str: ...
    @property
    def nats_creds_file(self) -> str: ...
    @property
    def nats_tls_ca_file(self) -> str: ...
    @property
    def nats_tls_cert_file(self) -> str: ...
    @property
    def nats_tls_key_file(self) -> str: ...


_FILES = (
    "nats_nkey_seed_file",
    "nats_creds_file",
    "nats_tls_ca_file",
    "nats_tls_cert_file",
    "nats_tls_key_file",
)


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _servers(url: str) -> list[str]:
    """``NATS_URL``'s comma-separated servers, as given."""
    return [u.strip() for u in url.split(",") if u.strip()]


def server_urls(url: str) -> list[str]:
    return [u if "://" in u else f"nats://{u}" for u in _servers(url)]


def url_has_credentials(url: str) -> bool:
    return any("@" in urlsplit(u).netloc for u in server_urls(url))


def redact_url(url: str) -> str:
    """``nats://user:secret@host:4222`` -> ``nats://user:***@host:4222`` (a token: ``***@``)."""
    out = []
    for u in _servers(url):
        head, sep, rest = u.partition("://")
        if not sep:
            head, rest = "", u
        userinfo, at, hostpart = rest.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            rest = f"{user}:***@{hostpart}" if colon else f"***@{hostpart}"
        out.append(f"{head}{sep}{rest}")
    return ",".join(out)


def auth_methods(settings: NatsAuthSettings) -> list[str]:
    """The authentication methods configured, by the variables that configure them."""
    methods = []
    if settings.nats_user or _secret(settings.nats_password):
        methods.append("NATS_USER/NATS_PASSWORD")
    if _secret(settings.nats_token):
        methods.append("NATS_TOKEN")
    if settings.nats_nkey_seed_file:
        methods.append("NATS_NKEY_SEED_FILE")
    if settings.nats_creds_file:
        methods.append("NATS_CREDS_FILE")
    if url_has_credentials(settings.nats_url):
        methods.append("the credentials in NATS_URL")
    return methods


def _read(var: str, path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{var}: no such file {path!r}")
    try:
        return p.read_text(errors="replace")
    except OSError as exc:
        raise ValueError(f"{var}: cannot read {path!r} ({exc.strerror or exc})") from None


def check_security(settings: NatsAuthSettings) -> None:
    """Raise ``ValueError`` (one line naming the variable) for incomplete or unusable settings."""
    contents = {
        name: _read(name.upper(), getattr(settings, name))
        for name in _FILES
        if getattr(settings, name)
    }
    if _secret(settings.nats_password) and not settings.nats_user:
        raise ValueError("NATS_PASSWORD: set NATS_USER too (a password needs a user name)")
    methods = auth_methods(settings)
    if len(methods) > 1:
        raise ValueError(
            f"{' and '.join(methods)} are all set: use one NATS authentication method"
            if len(methods) > 2
            else f"{methods[0]} and {methods[1]} are both set: use one NATS authentication method"
        )
    seed = contents.get("nats_nkey_seed_file")
    if seed is not None:
        try:
            import nkeys  # type: ignore[import-untyped]

            nkeys.from_seed(bytearray(seed.strip().encode()))
            valid = seed.strip().startswith("SU")
        except Exception:
            valid = False
        if not valid:
            raise ValueError(
                f"NATS_NKEY_SEED_FILE: {settings.nats_nkey_seed_file!r} holds no user NKey seed "
                "(one line starting with SU)"
            )
    creds = contents.get("nats_creds_file")
    if creds is not None and not (
        "BEGIN NATS USER JWT" in creds and "BEGIN USER NKEY SEED" in creds
    ):
        raise ValueError(
            f"NATS_CREDS_FILE: {settings.nats_creds_file!r} is not a NATS .creds file "
            "(it needs a NATS USER JWT and a USER NKEY SEED block)"
        )
    if bool(settings.nats_tls_cert_file) != bool(settings.nats_tls_key_file):
        given, missing = (
            ("NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE")
            if settings.nats_tls_cert_file
            else ("NATS_TLS_KEY_FILE", "NATS_TLS_CERT_FILE")
        )
        raise ValueError(f"{missing}: required with {given} (a client certificate needs its key)")
    tls_context(settings)  # a CA file or certificate that does not load fails here


def _no_passphrase() -> str:
    raise ValueError(
        "NATS_TLS_KEY_FILE: the key is encrypted; give an unencrypted PEM key "
        "(openssl pkey -in key.pem -out plain.pem)"
    )


def tls_context(settings: NatsAuthSettings) -> ssl.SSLContext | None:
    """The client's TLS context; ``None`` when nothing asks for one (nats-py's default then)."""
    wants_tls = any(u.startswith("tls://") for u in server_urls(settings.nats_url))
    if not (wants_tls or settings.nats_tls_ca_file or settings.nats_tls_cert_file):
        return None
    ca = settings.nats_tls_ca_file
    try:
        ctx = ssl.create_default_context(cafile=str(Path(ca).expanduser()) if ca else None)
    except ssl.SSLError as exc:
        raise ValueError(
            f"NATS_TLS_CA_FILE: {ca!r} holds no usable PEM certificate ({exc.reason or exc})"
        ) from None
    if settings.nats_tls_cert_file:
        try:
            ctx.load_cert_chain(
                str(Path(settings.nats_tls_cert_file).expanduser()),
                str(Path(settings.nats_tls_key_file).expanduser()),
                password=_no_passphrase,
            )
        except ssl.SSLError as exc:
            raise ValueError(
                f"NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE: cannot load the client certificate "
                f"({exc.reason or exc})"
            ) from None
    return ctx


def nats_options(settings: NatsAuthSettings) -> dict[str, Any]:
    """The ``nats.connect()`` keyword arguments for the settings' credentials and TLS."""
    opts: dict[str, Any] = {}
    if settings.nats_user:
        opts["user"] = settings.nats_user
        opts["password"] = _secret(settings.nats_password)
    if _secret(settings.nats_token):
        opts["token"] = _secret(settings.nats_token)
    if settings.nats_nkey_seed_file:
        opts["nkeys_seed"] = str(Path(settings.nats_nkey_seed_file).expanduser())
    if settings.nats_creds_file:
        opts["user_credentials"] = str(Path(settings.nats_creds_file).expanduser())
    ctx = tls_context(settings)
    if ctx is not None:
        opts["tls"] = ctx
    return opts
