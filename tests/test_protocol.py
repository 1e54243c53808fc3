"""The wire protocol: every inbound message of the contract, every refusal, every outbound shape."""

from __future__ import annotations

import base64
from typing import Any

import msgpack
import pytest

from stt_service.protocol import (
    Chunk,
    Configure,
    End,
    Finalize,
    ProtocolError,
    Start,
    StateChange,
    Word,
    decode,
    encode,
    error_message,
    interrupt_message,
    parse_inbound,
    session_id_from_subject,
    transcript_message,
)

SID = "session-42_A"
MAX = 4096


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def parse(obj: Any, sid: str = SID, max_chunk_bytes: int = MAX) -> Any:
    return parse_inbound(pack(obj), sid, max_chunk_bytes)


# --- inbound: every message type of the contract ------------------------------------------------
def test_bare_start_takes_every_default() -> None:
    msg = parse({"type": "start"})
    assert isinstance(msg, Start)
    assert msg.session_id is None
    assert msg.sample_rate == 16000
    assert msg.channels == 1
    assert msg.state == "listening"
    assert msg.encoding == "pcm_s16le"
    assert msg.speaker_id is None
    assert msg.language is None
    assert msg.keyterms is None


def test_full_start() -> None:
    msg = parse(
        {
            "type": "start",
            "session_id": SID,
            "sample_rate": 48000,
            "channels": 2,
            "state": "responding",
            "speaker_id": "alice",
            "encoding": "linear16",
            "language": "en",
            "keyterms": ["Dashwood", "Norland"],
            "eot_threshold": 0.7,
            "eager_eot_threshold": 0.5,
            "eot_timeout_ms": 5000,
        }
    )
    assert isinstance(msg, Start)
    assert msg.session_id == SID
    assert msg.sample_rate == 48000
    assert msg.channels == 2
    assert msg.state == "responding"
    assert msg.speaker_id == "alice"
    assert msg.encoding == "linear16"
    assert msg.language == "en"
    assert msg.keyterms == ["Dashwood", "Norland"]
    assert msg.eot_threshold == 0.7
    assert msg.eager_eot_threshold == 0.5
    assert msg.eot_timeout_ms == 5000


def test_start_ignores_unknown_fields() -> None:
    msg = parse({"type": "start", "future_option": {"x": 1}})
    assert isinstance(msg, Start)


def test_chunk_with_binary_audio() -> None:
    pcm = bytes(range(256)) * 4
    msg = parse({"type": "chunk", "audio": pcm, "timestamp": 1700000000.25})
    assert isinstance(msg, Chunk)
    assert msg.pcm == pcm
    assert msg.timestamp == 1700000000.25


def test_chunk_with_base64_audio() -> None:
    pcm = bytes(range(255, -1, -1)) * 3
    msg = parse({"type": "chunk", "audio_b64": base64.b64encode(pcm).decode()})
    assert isinstance(msg, Chunk)
    assert msg.pcm == pcm


def test_integer_timestamp_and_threshold_are_accepted_as_floats() -> None:
    chunk = parse({"type": "chunk", "audio": b"\x00\x00", "timestamp": 1700000000})
    assert isinstance(chunk, Chunk)
    assert chunk.timestamp == 1700000000.0
    configure = parse({"type": "configure", "eot_threshold": 1})
    assert isinstance(configure, Configure)
    assert configure.eot_threshold == 1.0


def test_chunk_with_an_odd_number_of_bytes_is_accepted() -> None:
    msg = parse({"type": "chunk", "audio": b"\x01\x02\x03"})
    assert isinstance(msg, Chunk)
    assert msg.pcm == b"\x01\x02\x03"


@pytest.mark.parametrize("state", ["listening", "responding"])
def test_state_change(state: str) -> None:
    msg = parse({"type": "state_change", "state": state})
    assert isinstance(msg, StateChange)
    assert msg.state == state


def test_configure() -> None:
    msg = parse({"type": "configure", "keyterms": ["Elinor"], "eot_threshold": 0.9})
    assert isinstance(msg, Configure)
    assert msg.keyterms == ["Elinor"]
    assert msg.eot_threshold == 0.9
    assert msg.eager_eot_threshold is None
    assert msg.eot_timeout_ms is None


def test_finalize_and_end() -> None:
    assert isinstance(parse({"type": "finalize"}), Finalize)
    assert isinstance(parse({"type": "end"}), End)


def test_matching_session_id_is_accepted() -> None:
    msg = parse({"type": "end", "session_id": SID})
    assert isinstance(msg, End)
    assert msg.session_id == SID


@pytest.mark.parametrize("sid", ["a", "x" * 128, "ABC-def_019"])
def test_valid_session_ids(sid: str) -> None:
    assert isinstance(parse({"type": "start"}, sid=sid), Start)


def test_chunk_at_exactly_the_size_limit_is_accepted() -> None:
    pcm = b"\x11" * MAX
    raw = parse({"type": "chunk", "audio": pcm})
    b64 = parse({"type": "chunk", "audio_b64": base64.b64encode(pcm).decode()})
    assert isinstance(raw, Chunk) and raw.pcm == pcm
    assert isinstance(b64, Chunk) and b64.pcm == pcm


