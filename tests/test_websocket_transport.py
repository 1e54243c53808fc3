"""The real ``websockets`` client, through WebSocketConnector, against the Deepgram emulator."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest

from stt_service.backends.transports.base import TransportError
from stt_service.backends.transports.websocket import WebSocketConnector, WebSocketDuplex
from stt_service.bus.embedded import free_port
from stt_service.emulator.flux import FluxEmulator
from stt_service.emulator.websocket import DeepgramWebSocketEmulator, Rejection

from .speech import joined, pcm16, utterance

pytestmark = pytest.mark.slow

KEY = "dg-secret-key-123"
SCRIPT = ["he was not an ill disposed young man", "he might even have been made amiable himself"]
QUERY = "model=flux-general-en&encoding=linear16&sample_rate=16000&keyterm=Dashwood"
CLOSE_STREAM = json.dumps({"type": "CloseStream"})
STEP = 2560  # 80 ms of 16 kHz 16-bit mono


async def stream_all(duplex: WebSocketDuplex, pcm: bytes) -> list[dict[str, Any]]:
    """Send ``pcm`` in 80 ms chunks and CloseStream; return every message until the close."""
    messages: list[dict[str, Any]] = []

    async def read() -> None:
        while (msg := await duplex.receive()) is not None:
            assert isinstance(msg, str)
            messages.append(json.loads(msg))

    reader = asyncio.create_task(read())
    for i in range(0, len(pcm), STEP):
        await duplex.send_binary(pcm[i : i + STEP])
    await duplex.send_text(CLOSE_STREAM)
    await duplex.close_input()
    await asyncio.wait_for(reader, 20)
    return messages


async def test_flux_turns_over_a_real_websocket() -> None:
    audio = joined([utterance("0880"), utterance("0930")], gap_s=1.5)
    async with DeepgramWebSocketEmulator(script=SCRIPT, api_key=KEY) as emu:
        connector = WebSocketConnector(KEY, base_url=emu.url)
        assert connector.describe() == f"Deepgram API at {emu.url}"
        assert KEY not in repr(connector)
        duplex = await connector.open("v2/listen", QUERY)
        messages = await stream_all(duplex, audio.pcm)
        assert await duplex.receive() is None  # still ended
        with pytest.raises(TransportError) as err:  # the server has closed the socket
            await duplex.send_binary(b"\0\0")
        await duplex.aclose()
        await duplex.aclose()  # idempotent, never raises
        await connector.aclose()
        (request,) = emu.requests
        (model,) = emu.streams

    assert err.value.retryable
    assert request.path == "/v2/listen" and request.query == QUERY
    assert request.headers["authorization"] == "Token ***"
    assert KEY not in json.dumps(request.headers)
    assert isinstance(model, FluxEmulator) and model.closed
    assert model.received_bytes == len(audio.pcm)  # every audio byte arrived
    assert model.keyterms == ["Dashwood"]
    assert messages[0]["type"] == "Connected"
    events = [m["event"] for m in messages if m["type"] == "TurnInfo"]
    assert {"StartOfTurn", "Update", "EndOfTurn"} <= set(events)
    finals = [m["transcript"] for m in messages if m.get("event") == "EndOfTurn"]
    assert finals[:2] == SCRIPT


async def test_wrong_key_is_a_terminal_401_at_once() -> None:
    async with DeepgramWebSocketEmulator(api_key=KEY) as emu:
        connector = WebSocketConnector("not-the-key", base_url=emu.url)
        started = time.monotonic()
        with pytest.raises(TransportError) as err:
            await connector.open("v2/listen", QUERY)
        elapsed = time.monotonic() - started
        (request,) = emu.requests
    assert elapsed < 1.0
    assert not err.value.retryable
    assert err.value.cause == "HTTP 401"
    assert "401" in str(err.value) and "DEEPGRAM_API_KEY" in str(err.value)
    assert "INVALID_AUTH" in str(err.value)  # Deepgram's error body
    assert "not-the-key" not in str(err.value)
    assert request.status == 401


async def test_missing_key_is_refused_too() -> None:
    async with DeepgramWebSocketEmulator(api_key=KEY) as emu:
        with pytest.raises(TransportError) as err:
            await WebSocketConnector("", base_url=emu.url).open("v2/listen", "")
    assert not err.value.retryable and err.value.cause == "HTTP 401"


async def test_unknown_path_is_terminal_404() -> None:
    async with DeepgramWebSocketEmulator(api_key=KEY) as emu:
        with pytest.raises(TransportError) as err:
            await WebSocketConnector(KEY, base_url=emu.url).open("v9/listen", QUERY)
    assert not err.value.retryable
    assert err.value.cause == "HTTP 404" and "v9/listen" in str(err.value)


async def test_nothing_listening_is_retryable() -> None:
    connector = WebSocketConnector(KEY, base_url=f"ws://127.0.0.1:{free_port()}")
    with pytest.raises(TransportError) as err:
        await connector.open("v2/listen", QUERY)
    assert err.value.retryable and err.value.cause == "connection refused"


async def test_throttling_and_5xx_are_retryable_with_retry_after() -> None:
    rejections = [
        Rejection(429, headers={"Retry-After": "3"}),
        Rejection(503),
        Rejection(400, body='{"err_code": "Bad Request", "err_msg": "bad encoding"}'),
    ]
    async with DeepgramWebSocketEmulator(api_key=KEY, reject=rejections) as emu:
        connector = WebSocketConnector(KEY, base_url=emu.url)
        errors: list[TransportError] = []
        for _ in rejections:
            with pytest.raises(TransportError) as err:
                await connector.open("v2/listen", QUERY)
            errors.append(err.value)
        duplex = await connector.open("v2/listen", QUERY)  # the next one is accepted
        connected = await duplex.receive()
        await duplex.aclose()
    throttled, unavailable, invalid = errors
    assert throttled.retryable and throttled.cause == "HTTP 429" and throttled.retry_after == 3.0
    assert unavailable.retryable and unavailable.cause == "HTTP 503"
    assert unavailable.retry_after is None
    assert not invalid.retryable and "bad encoding" in str(invalid)
    assert isinstance(connected, str) and json.loads(connected)["type"] == "Connected"


async def collect_until_failure(duplex: WebSocketDuplex, pcm: bytes) -> TransportError:
    """Stream until the transport fails; the error ``receive`` raises."""

    async def read() -> None:
        while await duplex.receive() is not None:
            pass

    reader = asyncio.create_task(read())
    try:
        for i in range(0, len(pcm), STEP):
            await duplex.send_binary(pcm[i : i + STEP])
            await asyncio.sleep(0)
        await duplex.send_text(CLOSE_STREAM)
    except TransportError as exc:
        assert exc.retryable or exc.cause.startswith("close ")
    with pytest.raises(TransportError) as err:
        await asyncio.wait_for(reader, 10)
    await duplex.aclose()
    return err.value


async def test_dropped_connection_is_retryable_and_only_the_first() -> None:
    pcm = pcm16(utterance("0880").samples).pcm
    async with DeepgramWebSocketEmulator(api_key=KEY, drop_after_bytes=10 * STEP) as emu:
        connector = WebSocketConnector(KEY, base_url=emu.url)
        error = await collect_until_failure(await connector.open("v2/listen", QUERY), pcm)
        # the reconnect gets a stream that lasts
        messages = await stream_all(await connector.open("v2/listen", QUERY), pcm)
        dropped = emu.dropped
        first, second = emu.streams
    assert error.retryable and error.cause == "connection reset"
    assert dropped == 1
    assert first.closed is False and second.closed
    assert any(m.get("event") == "EndOfTurn" for m in messages)


@pytest.mark.parametrize(
    ("close", "retryable"),
    [
        ((1011, "internal error"), True),
        ((1013, "try again later"), True),
        ((1008, "could not decode audio"), False),
        ((4000, "deepgram says no"), False),
    ],
)
async def test_close_codes(close: tuple[int, str], retryable: bool) -> None:
    pcm = pcm16(utterance("0880").samples).pcm
    async with DeepgramWebSocketEmulator(
        api_key=KEY, drop_after_bytes=4 * STEP, drop_close=close
    ) as emu:
        duplex = await WebSocketConnector(KEY, base_url=emu.url).open("v2/listen", QUERY)
        error = await collect_until_failure(duplex, pcm)
    code, reason = close
    assert error.retryable is retryable
    assert error.cause == f"close {code}"
    assert reason in str(error) and str(code) in str(error)


class Echo:
    """A stand-in model for a custom route: echoes text, counts audio."""

    def __init__(self, query: str, script: Sequence[str]) -> None:
        self.query = query
        self.script = script
        self.closed = False
        self.audio = 0

    def connected(self) -> list[str]:
        return [json.dumps({"type": "Metadata", "query": self.query})]

    def on_audio(self, pcm: bytes) -> list[str]:
        self.audio += len(pcm)
        return []

    def on_text(self, text: str) -> list[str]:
        self.closed = json.loads(text)["type"] == "CloseStream"
        return [json.dumps({"type": "Echo", "audio": self.audio, "script": list(self.script)})]


async def test_models_override_routes_v1() -> None:
    async with DeepgramWebSocketEmulator(
        script=["one"], api_key=KEY, models={"v1/listen": Echo}
    ) as emu:
        connector = WebSocketConnector(KEY, base_url=emu.url)
        duplex = await connector.open("v1/listen", "model=nova-3")
        messages = await stream_all(duplex, b"\0" * 10_000)
        await duplex.aclose()
        with pytest.raises(TransportError) as err:  # the override replaced /v2/listen
            await connector.open("v2/listen", "")
    assert messages == [
        {"type": "Metadata", "query": "model=nova-3"},
        {"type": "Echo", "audio": 10_000, "script": ["one"]},
    ]
    assert err.value.cause == "HTTP 404"


async def test_connect_timeout_is_retryable() -> None:
    """A server that accepts TCP but never answers the handshake."""
    writers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        connector = WebSocketConnector(KEY, base_url=f"ws://127.0.0.1:{port}", open_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TransportError) as err:
            await connector.open("v2/listen", "")
        elapsed = time.monotonic() - started
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()
    assert elapsed < 2.0
    assert err.value.retryable and err.value.cause == "connect timeout"


async def test_nova_on_v1_listen() -> None:
    audio = joined([utterance("0880")], gap_s=1.5)
    async with DeepgramWebSocketEmulator(script=SCRIPT[:1], api_key=KEY) as emu:
        connector = WebSocketConnector(KEY, base_url=emu.url)
        duplex = await connector.open("v1/listen", "model=nova-3&encoding=linear16")
        messages = await stream_all(duplex, audio.pcm)
        await duplex.aclose()
        (request,) = emu.requests
    assert request.path == "/v1/listen" and "model=nova-3" in request.query
    results = [m for m in messages if m["type"] == "Results"]
    assert results and any(m.get("speech_final") for m in results)
    said = " ".join(
        m["channel"]["alternatives"][0]["transcript"] for m in results if m.get("is_final")
    )
    assert said.split() == SCRIPT[0].split()
