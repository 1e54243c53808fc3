"""The live page (``demo --web``) in a real browser.

Headless Chromium's microphone plays LibriVox speech (its fake capture device reads a WAV); the
page streams it to ``stt-service demo --web`` through nats-server's WebSocket listener, as a user's
browser would, and the test reads what the page shows from its DOM over the DevTools protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stt_service.audio import wav_bytes
from stt_service.bus.embedded import free_port
from stt_service.commands.client import normalize_text, word_error_rate

from .browser import Browser
from .speech import joined, utterance

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "stt_service.commands.cli"]


class Command:
    """An ``stt-service`` command run as a user runs it; its output kept line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = [*CLI, *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.lines: list[str] = []

    async def __aenter__(self) -> Command:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def url(self, timeout: float = 120.0) -> str:
        """The page's URL, once the command prints it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if line.strip().startswith("open http"):
                    return line.split()[1]
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("no URL printed:\n" + "\n".join(self.lines[-30:]))
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(2)  # Ctrl-C
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)


@pytest.fixture
def speech_wav(tmp_path: Path) -> Path:
    """Two LibriVox sentences with pauses: the browser's microphone."""
    audio = joined([utterance("0880"), utterance("0930")], gap_s=2.0)
    path = tmp_path / "mic.wav"
    path.write_bytes(wav_bytes(np.frombuffer(audio.pcm, dtype="<i2"), audio.sample_rate))
    return path


async def test_the_page_transcribes_the_microphone_and_shows_a_barge_in(
    speech_wav: Path, tmp_path: Path
) -> None:
    first, second = utterance("0880"), utterance("0930")
    # two sentences 2 s apart are two turns (the end-of-turn model waits at most 1 s here)
    async with Command("demo", "--web", "--port", "0", env={"STT_TURN_MAX_PAUSE": "1.0"}) as demo:
        url = await demo.url()
        async with Browser(url, tmp_path / "profile", mic=speech_wav) as page:
            await page.wait_for("document.querySelector('#status').dataset.state === 'connected'")
            # the agent speaks when the session starts: the first sentence is a barge-in
            await page.evaluate("document.querySelector('#agent').click()")
            await page.evaluate("document.querySelector('#mic').click()")
            await page.wait_for(
                "document.querySelectorAll('#finals li.final').length >= 2", timeout=90
            )
            await page.evaluate("document.querySelector('#mic').click()")  # stop: 'end'
            finals = await page.evaluate(
                "[...document.querySelectorAll('#finals li.final .text')].map(e => e.textContent)"
            )
            kinds = await page.evaluate(
                "[...document.querySelectorAll('#log li')].map(e => e.dataset.kind)"
            )
            shown = await page.evaluate(
                "[...document.querySelectorAll('#finals li')].map(e => e.className)"
            )
            errors = await page.evaluate("document.querySelector('#errors').textContent")
            figures = await page.evaluate(
                "({finals: document.querySelector('#n-finals').textContent,"
                " p50: document.querySelector('#p50').textContent,"
                " interrupts: document.querySelector('#n-interrupts').textContent})"
            )
            agent = await page.evaluate("document.querySelector('#agent').checked")
    assert not errors, errors
    assert len(finals) == 2, finals
    for final, u in zip(finals, (first, second), strict=True):
        assert word_error_rate(u.reference, final) <= 0.25, finals
    said = f"{first.reference} {second.reference}"
    assert word_error_rate(said, " ".join(finals)) <= 0.15, finals
    # partials grew before the first final landed
    assert "partial" in kinds and kinds.index("partial") < kinds.index("final"), kinds
    # the barge-in shows as it happens, before that sentence's final; the state went back to
    # listening (the toggle is off), and the interrupt was not taken back (it held words)
    assert shown.index("event interrupt") < shown.index("final"), shown
    assert "event interrupt_cancelled" not in shown, shown
    assert agent is False
    assert figures["finals"] == "2" and figures["interrupts"] == "1", figures
    assert figures["p50"].endswith(" ms"), figures
    # the terminal running the demo printed the same finals
    printed = [line for line in demo.lines if "✓" in line]
    assert len(printed) == 2, demo.lines[-20:]
    assert normalize_text(printed[1]).find(normalize_text(finals[1])) >= 0, printed


async def test_the_page_says_so_when_nats_is_unreachable(tmp_path: Path) -> None:
    nowhere = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    async with Command("web", "--nats-ws", nowhere, "--port", "0") as web:
        url = await web.url(timeout=30)
        async with Browser(url, tmp_path / "profile") as page:
            await page.wait_for("document.querySelector('#status').dataset.state === 'failed'")
            status = await page.evaluate("document.querySelector('#status').textContent")
            errors = await page.evaluate("document.querySelector('#errors').textContent")
            disabled = await page.evaluate("document.querySelector('#mic').disabled")
    assert status == f"cannot reach NATS at {nowhere}"
    assert f"Cannot reach NATS at {nowhere}" in errors and "websocket" in errors, errors
    assert disabled is True  # nothing to talk to