@pytest.mark.parametrize(
    ("subject", "sid"),
    [
        ("ai.voice.stream.abc-1", "abc-1"),
        ("ai.voice.stream.a.b", "a.b"),  # rejected later by parse_inbound, with this id
        ("elsewhere.xyz", "xyz"),
    ],
)
def test_session_id_from_subject(subject: str, sid: str) -> None:
    assert session_id_from_subject(subject, "ai.voice.stream") == sid


# --- inbound: refusals ----------------------------------------------------------------------------
B64_OVER = base64.b64encode(b"\x00" * (MAX + 2)).decode()
B64_WAY_OVER = base64.b64encode(b"\x00" * (MAX * 10)).decode()

BAD: list[tuple[str, bytes, str, str, str]] = [
    # (id, payload, session id, code, a fragment the message must contain)
    ("reserved-byte", b"\xc1", SID, "invalid_msgpack", "msgpack"),
    ("truncated-map", b"\x82\xa4type", SID, "invalid_msgpack", "msgpack"),
    ("json-text", b'{"type": "start"}', SID, "invalid_msgpack", "msgpack"),
    ("list", pack(["start", 1]), SID, "invalid_message", "map"),
    ("string", pack("start"), SID, "invalid_message", "map"),
    ("integer", pack(7), SID, "invalid_message", "map"),
    ("no-type", pack({"sample_rate": 16000}), SID, "missing_type", "type"),
    ("type-none", pack({"type": None}), SID, "missing_type", "type"),
    ("unknown-type", pack({"type": "sleep"}), SID, "unknown_type", "sleep"),
    ("type-not-str", pack({"type": 3}), SID, "unknown_type", "3"),
    (
        "bad-base64",
        pack({"type": "chunk", "audio_b64": "not base64!!"}),
        SID,
        "invalid_audio",
        "base64",
    ),
    ("bad-base64-padding", pack({"type": "chunk", "audio_b64": "AAA"}), SID, "invalid_audio", ""),
    (
        "rate-str",
        pack({"type": "start", "sample_rate": "16000"}),
        SID,
        "invalid_field",
        "sample_rate",
    ),
    (
        "rate-bool",
        pack({"type": "start", "sample_rate": True}),
        SID,
        "invalid_field",
        "sample_rate",
    ),
    (
        "rate-float",
        pack({"type": "start", "sample_rate": 16000.5}),
        SID,
        "invalid_field",
        "sample_rate",
    ),
    ("rate-low", pack({"type": "start", "sample_rate": 4000}), SID, "invalid_field", "sample_rate"),
    (
        "rate-high",
        pack({"type": "start", "sample_rate": 96000}),
        SID,
        "invalid_field",
        "sample_rate",
    ),
    ("channels-3", pack({"type": "start", "channels": 3}), SID, "invalid_field", "channels"),
    ("start-state", pack({"type": "start", "state": "sleeping"}), SID, "invalid_field", "state"),
    (
        "state-change-state",
        pack({"type": "state_change", "state": "sleeping"}),
        SID,
        "invalid_field",
        "state",
    ),
    ("state-change-missing", pack({"type": "state_change"}), SID, "invalid_field", "state"),
    ("encoding", pack({"type": "start", "encoding": "mulaw"}), SID, "invalid_field", "encoding"),
    ("keyterms-str", pack({"type": "start", "keyterms": "abc"}), SID, "invalid_field", "keyterms"),
    (
        "eot-threshold",
        pack({"type": "configure", "eot_threshold": 1.5}),
        SID,
        "invalid_field",
        "eot_threshold",
    ),
    ("speaker-int", pack({"type": "start", "speaker_id": 5}), SID, "invalid_field", "speaker_id"),
    ("audio-str", pack({"type": "chunk", "audio": "abcd"}), SID, "invalid_field", "audio"),
    (
        "both-audio",
        pack({"type": "chunk", "audio": b"\x00\x00", "audio_b64": "AAA="}),
        SID,
        "invalid_field",
        "audio",
    ),
    ("neither-audio", pack({"type": "chunk"}), SID, "invalid_field", "audio"),
    ("mismatch", pack({"type": "end", "session_id": "other"}), SID, "session_id_mismatch", "other"),
    ("id-dot", pack({"type": "start"}), "a.b", "invalid_session_id", "a.b"),
    ("id-long", pack({"type": "start"}), "x" * 129, "invalid_session_id", "1-128"),
    ("id-empty", pack({"type": "start"}), "", "invalid_session_id", "1-128"),
    ("id-space", pack({"type": "start"}), "a b", "invalid_session_id", "a b"),
    ("id-wildcard", pack({"type": "start"}), "*", "invalid_session_id", "*"),
    # an invalid id is reported even when the payload is garbage too
    ("id-and-garbage", b"\xc1", "a.b", "invalid_session_id", "a.b"),
    (
        "raw-too-large",
        pack({"type": "chunk", "audio": b"\x00" * (MAX + 2)}),
        SID,
        "chunk_too_large",
        str(MAX),
    ),
    (
        "b64-too-large",
        pack({"type": "chunk", "audio_b64": B64_OVER}),
        SID,
        "chunk_too_large",
        str(MAX),
    ),
    (
        "b64-way-too-large",
        pack({"type": "chunk", "audio_b64": B64_WAY_OVER}),
        SID,
        "chunk_too_large",
        "STT_MAX_CHUNK_BYTES",
    ),
]


