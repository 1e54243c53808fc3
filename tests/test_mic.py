"""``stt-service send --mic`` through a real PortAudio capture device.

This machine has no sound card, so the test gives PortAudio one through ALSA: a ``file`` PCM whose
``infile`` is a named pipe, behind a ``plug`` at 48 kHz. The test writes LibriVox speech into the
pipe at real-time pace; ``send --mic`` records it through ``sounddevice`` exactly as it records a
microphone (the pipe paces the reads as a sound card would), and streams it to the worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import numpy as np
import pytest
import soxr

from stt_service.commands.client import word_error_rate

from .conftest import Harness
from .speech import joined, utterance

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "stt_service.commands.cli"]
DEVICE_RATE = 48000


def capture_device(
    tmp_path: Path, rate: int = DEVICE_RATE, piped: bool = True
) -> tuple[dict[str, str], Path]:
    """An ALSA default capture device that plays what is written to a pipe (or, not ``piped``,
    an empty file); the environment that makes it PortAudio's."""
    pipe = tmp_path / "mic.pipe"
    if piped:
        os.mkfifo(pipe)
    else:
        pipe.write_bytes(b"")
    conf = tmp_path / "asoundrc"
    conf.write_text(
        f"""pcm.pipe {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{pipe}"
    format "raw"
}}
pcm.!default {{
    type plug
    slave {{ pcm "pipe"; format S16_LE; rate {rate}; channels 1 }}
}}
"""
    )
    env = {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}
    return env, pipe


class Talker(threading.Thread):
    """Writes speech into the device's pipe at real-time pace, then silence until stopped.

    PortAudio opens every device once when it starts (to probe it) and closes it again: a reader
    that goes away ends a write with a broken pipe, and the speech starts over for the next one,
    the recording."""

    def __init__(self, pipe: Path, pcm: bytes, rate: int = DEVICE_RATE) -> None:
        super().__init__(daemon=True)
        self.pipe, self.pcm, self.rate = pipe, pcm, rate
        self.spoken = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        block = self.rate // 10 * 2  # 100 ms of 16-bit mono
        while not self.stop.is_set():
            with open(self.pipe, "wb") as f:  # blocks until PortAudio opens the device
                t0, sent = time.monotonic(), 0
                try:
                    while not self.stop.is_set():
                        data = self.pcm[sent : sent + block]
                        if not data:
                            self.spoken.set()
                        f.write(data or bytes(block))
                        f.flush()
                        sent += block
                        time.sleep(max(0.0, t0 + sent / (2 * self.rate) - time.monotonic()))
                except BrokenPipeError:
                    continue


async def test_send_mic_records_the_device_and_ctrl_c_ends_with_the_last_final(
    service: Callable[..., AbstractAsyncContextManager[Harness]], tmp_path: Path
) -> None:
    first, second = utterance("0880"), utterance("0930")
    speech = joined([first, second], gap_s=2.0)
    at_16k = np.frombuffer(speech.pcm, dtype="<i2")[: -2 * 16000]  # up to the last word
    # the device's own rate: the service resamples it, as for any client
    pcm = soxr.resample(at_16k, 16000, DEVICE_RATE).astype("<i2").tobytes()
    env, pipe = capture_device(tmp_path)
    # a turn ends after 1 s of silence (the end-of-turn model's "finished" is never enough), so
    # the second sentence's final can only come from the Ctrl-C's 'end' right after its last word
    async with service(stt_turn_max_pause=1.0, stt_turn_threshold=1.0) as h:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "send", "--mic", "--nats-url", h.settings.nats_url, "--session-prefix", "mic",
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        talker = Talker(pipe, pcm)
        talker.start()
        try:
            await h.wait_for(lambda: len(h.results("mic-1").finals) >= 1, timeout=60)
            await asyncio.to_thread(talker.spoken.wait, 30)
            # Ctrl-C right after the last word: the second sentence's final is not out yet
            assert len(h.results("mic-1").finals) == 1
            proc.send_signal(signal.SIGINT)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            talker.stop.set()
            if proc.returncode is None:
                proc.kill()
        await h.wait_closed("mic-1")
    text = out.decode()
    assert proc.returncode == 0, text
    assert f"listening to default ({DEVICE_RATE} Hz) as session mic-1" in text, text
    res = h.results("mic-1")
    assert not res.errors, res.errors
    finals = [f["transcript"] for f in res.finals]
    assert len(finals) == 2, finals
    for final, u in zip(finals, (first, second), strict=True):
        assert word_error_rate(u.reference, final) <= 0.25, finals
    # the terminal showed both finals and the summary
    shown = [line for line in text.splitlines() if line.startswith("[mic-1] ✓")]
    assert len(shown) == 2, text
    assert "ending the session" in text and "summary" in text, text


async def test_send_mic_without_such_a_device_says_so_in_one_line(tmp_path: Path) -> None:
    env, _ = capture_device(tmp_path, piped=False)
    proc = await asyncio.create_subprocess_exec(
        *CLI, "send", "--mic", "--device", "no-such-mic", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2
    assert len(lines) == 1 and "Traceback" not in err.decode(), lines
    assert lines[0].startswith("stt-service send: no microphone 'no-such-mic'"), lines
    assert "inputs: " in lines[0], lines  # and which ones there are
