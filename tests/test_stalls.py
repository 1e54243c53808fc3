"""A stream that stays open and goes silent (issue 29): every streaming backend, end to end.

Each emulator can hang one stream ("stall"): the connection stays open and keeps reading, and
nothing more comes back (no ``Update``, no interim, no transcript, no error), as in
pipecat-ai/pipecat#5735. What a client must see is what it sees without the fault: each final
once, in order, with session times, and no audio lost; the worker counts the stall. The watchdog
runs at its defaults (``STT_STALL_TIMEOUT_S`` unset) through the real AWS SDK and the real
``websockets`` client. Flux on SageMaker is among the lost streams of
``tests/test_deepgram_faults.py`` (the same checks as a dropped connection's: each turn once, the
same session times, only the unfinished turn resent, no byte lost).
"""

from __future__ import annotations

from typing import Any

import jiwer
import pytest

from stt_service.commands.client import normalize_text
from stt_service.emulator.realtime import RealtimeFaults, RealtimeServer, shared_transcriber
from stt_service.emulator.sagemaker import SageMakerEmulator
from stt_service.emulator.websocket import DeepgramWebSocketEmulator

from .speech import joined, utterance

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("aws_test_credentials")]
SCRIPT = ["he was not an ill disposed young man", "he might even have been made amiable himself"]
GAP_S = 1.5


def two_turns() -> Any:
    return joined([utterance("0880"), utterance("0930")], gap_s=GAP_S)


def into_second_turn(seconds: float) -> int:
    """Bytes of the session's audio up to ``seconds`` into its second turn."""
    return int((utterance("0880").samples.size / 16000 + GAP_S + seconds) * 16000) * 2


async def test_a_nova_websocket_that_goes_silent_is_replaced(service: Any) -> None:
    async with DeepgramWebSocketEmulator(
        script=SCRIPT, stall_after_bytes=into_second_turn(0.5)
    ) as emu:
        async with service(
            stt_backend="nova",
            deepgram_api_key="test-key",
            deepgram_url=emu.url,
            deepgram_initial_backoff=0.05,
        ) as h:
            res = await h.stream("stall-nova", two_turns(), speed=4)
            stalls = h.worker.recognizer.stalls  # type: ignore[attr-defined]
        hung, streams = emu.stalls, len(emu.streams)
    assert hung == 1 and stalls == 1 and streams == 2
    assert not res.errors, res.errors
    # the emulator's second stream starts its script again: what it hears is the second turn
    assert [f["transcript"] for f in res.finals] == [SCRIPT[0], SCRIPT[0]]
    assert res.finals[1]["audio_start"] > res.finals[0]["audio_end"]


@pytest.mark.parametrize("transport", ["websocket", "sagemaker"])
async def test_a_realtime_server_that_goes_silent_is_replaced(service: Any, transport: str) -> None:
    parts = [utterance("0880"), utterance("0930")]
    # only utterances go to a realtime server: hang it a second into the second one (the pause
    # is long enough for the end-of-turn model to end the first turn there)
    srv = RealtimeServer(
        transcriber=shared_transcriber(),
        faults=RealtimeFaults(stall_after_bytes=[parts[0].samples.size * 2 + 32000]),
    )
    base = {"stt_backend": "realtime", "realtime_dialect": "vllm", "deepgram_initial_backoff": 0.05}
    async with srv:
        if transport == "websocket":
            settings = {**base, "realtime_url": srv.url}
            async with service(**settings) as h:
                res = await h.stream("stall-rt", joined(parts, gap_s=2.5), speed=4)
                stalls = h.worker.recognizer.stalls  # type: ignore[attr-defined]
        else:
            models = {"": lambda query, script: srv.model(query)}
            async with SageMakerEmulator(models=models) as emu:
                settings = {
                    **base,
                    "sagemaker_endpoint_name": "voxtral-ep",
                    "aws_endpoint_url_sagemaker_runtime_http2": emu.url,
                    "aws_ca_bundle": emu.ca_path,
                }
                async with service(**settings) as h:
                    res = await h.stream("stall-rt", joined(parts, gap_s=2.5), speed=4)
                    stalls = h.worker.recognizer.stalls  # type: ignore[attr-defined]
    assert stalls == 1 and srv.streams[0].stalled and len(srv.streams) == 2
    assert not res.errors, res.errors
    assert len(res.finals) == 2, [f["transcript"] for f in res.finals]  # each once
    reference = " ".join(p.reference for p in parts)
    error = jiwer.wer(normalize_text(reference), normalize_text(res.text))
    assert error <= 0.15, res.text
    # the new connection heard only the unfinished utterance (again, from its start)
    assert srv.streams[1].generations == 1
