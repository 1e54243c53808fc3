"""Nova, the WebSocket transport and many sessions, end to end through NATS and the worker.

Nova runs over the real AWS SDK against the SageMaker emulator; both models run over the real
``websockets`` client against the emulator of Deepgram's hosted API.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from typing import Any
from urllib.parse import parse_qs

import pytest

from stt_service.backends.deepgram import backend as deepgram
from stt_service.bus.embedded import free_port
from stt_service.emulator.sagemaker import SageMakerEmulator
from stt_service.emulator.websocket import DeepgramWebSocketEmulator

from .speech import joined, pcm16, utterance

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("aws_test_credentials")]
SCRIPT = ["he was not an ill disposed young man", "he might even have been made amiable himself"]


def on_sagemaker(emu: SageMakerEmulator, backend: str, **extra: object) -> dict[str, object]:
    return {
        "stt_backend": backend,
        "sagemaker_endpoint_name": "dg-ep",
        "aws_endpoint_url_sagemaker_runtime_http2": emu.url,
        "aws_ca_bundle": emu.ca_path,
        **extra,
    }


def on_websocket(
    emu: DeepgramWebSocketEmulator, backend: str, key: str = "test-key", **extra: object
) -> dict[str, object]:
    return {
        "stt_backend": backend,
        "deepgram_api_key": key,
        "deepgram_url": emu.url,
        "deepgram_initial_backoff": 0.05,
        **extra,
    }


def two_turns() -> Any:
    return joined([utterance("0880"), utterance("0930")], gap_s=1.5)


async def test_nova_on_sagemaker_interims_and_finals(service: Any) -> None:
    async with SageMakerEmulator(script=SCRIPT) as emu:
        async with service(**on_sagemaker(emu, "nova", nova_keyterms="Dashwood")) as h:
            res = await h.stream("nova-1", two_turns(), speed=0, extra_start={"language": "en"})
        (request,) = emu.app.requests
        model = emu.app.streams[0]
    assert request.invocation_path == "v1/listen"
    q = parse_qs(request.query_string or "")
    assert q["model"] == ["nova-3"] and q["encoding"] == ["linear16"]
    assert q["sample_rate"] == ["16000"] and q["interim_results"] == ["true"]
    assert q["endpointing"] == ["300"] and q["keyterm"] == ["Dashwood"] and q["language"] == ["en"]
    assert model.closed, "end sends CloseStream"
    assert not res.errors
    assert [f["transcript"] for f in res.finals] == SCRIPT
    assert [f["event"] for f in res.finals] == ["speech_final", "speech_final"]
    assert res.finals[0]["audio_end"] <= res.finals[1]["audio_start"]
    assert res.partials and {p["event"] for p in res.partials} == {"interim"}
    assert all(p["transcript"] for p in res.partials)
    sequences = [m["sequence"] for m in res.of_type("transcript")]
    assert sequences == list(range(len(sequences)))


async def test_nova_barge_in_comes_from_the_service_vad(service: Any) -> None:
    async with SageMakerEmulator(script=SCRIPT) as emu, service(**on_sagemaker(emu, "nova")) as h:
        barge = await h.stream(
            "nova-barge", pcm16(utterance("0880").samples), speed=0, state="responding"
        )
        calm = await h.stream("nova-calm", pcm16(utterance("0880").samples), speed=0)
    assert len(barge.interrupts) == 1 and calm.interrupts == []
    assert [f["transcript"] for f in barge.finals] == SCRIPT[:1]


async def test_nova_finalize_and_configure_mid_stream(service: Any) -> None:
    speech = utterance("0870").samples[: 16000 * 2]  # mid-sentence, no pause
    async with SageMakerEmulator(script=SCRIPT) as emu, service(**on_sagemaker(emu, "nova")) as h:
        await h.stream("nova-fin", pcm16(speech), speed=0, send_end=False, wait=False)
        await h.publish("nova-fin", {"type": "configure", "keyterms": ["Elinor"]})
        await h.publish("nova-fin", {"type": "finalize"})
        res = h.results("nova-fin")
        await h.wait_for(lambda: bool(res.finals), timeout=10)
        await h.publish("nova-fin", {"type": "end"})
        await h.wait_closed("nova-fin")
        model = emu.app.streams[0]
    assert [f["transcript"] for f in res.finals] == SCRIPT[:1]
    assert res.finals[0]["event"] == "finalize"
    assert model.finalizes == 1 and model.keyterms == ["Elinor"]
    assert not res.errors


@pytest.mark.parametrize(("backend", "event"), [("flux", "end_of_turn"), ("nova", "speech_final")])
async def test_the_hosted_api_over_websocket(service: Any, backend: str, event: str) -> None:
    async with DeepgramWebSocketEmulator(script=SCRIPT) as emu:
        async with service(**on_websocket(emu, backend)) as h:
            res = await h.stream(f"ws-{backend}", two_turns(), speed=0)
        (request,) = emu.requests
    assert request.path == ("/v2/listen" if backend == "flux" else "/v1/listen")
    assert not res.errors
    assert [f["transcript"] for f in res.finals] == SCRIPT
    assert {f["event"] for f in res.finals} == {event}


async def test_a_wrong_api_key_is_an_error_within_a_second(service: Any) -> None:
    async with DeepgramWebSocketEmulator(script=SCRIPT) as emu:
        async with service(**on_websocket(emu, "flux", key="wrong-key")) as h:
            t0 = time.monotonic()
            await h.publish("ws-auth", {"type": "start"})
            res = h.results("ws-auth")
            await h.wait_for(lambda: bool(res.errors), timeout=5)
            elapsed = time.monotonic() - t0
            await h.publish("ws-auth", {"type": "end"})
            await h.wait_closed("ws-auth")
        attempts = len(emu.requests)
    assert elapsed < 1.0 and attempts == 1
    (error,) = res.errors
    assert error["code"] == "backend_error"
    assert "401" in error["message"] and "wrong-key" not in error["message"]


async def test_a_dropped_websocket_reconnects_without_a_duplicate_final(service: Any) -> None:
    cut = int((utterance("0880").samples.size / 16000 + 2.0) * 16000) * 2  # in the second turn
    async with DeepgramWebSocketEmulator(script=SCRIPT, drop_after_bytes=cut) as emu:
        async with service(**on_websocket(emu, "flux")) as h:
            res = await h.stream("ws-drop", two_turns(), speed=4)
        streams = len(emu.streams)
    assert streams == 2
    assert not res.errors
    # the emulator's second stream starts its script again: what it hears is the second turn
    assert [f["transcript"] for f in res.finals] == [SCRIPT[0], SCRIPT[0]]
    assert [f["turn_index"] for f in res.finals] == [0, 1]
    assert res.finals[1]["audio_start"] > res.finals[0]["audio_end"]


async def test_fifty_concurrent_sessions_through_one_emulator(service: Any) -> None:
    audio = pcm16(utterance("0880").samples)
    async with SageMakerEmulator(script=SCRIPT[:1]) as emu:
        async with service(**on_sagemaker(emu, "flux", stt_max_sessions=100)) as h:
            results = await asyncio.gather(
                *(h.stream(f"many-{i:02d}", audio, speed=1) for i in range(50))
            )
        served = len(emu.app.streams)
    assert served == 50
    for res in results:
        assert not res.errors
        assert [f["transcript"] for f in res.finals] == SCRIPT[:1]


async def test_nova_keeps_a_paused_stream_alive_with_keepalive(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deepgram, "SILENCE_BEFORE_KEEPALIVE_S", 1.2)
    monkeypatch.setattr(deepgram, "KEEPALIVE_EVERY_S", 0.2)
    speech = utterance("0880").samples
    async with SageMakerEmulator(script=SCRIPT, keep_audio=True) as emu:
        async with service(**on_sagemaker(emu, "nova")) as h:
            await h.stream("nova-pause", pcm16(speech), speed=0, send_end=False, wait=False)
            res = h.results("nova-pause")
            await h.wait_for(lambda: bool(res.finals), timeout=10)  # silence ended it
            await asyncio.sleep(1.5)
            await h.publish("nova-pause", {"type": "end"})
            await h.wait_closed("nova-pause")
        model = emu.app.streams[0]
        (received,) = emu.app.audio
    assert [f["transcript"] for f in res.finals] == SCRIPT[:1]
    assert model.keepalives >= 3
    # 1.2 s of silence (enough for Nova to end the utterance), then KeepAlive instead of audio
    assert len(received) <= 2 * speech.size + round(1.3 * 32000)


async def test_stt_service_emulate_serves_both_transports(service: Any) -> None:
    sm_port, ws_port = free_port(), free_port()
    args = ["--port", str(sm_port), "--ws-port", str(ws_port), "--script", "hello there"]
    args += ["--stall-after", "1"]  # each first stream hangs a second into the speech
    proc = subprocess.Popen(
        [sys.executable, "-m", "stt_service.commands.cli", "emulate", *args, "--duration", "60"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = []
        while not (line := proc.stdout.readline()).startswith("then:"):
            assert line, "emulate exited early"
            lines.append(line)
        env = dict(re.findall(r"(\w+)=(\S+)", "".join(lines)))
        settings = {
            "stt_backend": "nova",
            "sagemaker_endpoint_name": env["SAGEMAKER_ENDPOINT_NAME"],
            "aws_endpoint_url_sagemaker_runtime_http2": env[
                "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME_HTTP2"
            ],
            "aws_ca_bundle": env["AWS_CA_BUNDLE"],
        }
        audio = pcm16(utterance("0880").samples)
        async with service(**settings) as h:
            on_sm = await h.stream("emu-sm", audio, speed=0)
            sm_stalls = h.worker.recognizer.stalls  # type: ignore[attr-defined]
        ws = {"stt_backend": "flux", "deepgram_url": env["DEEPGRAM_URL"]}
        async with service(**ws, deepgram_api_key=env["DEEPGRAM_API_KEY"]) as h:
            on_ws = await h.stream("emu-ws", audio, speed=0)
            ws_stalls = h.worker.recognizer.stalls  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        proc.wait(10)
    assert any("hangs after 1 s of audio" in line for line in lines), lines
    # the hung streams were replaced, and the turn's final came once
    assert sm_stalls == 1 and ws_stalls == 1
    assert [f["transcript"] for f in on_sm.finals] == ["hello there"]
    assert [f["transcript"] for f in on_ws.finals] == ["hello there"]
