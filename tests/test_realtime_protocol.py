"""The realtime dialects (sans-I/O) and the emulator's vLLM semantics, message by message."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from stt_service.backends.realtime.protocol import (
    Delta,
    Done,
    OpenAIDialect,
    Ready,
    ServerError,
    VLLMDialect,
)
from stt_service.config import ConfigError, load_settings
from stt_service.emulator.realtime import RealtimeEmulator, shared_transcriber

from .speech import utterance


def test_vllm_messages_are_vllms() -> None:
    d = VLLMDialect("/opt/ml/model")
    assert [json.loads(m) for m in d.session_update(None, "ignored")] == [
        {"type": "session.update", "model": "/opt/ml/model"}
    ]
    assert [json.loads(m) for m in d.open_utterance()] == [
        {"type": "input_audio_buffer.commit", "final": False}
    ]
    assert [json.loads(m) for m in d.close_utterance()] == [
        {"type": "input_audio_buffer.commit", "final": True}
    ]
    append = json.loads(d.append(b"\x01\x00\x02\x00"))
    assert append["type"] == "input_audio_buffer.append"
    assert base64.b64decode(append["audio"]) == b"\x01\x00\x02\x00"
    assert d.rate == 16000 and d.query == "" and not d.can_prompt()


def test_vllm_events_and_error_classes() -> None:
    d = VLLMDialect("m")
    assert d.read('{"type":"session.created","id":"sess-1","created":1}') == [Ready()]
    assert d.read('{"type":"transcription.delta","delta":""}') == [Delta("")]
    assert d.read('{"type":"transcription.done","text":" Hi.","usage":null}') == [Done(" Hi.")]
    (err,) = d.read(
        '{"type":"error","error":"The model `x` does not exist.","code":"model_not_found"}'
    )
    assert isinstance(err, ServerError) and not err.retryable and err.scope == "session"
    (err,) = d.read('{"type":"error","error":"CUDA error","code":"processing_error"}')
    assert isinstance(err, ServerError) and err.retryable and err.scope == "utterance"
    (err,) = d.read("not json")
    assert isinstance(err, ServerError) and err.scope == "notice"
    assert d.read('{"type":"session.updated","model":"m"}') == []


def test_openai_messages_and_items() -> None:
    d = OpenAIDialect("gpt-4o-transcribe")
    (update,) = [json.loads(m) for m in d.session_update("en", "Dashwood, Norland")]
    assert update["type"] == "session.update"
    session = update["session"]
    assert session["type"] == "transcription"
    audio_in = session["audio"]["input"]
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_in["turn_detection"] is None
    assert audio_in["transcription"] == {
        "model": "gpt-4o-transcribe",
        "language": "en",
        "prompt": "Dashwood, Norland",
    }
    assert d.rate == 24000 and d.query == "intent=transcription" and d.can_prompt()
    assert d.open_utterance() == []
    assert [json.loads(m) for m in d.close_utterance()] == [{"type": "input_audio_buffer.commit"}]
    d.open_utterance()
    assert d.read('{"type":"input_audio_buffer.committed","item_id":"item_1"}') == []
    delta = (
        '{"type":"conversation.item.input_audio_transcription.delta","item_id":"%s","delta":"Hi"}'
    )
    assert d.read(delta % "item_1") == [Delta("Hi")]
    assert d.read(delta % "item_0") == []  # not this utterance's item
    done = (
        '{"type":"conversation.item.input_audio_transcription.completed",'
        '"item_id":"item_1","transcript":"Hi there."}'
    )
    assert d.read(done) == [Done("Hi there.")]
    (empty,) = d.read(
        '{"type":"error","error":{"type":"invalid_request_error",'
        '"code":"input_audio_buffer_commit_empty","message":"buffer too small"}}'
    )
    assert isinstance(empty, ServerError) and empty.scope == "empty"
    (failed,) = d.read(
        '{"type":"conversation.item.input_audio_transcription.failed","item_id":"item_1",'
        '"error":{"code":"audio_unintelligible","message":"no"}}'
    )
    assert isinstance(failed, ServerError) and failed.scope == "utterance" and not failed.retryable
    (server,) = d.read('{"type":"error","error":{"type":"server_error","message":"oops"}}')
    assert isinstance(server, ServerError) and server.retryable


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"stt_backend": "realtime"}, "REALTIME_URL or SAGEMAKER_ENDPOINT_NAME"),
        (
            {"stt_backend": "realtime", "realtime_url": "http://x/v1/realtime"},
            "REALTIME_URL must be a ws:// or wss:// URL ending in /v1/realtime",
        ),
        (
            {"stt_backend": "realtime", "realtime_url": "ws://x/v2/listen"},
            "ending in /v1/realtime",
        ),
        ({"stt_backend": "realtime", "realtime_dialect": "grpc"}, "REALTIME_DIALECT"),
    ],
)
def test_bad_realtime_configuration_is_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(**env)
    text = str(err.value)
    assert message in text and "\n" not in text


def test_realtime_defaults() -> None:
    s = load_settings(stt_backend="realtime", realtime_url="wss://api.openai.com/v1/realtime")
    assert s.resolved_realtime_model() == "mistralai/Voxtral-Mini-4B-Realtime-2602"
    s = load_settings(
        stt_backend="realtime", realtime_dialect="openai", sagemaker_endpoint_name="ep"
    )
    assert s.resolved_realtime_model() == "gpt-4o-transcribe"


async def test_the_emulator_keeps_vllms_sharp_edges() -> None:
    """A commit during a generation is dropped; audio between the final commit and ``done`` is
    discarded; ``done.text`` is the deltas joined; the words are real."""
    sent: list[str | None] = []
    emu = RealtimeEmulator("", transcriber=shared_transcriber())
    emu.bind(sent.append)
    (created,) = emu.connected()
    assert json.loads(created)["type"] == "session.created"
    commit = json.dumps({"type": "input_audio_buffer.commit"})
    assert json.loads(emu.on_text(commit)[0])["code"] == "model_not_validated"
    assert emu.on_text(json.dumps({"type": "session.update", "model": "voxtral"})) == []
    speech = utterance("0880")
    pcm = speech.samples.astype("<i2").tobytes()
    assert emu.on_text(commit) == []
    for i in range(0, len(pcm), 3200):
        chunk = base64.b64encode(pcm[i : i + 3200]).decode()
        assert emu.on_text(json.dumps({"type": "input_audio_buffer.append", "audio": chunk})) == []
        await asyncio.sleep(0)
    assert emu.on_text(commit) == [] and emu.dropped_commits == 1
    emu.on_text(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
    late = base64.b64encode(pcm[:3200]).decode()
    emu.on_text(json.dumps({"type": "input_audio_buffer.append", "audio": late}))
    assert emu.discarded_bytes == 3200
    for _ in range(400):
        if any(m and json.loads(m)["type"] == "transcription.done" for m in sent):
            break
        await asyncio.sleep(0.025)
    events = [json.loads(m) for m in sent if m]
    deltas = "".join(e["delta"] for e in events if e["type"] == "transcription.delta")
    (done,) = [e for e in events if e["type"] == "transcription.done"]
    assert done["text"] == deltas
    assert "he was not an" in done["text"].lower() and "young man" in done["text"].lower()
    assert done["usage"]["completion_tokens"] > 0
    assert json.loads(emu.on_text("{")[0]) == {
        "type": "error",
        "error": "Invalid JSON",
        "code": "invalid_json",
    }
