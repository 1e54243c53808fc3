"""``/healthz`` and ``/readyz`` for Kubernetes probes and the container ``HEALTHCHECK``.

Served from the worker's own event loop on purpose: an answer to ``/healthz`` proves the loop that
handles audio is turning, which a server in a thread would not. ``/readyz`` answers 200 only while
the worker is connected to NATS, its recognizer is ready and it is not draining; otherwise 503 with
the reasons, one per line.

Two GET routes with a status line are all a probe needs, so this is a few lines over
``asyncio.start_server`` rather than a web framework in the image.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    """``readiness()`` returns why the worker is not ready (empty: ready)."""

    def __init__(self, host: str, port: int, readiness: Callable[[], list[str]]) -> None:
        self.host = host
        self.port = port
        self.readiness = readiness
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise RuntimeError(
                f"cannot serve health checks on {self.host}:{self.port} (STT_HEALTH_PORT): "
                f"{exc.strerror or exc}"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health checks on http://%s:%d/healthz and /readyz", self.host, self.port)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def answer(self, method: str, path: str) -> tuple[int, str]:
        """The status and body for one request (no I/O: unit-testable)."""
        path = path.split("?", 1)[0]
        if path not in ("/healthz", "/readyz"):
            return 404, "not found: try /healthz or /readyz\n"
        if method not in ("GET", "HEAD"):
            return 405, "only GET and HEAD\n"
        if path == "/healthz":
            return 200, "ok\n"
        problems = self.readiness()
        if problems:
            return 503, "not ready: " + "; ".join(problems) + "\n"
        return 200, "ready\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            parts = request.decode("latin-1").split()
            # the headers are not needed; read them so the client sees a clean close
            while (line := await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n"):
                if not line:
                    break
            if len(parts) < 2:
                return
            method, path = parts[0].upper(), parts[1]
            status, body = self.answer(method, path)
            payload = body.encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else payload))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeError):
            pass
        except Exception:  # a probe must never take the worker down
            log.exception("health check request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
