"""STT_BACKEND=flux end to end: NATS, the worker, the real AWS SDK, the local SageMaker emulator."""

from __future__ import annotations

import time
from urllib.parse import parse_qs

import pytest

from stt_service.emulator.sagemaker import SageMakerEmulator

from .speech import joined, utterance

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("aws_test_credentials")]
SCRIPT = ["he was not an ill disposed young man", "he might even have been made amiable himself"]


def flux_settings(emu: SageMakerEmulator, **extra: object) -> dict[str, object]:
    return {
        "stt_backend": "flux",
        "sagemaker_endpoint_name": "flux-ep",
        "aws_endpoint_url_sagemaker_runtime_http2": emu.url,
        "aws_ca_bundle": emu.ca_path,
        **extra,
    }


async def test_turns_become_partials_and_finals(service) -> None:
    audio = joined([utterance("0880"), utterance("0930")], gap_s=1.5)
    async with SageMakerEmulator(script=SCRIPT) as emu:
        async with service(
            **flux_settings(emu, flux_eot_threshold=0.7, flux_keyterms="Dashwood, Ferrars")
        ) as h:
            res = await h.stream(
                "flux-1",
                audio,
                speed=0,
                extra_start={"eager_eot_threshold": 0.4, "keyterms": ["Marianne"]},
            )
        (request,) = emu.app.requests
        closed = emu.app.streams[0].closed
        configures = emu.app.streams[0].configures
    q = parse_qs(request.query_string or "")
    assert q["model"] == ["flux-general-en"] and q["encoding"] == ["linear16"]
    assert q["sample_rate"] == ["16000"] and q["eot_threshold"] == ["0.7"]
    assert q["eager_eot_threshold"] == ["0.4"] and q["keyterm"] == ["Marianne"]
    assert closed, "end sends CloseStream"
    assert configures == 0  # start's options went into the query string, not a Configure
    assert not res.errors
    assert [f["transcript"] for f in res.finals] == SCRIPT
    assert [f["turn_index"] for f in res.finals] == [0, 1]
    assert all(f["event"] == "end_of_turn" and f["words"] for f in res.finals)
    assert res.finals[0]["audio_end"] <= res.finals[1]["audio_start"]
    events = {m.get("event") for m in res.partials}
    assert {"update", "eager_end_of_turn"} <= events
    sequences = [m["sequence"] for m in res.of_type("transcript")]
    assert sequences == list(range(len(sequences)))


async def test_start_of_turn_while_responding_interrupts_once(service) -> None:
    async with SageMakerEmulator(script=SCRIPT) as emu, service(**flux_settings(emu)) as h:
        res = await h.stream("flux-barge", joined([utterance("0880")]), speed=0, state="responding")
        calm = await h.stream("flux-calm", joined([utterance("0880")]), speed=0)
    assert len(res.interrupts) == 1
    assert calm.interrupts == []


async def test_configure_mid_stream_and_a_refused_configuration(service) -> None:
    async with SageMakerEmulator(script=SCRIPT) as emu:
        async with service(**flux_settings(emu)) as h:
            await h.stream(
                "flux-cfg", joined([utterance("0880")]), speed=0, send_end=False, wait=False
            )
            await h.publish(
                "flux-cfg", {"type": "configure", "eot_threshold": 0.8, "keyterms": ["Elinor"]}
            )
            await h.publish(
                "flux-cfg", {"type": "configure", "eot_threshold": 0.5, "eager_eot_threshold": 0.9}
            )
            await h.publish("flux-cfg", {"type": "end"})
            await h.wait_closed("flux-cfg")
            res = h.results("flux-cfg")
        model = emu.app.streams[0]
    assert model.eot_threshold == 0.8 and model.keyterms == ["Elinor"]
    assert model.configures == 2
    assert [e["code"] for e in res.errors] == ["configure_failed"]


async def test_finalize_forces_the_end_of_turn(service) -> None:
    speech = utterance("0870").samples[: 16000 * 2]  # mid-sentence, no pause
    from .speech import pcm16

    async with SageMakerEmulator(script=SCRIPT) as emu, service(**flux_settings(emu)) as h:
        await h.stream("flux-fin", pcm16(speech), speed=0, send_end=False, wait=False)
        await h.publish("flux-fin", {"type": "finalize"})
        res = h.results("flux-fin")
        await h.wait_for(lambda: bool(res.finals), timeout=10)
        assert "flux-fin" in h.worker.sessions
        await h.publish("flux-fin", {"type": "end"})
        await h.wait_closed("flux-fin")
    assert [f["transcript"] for f in res.finals] == SCRIPT[:1]


async def test_an_unknown_endpoint_is_an_error_within_a_second(service) -> None:
    async with SageMakerEmulator(script=SCRIPT, endpoints=["flux-ep"]) as emu:
        settings = flux_settings(emu, sagemaker_endpoint_name="no-such-ep")
        async with service(**settings) as h:
            t0 = time.monotonic()
            await h.publish("flux-404", {"type": "start"})
            res = h.results("flux-404")
            await h.wait_for(lambda: bool(res.errors), timeout=5)
            elapsed = time.monotonic() - t0
            await h.publish("flux-404", {"type": "end"})
            await h.wait_closed("flux-404")
    (error,) = res.errors
    assert error["code"] == "backend_error"
    # the SDK keeps the status and error type of an unmodelled error, not its body
    assert "no-such-ep" in error["message"] and "400" in error["message"]
    assert "ValidationError" in error["message"]
    assert elapsed < 1.0
