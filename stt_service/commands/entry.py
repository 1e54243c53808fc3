"""The ``stt-service`` command's entry point: light commands without the heavy imports.

``stt-service healthcheck`` runs as the containers' HEALTHCHECK every few seconds; importing the
whole CLI (NATS client, pydantic, numpy) costs about half a second of CPU each time, so it is
answered by :mod:`stt_service.commands.healthcheck` (standard library only). Everything else goes to
:mod:`stt_service.commands.cli`.
"""

from __future__ import annotations

import argparse
import sys

from .healthcheck import add_healthcheck_arguments, cmd_healthcheck


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["healthcheck"]:
        parser = argparse.ArgumentParser(prog="stt-service healthcheck")
        add_healthcheck_arguments(parser)
        raise SystemExit(cmd_healthcheck(parser.parse_args(args[1:])))
    from .cli import main as full

    full(argv)
