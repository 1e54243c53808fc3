"""Faults on the Deepgram path, end to end: NATS, the worker, the real AWS SDK, the emulator.

Each test injects one fault into the SageMaker emulator (HTTP errors, in-stream exceptions, a
cut connection) and checks what a client sees: the same finals as without the fault, each once,
with session-relative times, every audio byte delivered; or one clear error, quickly.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from stt_service.emulator.sagemaker import Fault, SageMakerEmulator

from .speech import joined, pcm16, utterance

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("aws_test_credentials")]
SCRIPT = ["he was not an ill disposed young man", "he might even have been made amiable himself"]
FIRST_S = utterance("0880").samples.size / 16000
GAP_S = 1.5


def settings(emu: SageMakerEmulator, **extra: object) -> dict[str, object]:
    return {
        "stt_backend": "flux",
        "sagemaker_endpoint_name": "flux-ep",
        "aws_endpoint_url_sagemaker_runtime_http2": emu.url,
        "aws_ca_bundle": emu.ca_path,
        "deepgram_initial_backoff": 0.05,
        **extra,
    }


def two_turns() -> Any:
    return joined([utterance("0880"), utterance("0930")], gap_s=GAP_S)


def delivered(sent: bytes, received: bytearray) -> None:
    """The model got the session's audio as it was sent, followed only by padding/silence."""
    assert bytes(received[: len(sent)]) == sent
    assert not any(received[len(sent) :])


async def run_two_turns(service: Any, emu: SageMakerEmulator, sid: str, **extra: object) -> Any:
    # 4x real time: fast, yet the first turn's final is back before the fault strikes
    async with service(**settings(emu, **extra)) as h:
        return await h.stream(sid, two_turns(), speed=4)


async def test_throttling_then_success_loses_nothing(service: Any) -> None:
    faults = [
        Fault(status=429, error_type="ThrottlingException"),
        Fault(status=429, error_type="ThrottlingException"),
        Fault(status=503, error_type="ServiceUnavailable"),
    ]
    audio = two_turns()
    async with SageMakerEmulator(script=SCRIPT, faults=faults, keep_audio=True) as emu:
        async with service(**settings(emu)) as h:
            res = await h.stream("dg-throttle", audio, speed=0)
        requests = len(emu.app.requests)
        (received,) = emu.app.audio
    assert requests == 4  # three refusals, then the stream that served the session
    assert not res.errors
    assert [f["transcript"] for f in res.finals] == SCRIPT
    assert [f["turn_index"] for f in res.finals] == [0, 1]
    delivered(audio.pcm, received)  # what queued during the outage was sent, in order


@pytest.mark.parametrize("fault", ["InternalStreamFailure", "reset", "stall"])
async def test_a_stream_lost_mid_turn_resends_only_that_turn(service: Any, fault: str) -> None:
    """Lost: an in-stream exception, a cut connection, or a stream that stays open and goes
    silent (replaced by the watchdog at its default, ``STT_STALL_TIMEOUT_S`` unset)."""
    audio = two_turns()
    # fail half a second into the second turn
    cut = int((FIRST_S + GAP_S + 0.5) * 16000) * 2
    async with SageMakerEmulator(script=SCRIPT, keep_audio=True) as emu:
        reference = await run_two_turns(service, emu, "dg-clean")
    async with SageMakerEmulator(
        script=SCRIPT,
        keep_audio=True,
        faults=[Fault(after_bytes=cut, stream_error=fault)],
        resume_script=True,
    ) as emu:
        res = await run_two_turns(service, emu, "dg-lost")
        first, second = emu.app.audio[:2]
        streams, hung = len(emu.app.streams), emu.app.stalls
    assert streams == 2 and hung == (fault == "stall")
    assert not res.errors
    assert [f["transcript"] for f in res.finals] == SCRIPT  # each turn once
    assert [f["turn_index"] for f in res.finals] == [0, 1]
    for got, want in zip(res.finals, reference.finals, strict=True):
        # session-relative times, as without the fault (to a chunk)
        assert abs(got["audio_start"] - want["audio_start"]) <= 0.1
        assert abs(got["audio_end"] - want["audio_end"]) <= 0.1
    pcm = audio.pcm
    # the first stream got the start of the session; the second resent from the end of the
    # finished turn, not from the start, and carried on to the end: no byte missing
    assert pcm.startswith(bytes(first))
    resent_from = _offset_of(pcm, second)
    assert FIRST_S * 32000 - 3200 <= resent_from <= len(first)
    delivered(pcm[resent_from:], second)


