"""What the ``stt-service`` subcommands share: their logging, their settings (from the
environment, with the command line's ``--nats-url``) and the NATS URL of the client commands."""

from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError, Settings, load_settings


def _setup_logging(level: str, fmt: str = "text") -> None:
    from ..telemetry import setup_logging

    setup_logging(level, fmt)


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    if getattr(args, "nats_url", None):
        overrides["nats_url"] = args.nats_url
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        print(f"stt-service: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _nats_url(args: argparse.Namespace) -> str:
    return str(args.nats_url or os.environ.get("NATS_URL") or "nats://127.0.0.1:4222")
