"""The wire protocol: inbound msgpack maps -> typed messages or a ProtocolError; outbound builders.

Nothing here does I/O. ``parse_inbound`` never raises for bad input: it returns a
:class:`ProtocolError` with the ``code`` and human ``message`` of the contract's ``error`` reply.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

State = Literal["listening", "responding"]


# --- error codes (short snake_case, documented in the README) ------------------------------------
class Code:
    INVALID_MSGPACK = "invalid_msgpack"
    INVALID_MESSAGE = "invalid_message"
    MISSING_TYPE = "missing_type"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FIELD = "invalid_field"
    INVALID_SESSION_ID = "invalid_session_id"
    SESSION_ID_MISMATCH = "session_id_mismatch"
    INVALID_AUDIO = "invalid_audio"
    CHUNK_TOO_LARGE = "chunk_too_large"
    PLAYBACK_RESYNC = "playback_resync"
    TOO_MANY_SESSIONS = "too_many_sessions"
    SESSION_IDLE_TIMEOUT = "session_idle_timeout"
    SESSION_TOO_LONG = "session_too_long"
    BACKEND_OVERLOADED = "backend_overloaded"
    SESSION_ALREADY_STARTED = "session_already_started"
    UNKNOWN_SESSION = "unknown_session"
    SERVICE_DRAINING = "service_draining"
    BACKEND_ERROR = "backend_error"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    CONFIGURE_FAILED = "configure_failed"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class ProtocolError:
    code: str
    message: str


# --- inbound messages -----------------------------------------------------------------------------
class _Inbound(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    session_id: str | None = None


Threshold = Annotated[float, Field(ge=0.0, le=1.0)]
EotTimeout = Annotated[int, Field(ge=100, le=60_000)]


class Start(_Inbound):
    type: Literal["start"] = "start"
    sample_rate: Annotated[int, Field(ge=8000, le=48000)] = 16000
    channels: Literal[1, 2] = 1
    state: State = "listening"
    speaker_id: str | None = None
    encoding: Literal["pcm_s16le", "linear16"] = "pcm_s16le"
    language: str | None = None
    keyterms: list[str] | None = None
    eot_threshold: Threshold | None = None
    eager_eot_threshold: Threshold | None = None
    eot_timeout_ms: EotTimeout | None = None


class Chunk(_Inbound):
    type: Literal["chunk"] = "chunk"
    audio_b64: str | None = None
    audio: bytes | None = None
    timestamp: float | None = None
    # decoded PCM bytes, filled in by ``parse_inbound``
    pcm: bytes = b""


class Playback(_Inbound):
    """What the agent is playing to the user now: the echo reference (PCM16 mono)."""

    type: Literal["playback"] = "playback"
    audio_b64: str | None = None
    audio: bytes | None = None
    sample_rate: Annotated[int, Field(ge=8000, le=48000)] | None = None  # None: the session's
    pcm: bytes = b""


class StateChange(_Inbound):
    type: Literal["state_change"] = "state_change"
    state: State


class Configure(_Inbound):
    type: Literal["configure"] = "configure"
    keyterms: list[str] | None = None
    eot_threshold: Threshold | None = None
    eager_eot_threshold: Threshold | None = None
    eot_timeout_ms: EotTimeout | None = None


class Finalize(_Inbound):
    type: Literal["finalize"] = "finalize"


class End(_Inbound):
    type: Literal["end"] = "end"


Inbound = Start | Chunk | Playback | StateChange | Configure | Finalize | End

_MODELS: dict[str, type[_Inbound]] = {
    "start": Start,
    "chunk": Chunk,
    "playback": Playback,
    "state_change": StateChange,
    "configure": Configure,
    "finalize": Finalize,
    "end": End,
}


def valid_session_id(session_id: str) -> bool:
    return bool(SESSION_ID_RE.match(session_id))


def session_id_from_subject(subject: str, prefix: str) -> str:
    """The last token of ``{prefix}.{id}`` (whatever it is; validity is checked separately)."""
    return (
        subject[len(prefix) + 1 :]
        if subject.startswith(prefix + ".")
        else subject.rsplit(".", 1)[-1]
    )


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        field = ".".join(str(p) for p in e.get("loc", ())) or "message"
        parts.append(f"{field}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def parse_inbound(data: bytes, session_id: str, max_chunk_bytes: int) -> Inbound | ProtocolError:
    """Decode one inbound NATS payload for the session named by its subject."""
    if not valid_session_id(session_id):
        shown = session_id if len(session_id) <= 40 else session_id[:40] + "..."
        return ProtocolError(
            Code.INVALID_SESSION_ID,
            f"session id {shown!r} is invalid: use 1-128 characters of A-Z a-z 0-9 _ -",
        )
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        return ProtocolError(
            Code.INVALID_MSGPACK, f"payload is not valid msgpack ({type(exc).__name__})"
        )
    if not isinstance(obj, dict):
        return ProtocolError(
            Code.INVALID_MESSAGE, f"message must be a msgpack map, got {type(obj).__name__}"
        )
    mtype = obj.get("type")
    if mtype is None:
        return ProtocolError(Code.MISSING_TYPE, "message has no 'type' field")
    model = _MODELS.get(mtype) if isinstance(mtype, str) else None
    if model is None:
        shown = repr(mtype)[:40]
        return ProtocolError(
            Code.UNKNOWN_TYPE, f"unknown message type {shown}; expected one of {', '.join(_MODELS)}"
        )
    try:
        msg = model.model_validate(obj)
    except ValidationError as err:
        return ProtocolError(Code.INVALID_FIELD, f"{mtype}: {_validation_message(err)}")
    if msg.session_id is not None and msg.session_id != session_id:
        return ProtocolError(
            Code.SESSION_ID_MISMATCH,
            f"session_id {msg.session_id[:40]!r} does not match the subject's {session_id!r}",
        )
    if isinstance(msg, Chunk):
        return _decode_audio(msg, max_chunk_bytes)
    if isinstance(msg, Playback):
        return _decode_audio(msg, max_chunk_bytes)
    return msg  # type: ignore[return-value]


def _decode_audio[M: (Chunk, Playback)](msg: M, max_chunk_bytes: int) -> M | ProtocolError:
    """A chunk's or a playback's PCM, from whichever of its two fields holds it."""
    if (msg.audio is None) == (msg.audio_b64 is None):
        return ProtocolError(
            Code.INVALID_FIELD,
            f"{msg.type}: give exactly one of 'audio_b64' (base64 str) or 'audio' (bin)",
        )
    if msg.audio is not None:
        pcm = msg.audio
    else:
        assert msg.audio_b64 is not None
        # base64 is 4/3 the size: refuse oversize payloads before decoding them
        if len(msg.audio_b64) > (max_chunk_bytes * 4) // 3 + 4:
            return _too_large(msg.type, len(msg.audio_b64) * 3 // 4, max_chunk_bytes)
        try:
            pcm = base64.b64decode(msg.audio_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            return ProtocolError(
                Code.INVALID_AUDIO, f"{msg.type}: audio_b64 is not valid base64 ({exc})"
            )
    if len(pcm) > max_chunk_bytes:
        return _too_large(msg.type, len(pcm), max_chunk_bytes)
    return msg.model_copy(update={"pcm": pcm, "audio": None, "audio_b64": None})


def _too_large(kind: str, size: int, limit: int) -> ProtocolError:
    return ProtocolError(
        Code.CHUNK_TOO_LARGE,
        f"{kind}: {size} bytes of audio is over the limit of {limit} (STT_MAX_CHUNK_BYTES); "
        "send smaller chunks (100 ms is typical)",
    )


# --- outbound messages ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float


def transcript_message(
    *,
    session_id: str,
    transcript: str,
    sequence: int,
    is_final: bool,
    timestamp: float,
    speaker_id: str | None,
    has_voice_activity: bool,
    state: State,
    confidence: float | None = None,
    words: list[Word] | None = None,
    audio_start: float | None = None,
    audio_end: float | None = None,
    turn_index: int | None = None,
    event: str | None = None,
    language: str | None = None,
    end_of_turn_confidence: float | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "transcript",
        "session_id": session_id,
        "transcript": transcript,
        "sequence": sequence,
        "is_partial": not is_final,
        "is_final": is_final,
        "timestamp": timestamp,
        "has_voice_activity": has_voice_activity,
        "state": state,
    }
    if speaker_id is not None:
        msg["speaker_id"] = speaker_id
    optional: dict[str, Any] = {
        "confidence": confidence,
        "audio_start": audio_start,
        "audio_end": audio_end,
        "turn_index": turn_index,
        "event": event,
        "language": language,
        "end_of_turn_confidence": end_of_turn_confidence,
    }
    msg.update({k: v for k, v in optional.items() if v is not None})
    if words is not None:
        msg["words"] = [
            {"word": w.word, "start": w.start, "end": w.end, "confidence": w.confidence}
            for w in words
        ]
    return msg


def interrupt_message(
    *, session_id: str, timestamp: float, speaker_id: str | None, echo_cancelled: bool = False
) -> dict[str, Any]:
    """``echo_cancelled``: the agent's playback was audible when the speech began, and the
    interrupt was decided on the microphone with its echo cancelled (sent only then)."""
    message: dict[str, Any] = {
        "session_id": session_id,
        "type": "interrupt",
        "timestamp": timestamp,
        "speaker_id": speaker_id,
    }
    if echo_cancelled:
        message["echo_cancelled"] = True
    return message


def interrupt_cancelled_message(
    *, session_id: str, timestamp: float, speaker_id: str | None, reason: str
) -> dict[str, Any]:
    """A false interruption taken back: the speech held no words (``no_words``) or only a
    backchannel (``backchannel``); the session's state is ``responding`` again."""
    return {
        "session_id": session_id,
        "type": "interrupt_cancelled",
        "timestamp": timestamp,
        "speaker_id": speaker_id,
        "reason": reason,
    }


def error_message(*, session_id: str, code: str, message: str, timestamp: float) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "type": "error",
        "code": code,
        "message": message,
        "timestamp": timestamp,
    }


def encode(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def decode(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
