"""STT_BACKEND=realtime end to end: NATS, the worker, a real WebSocket client or the real AWS SDK,
and the realtime emulator transcribing LibriVox speech with the bundled Whisper tiny.en."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import jiwer
import pytest

from stt_service.commands.client import normalize_text
from stt_service.emulator.realtime import RealtimeFaults, RealtimeServer, shared_transcriber
from stt_service.emulator.sagemaker import Fault, SageMakerEmulator

from .speech import joined, utterance, utterances

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("aws_test_credentials")]

PARTS = ("0880", "0930")


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize_text(reference), normalize_text(hypothesis)))


@contextlib.asynccontextmanager
async def realtime(
    transport: str, dialect: str, server: RealtimeServer | None = None, **extra: Any
) -> AsyncIterator[tuple[RealtimeServer, dict[str, Any]]]:
    """The emulator behind ``transport`` and the settings that reach it."""
    srv = server or RealtimeServer(transcriber=shared_transcriber())
    base = {"stt_backend": "realtime", "realtime_dialect": dialect, **extra}
    if transport == "websocket":
        async with srv:
            yield srv, {**base, "realtime_url": srv.url}
        return
    models = {"": lambda query, script: srv.model(query)}
    async with SageMakerEmulator(models=models) as emu:
        yield (
            srv,
            {
                **base,
                "sagemaker_endpoint_name": "voxtral-ep",
                "aws_endpoint_url_sagemaker_runtime_http2": emu.url,
                "aws_ca_bundle": emu.ca_path,
            },
        )


@pytest.mark.parametrize("dialect", ["vllm", "openai"])
@pytest.mark.parametrize("transport", ["websocket", "sagemaker"])
async def test_speech_becomes_partials_and_finals(service, transport: str, dialect: str) -> None:
    parts = [utterance(s) for s in PARTS]
    async with realtime(transport, dialect) as (srv, settings), service(**settings) as h:
        res = await h.stream(f"rt-{transport}-{dialect}", joined(parts, gap_s=1.6), speed=2.0)
    assert not res.errors, res.errors
    assert len(res.finals) == 2, [f["transcript"] for f in res.finals]
    for part, final in zip(parts, res.finals, strict=True):
        assert wer(part.reference, final["transcript"]) <= 0.25, (part.reference, final)
    total = wer(" ".join(p.reference for p in parts), res.text)
    assert total <= 0.15, res.text
    # partials come before each final, and sequence numbers have no gaps
    transcripts = res.of_type("transcript")
    partials_before = []
    n = 0
    for m in transcripts:
        if m["is_final"]:
            partials_before.append(n)
            n = 0
        else:
            n += 1
    assert all(partials_before), partials_before
    sequences = [m["sequence"] for m in transcripts]
    assert sequences == list(range(len(sequences)))
    (stream,) = srv.streams  # one connection for the whole session
    assert stream.generations == 2 and stream.dialect == dialect
    assert stream.dropped_commits == 0 and stream.discarded_bytes == 0


async def test_configure_new_keyterms_reach_the_openai_prompt(service) -> None:
    async with realtime("websocket", "openai") as (srv, settings), service(**settings) as h:
        first, second = utterance("0880"), utterance("0930")
        await h.stream("rt-cfg", joined([first]), speed=0, send_end=False, wait=False)
        await h.publish("rt-cfg", {"type": "configure", "keyterms": ["Dashwood", "Norland"]})
        await h.stream("rt-cfg", joined([second]), speed=0, send_start=False)
        res = h.results("rt-cfg")
    assert not res.errors, res.errors
    assert srv.streams[0].prompts[-1] == "Dashwood, Norland"
    assert len(res.finals) == 2


async def test_vllm_refuses_keyterms_in_words(service) -> None:
    async with realtime("websocket", "vllm") as (_, settings), service(**settings) as h:
        await h.stream("rt-kt", joined([utterance("0880")]), speed=0, send_end=False, wait=False)
        await h.publish("rt-kt", {"type": "configure", "keyterms": ["Dashwood"]})
        await h.publish("rt-kt", {"type": "end"})
        await h.wait_closed("rt-kt")
        res = h.results("rt-kt")
    assert [e["code"] for e in res.errors] == ["configure_failed"]
    assert "prompt" in res.errors[0]["message"]
    assert len(res.finals) == 1


async def test_an_utterance_longer_than_the_servers_cap_goes_in_segments(service) -> None:
    """The server dies past 6 s in one generation (vLLM's --max-model-len); the service sends
    at most 4 s per generation, and the transcripts of the segments make one final."""
    parts = [utterance(s) for s in ("0870", "0880", "0930")]
    speech = joined(parts, gap_s=0.3)  # pauses too short to end the utterance
    srv = RealtimeServer(transcriber=shared_transcriber(), max_audio_s=6.0)
    async with (
        realtime(
            "websocket",
            "vllm",
            srv,
            realtime_max_utterance_s=4.0,
            stt_buffer_size_bytes=960_000,
            stt_chunk_timeout=2.5,  # the recordings hold pauses of up to 2 s
        ) as (_, settings),
        service(**settings) as h,
    ):
        res = await h.stream("rt-long", speech, speed=0)
    assert not res.errors, res.errors
    (stream,) = srv.streams  # never cut off
    assert stream.generations >= 3
    assert len(res.finals) == 1
    assert wer(" ".join(p.reference for p in parts), res.text) <= 0.25, res.text


@pytest.mark.parametrize("transport", ["websocket", "sagemaker"])
async def test_a_dropped_connection_resends_only_the_unfinished_utterance(
    service, transport: str
) -> None:
    parts = [utterance(s) for s in PARTS]
    first_len = len(parts[0].samples) * 2
    # cut the first connection halfway through the second utterance
    srv = RealtimeServer(
        transcriber=shared_transcriber(),
        faults=RealtimeFaults(drop_after_bytes=[first_len + 16000 * 2 + 32000]),
    )
    async with realtime(transport, "vllm", srv) as (_, settings), service(**settings) as h:
        res = await h.stream(f"rt-drop-{transport}", joined(parts, gap_s=1.6), speed=4.0)
    assert not res.errors, res.errors
    starts = [f["audio_start"] for f in res.finals]
    assert starts == sorted(set(starts))
    assert len(res.finals) == 2, [f["transcript"] for f in res.finals]  # each once
    assert wer(" ".join(p.reference for p in parts), res.text) <= 0.15, res.text
    assert len(srv.streams) == 2
    # the second connection heard only the second utterance
    assert srv.streams[1].generations == 1
    assert srv.streams[1].received_bytes < len(parts[1].samples) * 2 + 16000 * 2


async def test_a_failed_generation_is_retried_on_a_new_connection(service) -> None:
    parts = [utterance("0880")]
    srv = RealtimeServer(
        transcriber=shared_transcriber(),
        faults=RealtimeFaults(error_after_bytes=[(32000, "processing_error", "CUDA error")]),
    )
    async with realtime("websocket", "vllm", srv) as (_, settings), service(**settings) as h:
        res = await h.stream("rt-err", joined(parts), speed=0)
    assert not res.errors, res.errors
    assert len(res.finals) == 1
    assert wer(parts[0].reference, res.text) <= 0.25
    assert len(srv.streams) == 2


@pytest.mark.parametrize(
    ("fault", "retried"),
    [
        (Fault(status=429, error_type="ThrottlingException"), True),
        (Fault(status=503, error_type="ServiceUnavailable"), True),
        (Fault(after_bytes=32000, stream_error="InternalStreamFailure"), True),
        (Fault(after_bytes=32000, stream_error="ModelStreamError"), False),
        (Fault(status=400, error_type="ValidationError"), False),
    ],
)
async def test_sagemaker_faults(service, fault: Fault, retried: bool) -> None:
    srv = RealtimeServer(transcriber=shared_transcriber())
    models = {"": lambda query, script: srv.model(query)}
    part = utterance("0880")
    async with SageMakerEmulator(models=models, faults=[fault]) as emu:
        settings = {
            "stt_backend": "realtime",
            "sagemaker_endpoint_name": "voxtral-ep",
            "aws_endpoint_url_sagemaker_runtime_http2": emu.url,
            "aws_ca_bundle": emu.ca_path,
        }
        async with service(**settings) as h:
            t0 = time.monotonic()
            res = await h.stream("rt-sm-fault", joined([part]), speed=0)
            elapsed = time.monotonic() - t0
        attempts = len(emu.app.requests)
    if retried:
        assert not res.errors, res.errors
        assert attempts == 2
        assert len(res.finals) == 1 and wer(part.reference, res.text) <= 0.25
    else:
        assert attempts == 1
        assert [e["code"] for e in res.errors] == ["backend_error"]
        assert not res.finals
        assert elapsed < 10


async def test_unknown_model_and_bad_key_are_reported_at_once(service) -> None:
    srv = RealtimeServer(
        transcriber=shared_transcriber(), served_model="/opt/ml/model", api_key="sk-test"
    )
    async with (
        realtime(
            "websocket", "vllm", srv, realtime_model="voxtral", realtime_api_key="sk-test"
        ) as (_, settings),
        service(**settings) as h,
    ):
        res = await h.stream("rt-model", joined([utterance("0880")]), speed=0)
    assert [e["code"] for e in res.errors] == ["backend_error"], res.errors
    assert "model_not_found" in res.errors[0]["message"]
    assert len(srv.streams) == 1  # not retried
    async with (
        realtime("websocket", "vllm", srv, realtime_model="/opt/ml/model") as (
            _,
            settings,
        ),
        service(**settings, realtime_api_key="wrong") as h,
    ):
        res = await h.stream("rt-key", joined([utterance("0880")]), speed=0)
    assert [e["code"] for e in res.errors] == ["backend_error"]
    assert "401" in res.errors[0]["message"] and "REALTIME_API_KEY" in res.errors[0]["message"]


async def test_fifty_sessions_through_one_emulator(service) -> None:
    srv = RealtimeServer(transcriber=shared_transcriber(), partials=False)
    parts = list(utterances())[:1]
    audio = joined(parts)
    async with realtime("websocket", "vllm", srv) as (_, settings), service(**settings) as h:
        results = await asyncio.gather(
            *(h.stream(f"rt-many-{i}", audio, speed=1.0) for i in range(50))
        )
    assert all(not r.errors for r in results), [r.errors for r in results if r.errors][:3]
    assert all(len(r.finals) == 1 for r in results)
    worst = max(wer(parts[0].reference, r.text) for r in results)
    assert worst <= 0.25
    assert len(srv.streams) == 50
