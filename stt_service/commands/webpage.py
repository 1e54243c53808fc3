"""The live page (``demo --web``, ``web``): a browser talks to the service over NATS itself.

The page (``stt_service/web/``: HTML, a script, an AudioWorklet, and nats.ws and msgpack vendored
as built files) connects to NATS over WebSocket and speaks the service's wire protocol: ``start``,
raw-PCM ``chunk`` messages from the microphone, ``state_change``, ``end``; it shows the results as
they come. This module only serves those files and ``config.json`` (where NATS is, the subjects,
the backend's name); nothing of the audio passes through it. A thread serves them, so the page
loads while the worker's event loop is busy.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

log = logging.getLogger(__name__)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def page_files() -> dict[str, bytes]:
    """Every file of the page by its URL path (``/`` is ``index.html``)."""
    root = resources.files("stt_service") / "web"
    files: dict[str, bytes] = {}
    for entry in root.iterdir():
        if entry.is_file() and entry.name.rpartition(".")[2] in ("html", "js", "css"):
            files[f"/{entry.name}"] = entry.read_bytes()
    for entry in (root / "vendor").iterdir():
        if entry.is_file() and entry.name.endswith(".js"):
            files[f"/vendor/{entry.name}"] = entry.read_bytes()
    files["/"] = files["/index.html"]
    return files


class PageServer:
    """Serves the page on ``host:port`` (0: a free port) from a thread of its own."""

    def __init__(self, host: str, port: int, config: dict[str, Any]) -> None:
        files = page_files()
        files["/config.json"] = json.dumps(config).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                body = files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                suffix = "." + path.rpartition(".")[2] if "." in path else ".html"
                self.send_response(200)
                self.send_header("Content-Type", _TYPES.get(suffix, "application/json"))
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("page: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise RuntimeError(
                f"cannot serve the page on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="web-page")

    @property
    def url(self) -> str:
        host, port = str(self._server.server_address[0]), self._server.server_address[1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{port}/"

    def start(self) -> PageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