@pytest.mark.parametrize(
    ("payload", "sid", "code", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_gives_protocol_error(payload: bytes, sid: str, code: str, fragment: str) -> None:
    result = parse_inbound(payload, sid, MAX)
    assert isinstance(result, ProtocolError), result
    assert result.code == code, result.message
    assert result.message.strip()
    assert "\n" not in result.message
    assert fragment in result.message


# --- outbound -------------------------------------------------------------------------------------
TRANSCRIPT_REQUIRED = {
    "type",
    "session_id",
    "transcript",
    "sequence",
    "is_partial",
    "is_final",
    "timestamp",
    "has_voice_activity",
    "state",
}


def test_minimal_transcript_message() -> None:
    msg = transcript_message(
        session_id=SID,
        transcript="he was not an ill disposed young man",
        sequence=3,
        is_final=False,
        timestamp=1700000000.5,
        speaker_id=None,
        has_voice_activity=True,
        state="listening",
    )
    assert set(msg) == TRANSCRIPT_REQUIRED  # no speaker_id when none was given, no null optionals
    assert msg["type"] == "transcript"
    assert msg["session_id"] == SID
    assert msg["transcript"] == "he was not an ill disposed young man"
    assert type(msg["sequence"]) is int and msg["sequence"] == 3
    assert msg["is_partial"] is True
    assert msg["is_final"] is False
    assert type(msg["timestamp"]) is float
    assert msg["has_voice_activity"] is True
    assert msg["state"] == "listening"


def test_full_transcript_message() -> None:
    msg = transcript_message(
        session_id=SID,
        transcript="he might even",
        sequence=0,
        is_final=True,
        timestamp=1700000001.0,
        speaker_id="alice",
        has_voice_activity=False,
        state="responding",
        confidence=0.93,
        words=[Word("he", 0.1, 0.2, 0.99), Word("might", 0.2, 0.5, 0.9)],
        audio_start=0.1,
        audio_end=0.9,
        turn_index=4,
        event="end_of_turn",
        language="en",
    )
    assert set(msg) == TRANSCRIPT_REQUIRED | {
        "speaker_id",
        "confidence",
        "words",
        "audio_start",
        "audio_end",
        "turn_index",
        "event",
        "language",
    }
    assert msg["is_partial"] is False
    assert msg["is_final"] is True
    assert msg["speaker_id"] == "alice"
    assert msg["has_voice_activity"] is False
    assert msg["state"] == "responding"
    assert msg["confidence"] == 0.93
    assert msg["words"] == [
        {"word": "he", "start": 0.1, "end": 0.2, "confidence": 0.99},
        {"word": "might", "start": 0.2, "end": 0.5, "confidence": 0.9},
    ]
    assert (msg["audio_start"], msg["audio_end"]) == (0.1, 0.9)
    assert msg["turn_index"] == 4
    assert msg["event"] == "end_of_turn"
    assert msg["language"] == "en"


@pytest.mark.parametrize("speaker", ["alice", None])
def test_interrupt_message(speaker: str | None) -> None:
    msg = interrupt_message(session_id=SID, timestamp=1700000002.0, speaker_id=speaker)
    assert set(msg) == {"session_id", "type", "timestamp", "speaker_id"}
    assert msg["type"] == "interrupt"
    assert msg["session_id"] == SID
    assert msg["timestamp"] == 1700000002.0
    assert msg["speaker_id"] == speaker


def test_error_message() -> None:
    msg = error_message(
        session_id=SID, code="invalid_field", message="start: bad", timestamp=1700000003.0
    )
    assert msg == {
        "session_id": SID,
        "type": "error",
        "code": "invalid_field",
        "message": "start: bad",
        "timestamp": 1700000003.0,
    }


def test_encode_decode_round_trip() -> None:
    messages: list[dict[str, Any]] = [
        transcript_message(
            session_id=SID,
            transcript="ünïcode ok",
            sequence=7,
            is_final=True,
            timestamp=1700000004.125,
            speaker_id="bob",
            has_voice_activity=True,
            state="listening",
            words=[Word("ok", 1.0, 1.25, 0.5)],
        ),
        interrupt_message(session_id=SID, timestamp=1.5, speaker_id=None),
        error_message(session_id=SID, code="backend_error", message="x", timestamp=2.0),
    ]
    for msg in messages:
        data = encode(msg)
        assert isinstance(data, bytes)
        assert decode(data) == msg


def test_encoded_binary_audio_parses_back_as_a_chunk() -> None:
    pcm = b"\x00\x80\xff\x7f" * 10
    msg = parse_inbound(encode({"type": "chunk", "audio": pcm}), SID, MAX)
    assert isinstance(msg, Chunk)
    assert msg.pcm == pcm
