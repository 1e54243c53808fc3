"""The real AWS SDK, over HTTP/2 and TLS, against the local SageMaker emulator's Flux model."""

from __future__ import annotations

import asyncio

import pytest

from stt_service.backends.base import RecognitionEvent, StreamParams
from stt_service.backends.deepgram.flux_protocol import (
    CLOSE_STREAM,
    PATH,
    FluxOptions,
    FluxReceiver,
)
from stt_service.backends.transports.base import TransportError
from stt_service.backends.transports.sagemaker import SageMakerDuplex, make_client
from stt_service.emulator.sagemaker import Fault, SageMakerEmulator

from .speech import joined, utterance

pytestmark = pytest.mark.usefixtures("aws_test_credentials")


async def test_flux_turns_over_the_real_sdk() -> None:
    audio = joined([utterance("0880"), utterance("0930")], gap_s=1.5)
    opts = FluxOptions(eot_threshold=0.7, keyterms=("Dashwood", "Ferrars")).for_session(
        StreamParams(session_id="s1", eager_eot_threshold=0.4)
    )
    async with SageMakerEmulator(script=["he was not", "he might even"]) as emu:
        client = await make_client("us-east-1", endpoint_uri=emu.url, ca_bundle=emu.ca_path)
        duplex = await SageMakerDuplex.open(client, "flux-ep", PATH, opts.query_string())
        rx = FluxReceiver()
        events: list[RecognitionEvent] = []

        async def read() -> None:
            while (msg := await duplex.receive()) is not None:
                events.extend(e for e in rx.feed(msg) if isinstance(e, RecognitionEvent))

        reader = asyncio.create_task(read())
        step = 2560  # 80 ms of 16 kHz audio
        for i in range(0, len(audio.pcm), step):
            await duplex.send_binary(audio.pcm[i : i + step])
        await duplex.send_text(CLOSE_STREAM)
        await duplex.close_input()
        await asyncio.wait_for(reader, 20)
        await duplex.aclose()
        (request,) = emu.app.requests
        received = emu.app.streams[0].received_bytes

    assert request.endpoint == "flux-ep" and request.invocation_path == "v2/listen"
    assert request.http_version == "2"
    assert "keyterm=Dashwood&keyterm=Ferrars" in (request.query_string or "")
    assert "eager_eot_threshold=0.4" in (request.query_string or "")
    assert received == len(audio.pcm)  # every audio byte arrived
    assert rx.connected
    finals = [e for e in events if e.is_final]
    assert [f.text for f in finals][:2] == ["he was not", "he might even"]
    assert {e.event for e in events} >= {"start_of_turn", "update", "eager_end_of_turn"}


async def test_unknown_model_path_fails_at_connect() -> None:
    async with SageMakerEmulator() as emu:
        client = await make_client("us-east-1", endpoint_uri=emu.url, ca_bundle=emu.ca_path)
        with pytest.raises(TransportError) as err:
            await SageMakerDuplex.open(client, "nova-ep", "v9/unknown", "")
        # the connection survives for the next stream
        duplex = await SageMakerDuplex.open(client, "flux-ep", PATH, "")
        assert await duplex.receive() is not None  # Connected
        await duplex.close_input()
        await duplex.aclose()
    assert not err.value.retryable and "400" in str(err.value)


# What each failure the SDK can raise means for a stream: (fault, retryable, words in the message)
FAULTS = [
    (Fault(status=429, error_type="ThrottlingException"), True, "ThrottlingException"),
    (Fault(status=503, error_type="ServiceUnavailable"), True, "503"),
    (Fault(status=500, error_type="InternalFailure"), True, "500"),
    (Fault(status=502), True, "unreadable error response"),  # a proxy's page, no error type
    (Fault(status=400, error_type="ValidationError"), False, "400"),
    (Fault(status=403, error_type="UnrecognizedClientException"), False, "not authorised"),
    (Fault(status=424, error_type="ModelError"), False, "model refused"),
    (Fault(after_bytes=2560, stream_error="InternalStreamFailure"), True, "internal stream"),
    (Fault(after_bytes=2560, stream_error="ModelStreamError"), False, "model failed"),
]


@pytest.mark.parametrize(("fault", "retryable", "words"), FAULTS)
async def test_each_failure_is_classified(fault: Fault, retryable: bool, words: str) -> None:
    async with SageMakerEmulator(faults=[fault]) as emu:
        client = await make_client("us-east-1", endpoint_uri=emu.url, ca_bundle=emu.ca_path)
        with pytest.raises(TransportError) as err:
            duplex = await SageMakerDuplex.open(client, "flux-ep", PATH, "")
            try:
                for _ in range(3):
                    await duplex.send_binary(bytes(2560))
                while await asyncio.wait_for(duplex.receive(), 5) is not None:
                    pass
            finally:
                await duplex.aclose()
    assert err.value.retryable is retryable
    assert words in str(err.value)
