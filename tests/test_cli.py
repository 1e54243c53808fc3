"""The command line as a user runs it: serve (with SIGTERM and a NATS restart), send, tail, demo."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import msgpack
import nats
import numpy as np
import pytest

from stt_service.bus.embedded import EmbeddedNats
from stt_service.commands.cli import format_message
from stt_service.commands.client import ResultCollector, stream_audio, word_error_rate

from .speech import joined, pcm16, silence, utterance

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "stt_service.commands.cli"]


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STT_")}
    # no health port: tests must not depend on 8080 being free (test_health covers it)
    env.update({"NATS_URL": url, "PYTHONUNBUFFERED": "1", "STT_HEALTH_PORT": "0", **extra})
    return env


def _serve(url: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "serve"],
        env=_env(url, **extra),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def _wait_ready(proc: subprocess.Popen[str], timeout: float = 60) -> list[str]:
    """Read the log until the worker says it is listening."""
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line:
            break
        lines.append(line)
        if "listening on" in line:
            return lines
    raise AssertionError("worker did not start:\n" + "".join(lines))


def _write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype(np.int16).tobytes())
    return path


async def test_sigterm_mid_utterance_publishes_the_final_and_exits_0() -> None:
    u = utterance("0870")
    with EmbeddedNats() as server:
        proc = _serve(server.url, STT_CHUNK_TIMEOUT="5")
        try:
            await _wait_ready(proc)
            nc = await nats.connect(server.url)
            collector = await ResultCollector(nc).start()
            # half the utterance, no end, no trailing silence: only the drain can finish it
            half = pcm16(u.samples[: u.samples.size // 2])
            await stream_audio(nc, "term-1", half, speed=0, send_end=False)
            await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
            await asyncio.sleep(0.2)
            res = collector.results("term-1")
            await nc.close()
        finally:
            if proc.poll() is None:
                proc.kill()
    out = proc.stdout.read() if proc.stdout else ""
    assert code == 0, out
    assert len(res.finals) == 1, (res.messages, out)
    assert "mister john dashwood" in word_normalized(res.finals[0]["transcript"])
    # the client is told its session ended with the worker, after the final
    assert res.messages[-1]["type"] == "error" and res.messages[-1]["code"] == "service_draining"


def word_normalized(text: str) -> str:
    from stt_service.commands.client import normalize_text

    return normalize_text(text)


async def test_session_survives_a_nats_restart(tmp_path: Path) -> None:
    first, second = utterance("0880"), utterance("0930")
    server = EmbeddedNats().start()
    port = server.port
    proc = _serve(server.url)
    try:
        await _wait_ready(proc)
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        collector = await ResultCollector(nc).start()
        await stream_audio(nc, "restart-1", joined([first]), speed=8, send_end=False)
        res = collector.results("restart-1")
        for _ in range(200):
            if res.finals:
                break
            await asyncio.sleep(0.05)
        assert len(res.finals) == 1

        server.stop()
        await asyncio.sleep(1.0)
        server = EmbeddedNats(port=port).start()
        for _ in range(200):  # both sides reconnect and resubscribe
            if nc.is_connected:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)

        await stream_audio(nc, "restart-1", joined([second]), speed=8, send_start=False)
        for _ in range(400):
            if len(res.finals) == 2:
                break
            await asyncio.sleep(0.05)
        await nc.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        server.stop()
    assert len(res.finals) == 2, res.messages
    assert word_error_rate(second.reference, res.finals[1]["transcript"]) <= 0.15
    assert [m["sequence"] for m in res.of_type("transcript")] == list(
        range(len(res.of_type("transcript")))
    )


async def test_send_and_tail_print_readable_results(tmp_path: Path) -> None:
    u = utterance("0930")
    wav = _write_wav(
        tmp_path / "speech.wav", np.concatenate([silence(0.3), u.samples, silence(1.2)])
    )
    with EmbeddedNats() as server:
        proc = _serve(server.url)
        try:
            await _wait_ready(proc)
            tail = subprocess.Popen(
                [
                    *CLI,
                    "tail",
                    "--nats-url",
                    server.url,
                    "--duration",
                    "30",
                    "--count",
                    "2",
                    "--finals",
                ],
                env=_env(server.url),
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            await asyncio.sleep(1.0)
            send = await asyncio.to_thread(
                subprocess.run,
                [
                    *CLI,
                    "send",
                    str(wav),
                    "--nats-url",
                    server.url,
                    "--sessions",
                    "2",
                    "--speed",
                    "4",
                    "--session-prefix",
                    "cli",
                ],
                env=_env(server.url),
                text=True,
                capture_output=True,
                timeout=120,
            )
            tail_out, _ = await asyncio.to_thread(tail.communicate, timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    assert send.returncode == 0, send.stdout + send.stderr
    finals = [line for line in send.stdout.splitlines() if "✓" in line]
    assert len(finals) == 2
    assert all("himself" in line for line in finals), send.stdout
    assert "summary" in send.stdout and "cli-1" in send.stdout and "cli-2" in send.stdout
    assert "{" not in send.stdout  # readable lines, not raw dicts
    lines = tail_out.splitlines()
    assert len(lines) == 2, tail_out
    assert sorted(line.split()[1] for line in lines) == ["[cli-1]", "[cli-2]"], tail_out
    assert all("✓ He might even have been made amiable himself." in line for line in lines), (
        tail_out
    )


def test_send_rejects_a_file_that_is_not_wav(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    out = subprocess.run([*CLI, "send", str(bogus)], text=True, capture_output=True, timeout=60)
    assert out.returncode == 2
    assert "ffmpeg" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("STT_VAD_AGGRESSIVENESS", "7"), ("STT_VAD", "neural"), ("STT_FALSE_INTERRUPT_TIMEOUT", "x")],
)
def test_bad_configuration_fails_with_one_line(variable: str, value: str) -> None:
    out = subprocess.run(
        [*CLI, "serve"],
        env=_env("nats://127.0.0.1:1", **{variable: value}),
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], out.stderr


def test_tail_prints_interrupts_and_their_take_back_readably() -> None:
    base = {"session_id": "s", "timestamp": 1.0, "speaker_id": "ann"}
    assert format_message({**base, "type": "interrupt"}) == (
        "⚡ interrupt (speaker ann): user barged in, state -> listening"
    )
    line = format_message({**base, "type": "interrupt_cancelled", "reason": "backchannel"})
    assert line == "↩ interrupt taken back (speaker ann): only a backchannel, state -> responding"
    line = format_message({**base, "type": "interrupt_cancelled", "reason": "no_words"})
    assert "the speech held no words" in line and "{" not in line


def test_unreachable_nats_fails_with_one_line() -> None:
    out = subprocess.run(
        [*CLI, "serve"], env=_env("nats://127.0.0.1:9"), text=True, capture_output=True, timeout=120
    )
    assert out.returncode == 1
    assert "cannot connect to NATS at nats://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr


def test_demo_streams_the_bundled_sample_and_exits_0() -> None:
    out = subprocess.run(
        [*CLI, "demo", "--speed", "3"], env=_env(""), text=True, capture_output=True, timeout=180
    )
    assert out.returncode == 0, out.stdout + out.stderr
    finals = [line for line in out.stdout.splitlines() if "✓" in line]
    # three LibriVox lines, the first a fragment ("He was not an ill-disposed young man"): the
    # end-of-turn model waits on it, and the next line, 1.9 s later, joins its turn
    assert 2 <= len(finals) <= 3, out.stdout
    assert all("done " in line for line in finals), out.stdout  # end_of_turn_confidence
    assert "word error rate" in out.stdout
    wer = float(
        out.stdout.split("word error rate against the reference transcript:")[1].split("%")[0]
    )
    assert wer <= 10.0


@pytest.mark.parametrize(
    ("loop", "duration", "expected_s"), [(False, None, 3.3), (True, 7.0, 7.0), (False, 1.25, 1.25)]
)
async def test_stream_audio_sends_exactly_the_requested_audio(
    loop: bool, duration: float | None, expected_s: float
) -> None:
    audio = pcm16(silence(3.3))
    with EmbeddedNats() as server:
        nc = await nats.connect(server.url)
        received: list[dict] = []

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            received.append(msgpack.unpackb(msg.data))

        await nc.subscribe("ai.voice.stream.dur-1", cb=on_msg)
        await stream_audio(nc, "dur-1", audio, speed=0, loop=loop, duration=duration)
        await nc.flush()
        await asyncio.sleep(0.2)
        await nc.close()
    assert received[0]["type"] == "start" and received[-1]["type"] == "end"
    sent = sum(len(m["audio"]) for m in received if m["type"] == "chunk")
    assert sent == round(expected_s * 16000) * 2
