"""Headless Chromium for the page's tests: a WAV file as its microphone, read over DevTools.

Chromium's own fake capture device (``--use-fake-device-for-media-stream``) plays the file named
by ``--use-file-for-fake-audio-capture`` to ``getUserMedia``; the test drives the page and reads
its DOM with the DevTools protocol (``Runtime.evaluate``) over the page's WebSocket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import websockets


def find_chromium() -> str:
    # the real binary, not Debian's wrapper script: killing it leaves no child behind
    for candidate in ("/usr/lib/chromium/chromium", "chromium", "chromium-browser"):
        found = shutil.which(candidate) if "/" not in candidate else candidate
        if found and Path(found).is_file():
            return found
    raise RuntimeError("Chromium not found: apt-get install chromium (.ci/run installs it)")


class Browser:
    """``async with Browser(url, mic=wav, profile=dir) as b: await b.evaluate("...")``."""

    def __init__(self, url: str, profile: Path, mic: Path | None = None) -> None:
        self.url = url
        self.profile = profile
        self.mic = mic
        self.proc: subprocess.Popen[bytes] | None = None
        self.console: list[str] = []
        self._ws: Any = None
        self._id = 0
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def __aenter__(self) -> Browser:
        args = [
            find_chromium(),
            "--headless=new",
            "--no-sandbox",  # tests run as root in CI
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream",
            "--window-size=1000,760",
        ]
        if self.mic is not None:
            # %noloop: the file plays once, then near-silence
            args += [
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={self.mic}%noloop",
            ]
        self.proc = subprocess.Popen(
            [*args, self.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        ws_url = None
        while ws_url is None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.2)
            with contextlib.suppress(OSError, ValueError, IndexError):
                port = int(port_file.read_text().split()[0])
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                ws_url = pages[0]["webSocketDebuggerUrl"] if pages else None
        self._ws = await websockets.connect(ws_url, max_size=None)
        self._reader = asyncio.create_task(self._read())
        await self.call("Runtime.enable")
        return self

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in self._pending:
                self._pending.pop(msg["id"]).set_result(msg)
            elif msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                said = (str(a.get("value", a.get("description"))) for a in args)
                self.console.append(" ".join(said))
            elif msg.get("method") == "Runtime.exceptionThrown":
                details = msg["params"]["exceptionDetails"]
                self.console.append(f"exception: {details.get('exception', details)}")

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._id] = future
        await self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = await self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
            userGesture=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Until the expression is truthy in the page (an error counts as false: the page may
        still be loading); its value."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError as exc:
                value, error = None, exc
            else:
                error = None
            if value:
                return value
            if time.monotonic() > deadline:
                why = f" ({error})" if error else ""
                raise TimeoutError(f"{expression} still false after {timeout:g} s{why}")
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