def _offset_of(pcm: bytes, stream: bytearray) -> int:
    head = bytes(stream[:2560])
    at = pcm.find(head)
    assert at >= 0, "the second stream's audio is not session audio"
    return at


@pytest.mark.parametrize(
    ("status", "error_type", "expect"),
    [
        (403, "UnrecognizedClientException", "not authorised"),
        (424, "ModelError", "model refused"),
        (400, "ValidationError", "rejected"),
    ],
)
async def test_a_terminal_error_is_reported_at_once_and_not_retried(
    service: Any, status: int, error_type: str, expect: str
) -> None:
    fault = Fault(status=status, error_type=error_type, message="no")
    async with SageMakerEmulator(script=SCRIPT, faults=[fault]) as emu:
        async with service(**settings(emu)) as h:
            t0 = time.monotonic()
            await h.publish("dg-terminal", {"type": "start"})
            res = h.results("dg-terminal")
            await h.wait_for(lambda: bool(res.errors), timeout=5)
            elapsed = time.monotonic() - t0
            await h.stream("dg-terminal", pcm16(utterance("0880").samples), speed=0)
        requests = len(emu.app.requests)
    assert elapsed < 1.0
    assert requests == 1
    (error,) = res.errors
    assert error["code"] == "backend_error"
    assert expect in error["message"] and str(status) in error["message"]
    assert res.finals == []


async def test_an_outage_longer_than_the_budget_is_reported_once(service: Any) -> None:
    faults = [Fault(status=503, error_type="ServiceUnavailable")] * 10
    async with SageMakerEmulator(script=SCRIPT, faults=faults) as emu:
        async with service(**settings(emu, deepgram_max_retries=2)) as h:
            res = await h.stream("dg-outage", pcm16(utterance("0880").samples), speed=0)
        requests = len(emu.app.requests)
    assert requests == 3
    (error,) = res.errors
    assert error["code"] == "backend_unavailable"
    assert "503" in error["message"] and "3 failed attempts" in error["message"]


async def test_a_client_pause_still_ends_the_turn(service: Any) -> None:
    """Speech, then the client stops sending without `end`: the turn still ends (the stream is
    fed silence), and its times are the session's, not the silence's."""
    speech = utterance("0880").samples
    async with SageMakerEmulator(script=SCRIPT, keep_audio=True) as emu:
        async with service(**settings(emu)) as h:
            await h.stream("dg-pause", pcm16(speech), speed=0, send_end=False, wait=False)
            res = h.results("dg-pause")
            await h.wait_for(lambda: bool(res.finals), timeout=10)
            assert "dg-pause" in h.worker.sessions
            more = np.concatenate([speech, np.zeros(8000, dtype=np.int16)])
            await h.stream("dg-pause", pcm16(more), speed=0, send_start=False)
        (received,) = emu.app.audio
    assert [f["transcript"] for f in res.finals] == SCRIPT
    first, second = res.finals
    duration = speech.size / 16000
    assert first["audio_end"] <= duration + 0.05
    # the second turn starts in the session's second copy of the speech, not after the silence
    assert duration <= second["audio_start"] <= duration + 0.5
    assert len(received) > 2 * (2 * speech.size + 8000)  # silence was sent during the pause


async def test_a_stream_that_keeps_dying_at_once_still_runs_out_of_retries(service: Any) -> None:
    """Each stream opens (the model even says Connected) and fails on its first audio: that is
    no recovery, so the retry budget still runs out."""
    faults = [Fault(after_bytes=1, stream_error="InternalStreamFailure")] * 10
    async with SageMakerEmulator(script=SCRIPT, faults=faults) as emu:
        async with service(**settings(emu, deepgram_max_retries=2)) as h:
            res = await h.stream("dg-flaky", pcm16(utterance("0880").samples), speed=0)
        requests = len(emu.app.requests)
    assert requests == 3
    (error,) = res.errors
    assert error["code"] == "backend_unavailable" and "internal stream failure" in error["message"]
