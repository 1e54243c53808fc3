"""``stt-service healthcheck``: the containers' HEALTHCHECK, with the standard library only (it
runs every few seconds; the whole CLI's imports would cost about half a second of CPU each time).
"""

from __future__ import annotations

import argparse
import os
import sys


def add_healthcheck_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--ready", action="store_true", help="check /readyz instead of /healthz")
    sp.add_argument("--url", help="full URL to check (default: 127.0.0.1:$STT_HEALTH_PORT)")
    sp.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """The container HEALTHCHECK: exit 0 when ``serve`` on this host answers, else 1."""
    import urllib.error
    import urllib.request

    url = args.url
    if not url:
        port = os.environ.get("STT_HEALTH_PORT", "8080")
        url = f"http://127.0.0.1:{port}/{'readyz' if args.ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            print(f"{url}: {resp.status} {resp.read().decode(errors='replace').strip()}")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read().decode(errors='replace').strip()}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        print(f"{url}: no answer ({reason})", file=sys.stderr)
    return 1
