"""NATS credentials and TLS, as ``nats.connect()`` options (the settings and their checks:
:mod:`stt_service.config.nats`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config.nats import NatsSettings, secret, tls_context


def nats_options(settings: NatsSettings) -> dict[str, Any]:
    """The ``nats.connect()`` keyword arguments for the settings' credentials and TLS."""
    opts: dict[str, Any] = {}
    if settings.nats_user:
        opts["user"] = settings.nats_user
        opts["password"] = secret(settings.nats_password)
    if secret(settings.nats_token):
        opts["token"] = secret(settings.nats_token)
    if settings.nats_nkey_seed_file:
        opts["nkeys_seed"] = str(Path(settings.nats_nkey_seed_file).expanduser())
    if settings.nats_creds_file:
        opts["user_credentials"] = str(Path(settings.nats_creds_file).expanduser())
    ctx = tls_context(settings)
    if ctx is not None:
        opts["tls"] = ctx
    return opts
