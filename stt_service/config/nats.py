"""The NATS settings (``NATS_*``, the subjects) and their checks at start-up.

Credentials and TLS are checked when the settings load, so a wrong file or two authentication
methods at once stop start-up with one line naming the variable; :mod:`stt_service.bus.natsauth`
turns them into ``nats.connect()`` options.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator


class NatsSettings(BaseModel):
    """Where the service's NATS is, how it logs in, and the subjects it uses."""

    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated"
    )
    stt_input_subject: str = Field("ai.voice.stream", description="prefix of inbound subjects")
    stt_output_subject: str = Field(
        "ai.voice.transcription", description="prefix of outbound subjects"
    )
    nats_user: str = Field("", description="NATS user name (with NATS_PASSWORD)")
    nats_password: SecretStr | None = Field(None, description="NATS password (with NATS_USER)")
    nats_token: SecretStr | None = Field(None, description="NATS authentication token")
    nats_nkey_seed_file: str = Field(
        "", description="file holding the user NKey seed (SU...) to sign the server's nonce with"
    )
    nats_creds_file: str = Field(
        "", description="NATS .creds file (user JWT and NKey seed; decentralised auth)"
    )
    nats_tls_ca_file: str = Field(
        "", description="PEM file of the CA(s) that signed the NATS server's certificate"
    )
    nats_tls_cert_file: str = Field(
        "", description="PEM client certificate for NATS (TLS verify; with NATS_TLS_KEY_FILE)"
    )
    nats_tls_key_file: str = Field("", description="PEM private key of NATS_TLS_CERT_FILE")

    @field_validator("stt_input_subject", "stt_output_subject")
    @classmethod
    def _subject_prefix(cls, v: str) -> str:
        v = v.strip().rstrip(".")
        if not v or any(c in v for c in " *>\t"):
            raise ValueError(
                "must be a NATS subject prefix without wildcards, e.g. ai.voice.stream"
            )
        return v

    @model_validator(mode="after")
    def _nats_security(self) -> NatsSettings:
        check_security(self)  # NATS_USER ... NATS_TLS_*: complete and usable
        return self


_FILES = (
    "nats_nkey_seed_file",
    "nats_creds_file",
    "nats_tls_ca_file",
    "nats_tls_cert_file",
    "nats_tls_key_file",
)


def secret(value: SecretStr | None) -> str:
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


def auth_methods(settings: NatsSettings) -> list[str]:
    """The authentication methods configured, by the variables that configure them."""
    methods = []
    if settings.nats_user or secret(settings.nats_password):
        methods.append("NATS_USER/NATS_PASSWORD")
    if secret(settings.nats_token):
        methods.append("NATS_TOKEN")
    if settings.nats_nkey_seed_file:
        methods.append("NATS_NKEY_SEED_FILE")
    if settings.nats_creds_file:
        methods.append("NATS_CREDS_FILE")
    if url_has_credentials(settings.nats_url):
        methods.append("the credentials in NATS_URL")
    return methods


def _pasted(value: str) -> str | None:
    """What a value given where a file's path belongs looks like, if it looks like a secret."""
    text = value.strip()
    if "-----BEGIN" in text or "BEGIN NATS USER JWT" in text:
        return "a .creds file's contents" if "NATS USER JWT" in text else "a PEM block"
    if len(text) >= 50 and text[:1] == "S" and text[1:2] in "UAOCNXP" and text.isalnum():
        return "an NKey seed"
    if "\n" in text or len(text) > 1024:
        return "a file's contents"
    return None


def _read(var: str, path: str) -> str:
    pasted = _pasted(path)
    if pasted is not None:  # never echo it: it is the secret itself
        raise ValueError(
            f"{var}: the value looks like {pasted}, not a path: put it in a file and give "
            "the file's path"
        )
    p = Path(path).expanduser()
    try:
        found = p.is_file()
    except OSError:
        found = False
    if not found:
        raise ValueError(f"{var}: no such file {path!r}")
    try:
        return p.read_text(errors="replace")
    except OSError as exc:
        raise ValueError(f"{var}: cannot read {path!r} ({exc.strerror or exc})") from None


def check_security(settings: NatsSettings) -> None:
    """Raise ``ValueError`` (one line naming the variable) for incomplete or unusable settings."""
    for u in server_urls(settings.nats_url):
        scheme = u.partition("://")[0].lower()
        if scheme not in ("nats", "tls", "ws", "wss"):
            raise ValueError(
                f"NATS_URL: {redact_url(u)!r} is not a NATS server URL "
                "(nats://, tls://, ws:// or wss://host:port)"
            )
    contents = {
        name: _read(name.upper(), getattr(settings, name))
        for name in _FILES
        if getattr(settings, name)
    }
    if secret(settings.nats_password) and not settings.nats_user:
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


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
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
