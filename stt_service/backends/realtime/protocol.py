"""The realtime ASR servers' JSON protocols, sans-I/O: vLLM Realtime and OpenAI Realtime.

Both stream PCM16 audio as base64 in ``input_audio_buffer.append`` text messages and stream the
transcript back while the speaker talks; the service decides where an utterance ends
(:mod:`.realtime` drives them). A :class:`Dialect` makes the messages to send and reads the
server's into :class:`ServerEvent` values; it knows nothing of sockets or time.

**vLLM** (``vllm/entrypoints/.../realtime/protocol.py`` and ``connection.py``): the server sends
``session.created`` on connect; the client sends ``session.update`` with a flat ``model``. An
utterance is opened by ``input_audio_buffer.commit`` (``final: false``), fed with appends (16 kHz)
and closed by a commit with ``final: true``; the server answers ``transcription.delta`` (``delta``,
often empty) and one ``transcription.done`` (``text``, ``usage``). Errors are
``{"type": "error", "error": "<string>", "code": ...}``; an error during a generation comes
instead of its ``done``. A commit sent while a generation runs is dropped silently, and audio
appended between the final commit and ``done`` is discarded: the next utterance opens only after
``done``.

**OpenAI** (``wss://api.openai.com/v1/realtime?intent=transcription``): ``session.update`` with
``session.type: "transcription"``, ``audio/pcm`` at 24 kHz, the transcription model, language
and prompt, ``turn_detection: null`` (the client commits). A commit makes an item:
``input_audio_buffer.committed`` (``item_id``), then
``conversation.item.input_audio_transcription.delta`` / ``.completed`` (``transcript``) /
``.failed`` for it. Errors are objects (``type``, ``code``, ``message``); a commit of less than
100 ms of audio is refused with ``input_audio_buffer_commit_empty`` (an empty utterance here).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Literal, Protocol

DialectName = Literal["vllm", "openai"]


@dataclass(frozen=True, slots=True)
class Ready:
    """The server's ``session.created``: the connection may be used."""


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class Done:
    """The open utterance's transcript (``transcription.done`` / ``.completed``)."""

    text: str


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` (or ``.failed``) message.

    ``scope``: ``utterance`` (the open utterance failed and will get no ``done``: it is resent on a
    fresh connection when ``retryable``, else reported and dropped), ``empty`` (the utterance held
    too little audio: an empty final), ``session`` (the connection is unusable: retry when
    ``retryable``, else the session is told) or ``notice`` (reported, nothing else changes).
    """

    code: str
    message: str
    retryable: bool
    scope: Literal["utterance", "empty", "session", "notice"]


ServerEvent = Ready | Delta | Done | ServerError

# vLLM's error codes (connection.py). A generation's failure is ``processing_error``; the
# session-level ones mean the request itself is wrong and resending it cannot help.
_VLLM_TERMINAL = frozenset(
    {"model_not_found", "model_not_validated", "invalid_event", "invalid_json", "unknown_event"}
)
_VLLM_RETRY = frozenset({"buffer_full", "idle_timeout", "timeout"})


class Dialect(Protocol):
    name: str  # "vLLM Realtime", "OpenAI Realtime"
    rate: int  # the sample rate the server takes
    query: str  # added to the URL (WebSocket) or the model query string (SageMaker)

    def session_update(self, language: str | None, prompt: str) -> list[str]:
        """What configures the session (sent after ``session.created``, and again on configure)."""
        ...

    def can_prompt(self) -> bool:
        """Whether keyterms can reach the model (as a prompt)."""
        ...

    def open_utterance(self) -> list[str]: ...

    def append(self, pcm: bytes) -> str: ...

    def close_utterance(self) -> list[str]: ...

    def read(self, text: str) -> list[ServerEvent]: ...


def _append(pcm: bytes) -> str:
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")}
    )


def _unreadable(text: str) -> ServerError:
    return ServerError("invalid_json", f"unreadable message {text[:80]!r}", False, "notice")


def _load(text: str) -> dict[str, object] | None:
    try:
        msg = json.loads(text)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


class VLLMDialect:
    name = "vLLM Realtime"
    rate = 16000
    query = ""

    def __init__(self, model: str) -> None:
        self.model = model

    def session_update(self, language: str | None, prompt: str) -> list[str]:
        # vLLM reads only ``model`` (later versions also ``language``; extra fields are allowed)
        msg: dict[str, object] = {"type": "session.update", "model": self.model}
        if language:
            msg["language"] = language
        return [json.dumps(msg)]

    def can_prompt(self) -> bool:
        return False

    def open_utterance(self) -> list[str]:
        return [json.dumps({"type": "input_audio_buffer.commit", "final": False})]

    def append(self, pcm: bytes) -> str:
        return _append(pcm)

    def close_utterance(self) -> list[str]:
        return [json.dumps({"type": "input_audio_buffer.commit", "final": True})]

    def read(self, text: str) -> list[ServerEvent]:
        msg = _load(text)
        if msg is None:
            return [_unreadable(text)]
        kind = msg.get("type")
        if kind == "session.created":
            return [Ready()]
        if kind == "transcription.delta":
            return [Delta(str(msg.get("delta") or ""))]
        if kind == "transcription.done":
            return [Done(str(msg.get("text") or ""))]
        if kind == "error":
            code = str(msg.get("code") or "error")
            message = str(msg.get("error") or "")
            if code in _VLLM_TERMINAL:
                return [ServerError(code, message, False, "session")]
            if code in _VLLM_RETRY:
                return [ServerError(code, message, True, "session")]
            if code == "invalid_audio":
                return [ServerError(code, message, False, "notice")]
            # processing_error and anything new: the generation failed; a fresh one may not
            return [ServerError(code, message, True, "utterance")]
        return []  # session.updated and anything newer


class OpenAIDialect:
    name = "OpenAI Realtime"
    rate = 24000
    query = "intent=transcription"

    def __init__(self, model: str) -> None:
        self.model = model
        self._item: str | None = None  # the item of the open utterance, once committed

    def session_update(self, language: str | None, prompt: str) -> list[str]:
        transcription: dict[str, str] = {"model": self.model}
        if language:
            transcription["language"] = language
        if prompt:
            transcription["prompt"] = prompt
        session = {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": self.rate},
                    "transcription": transcription,
                    "turn_detection": None,
                }
            },
        }
        return [json.dumps({"type": "session.update", "session": session})]

    def can_prompt(self) -> bool:
        return True

    def open_utterance(self) -> list[str]:
        self._item = None
        return []

    def append(self, pcm: bytes) -> str:
        return _append(pcm)

    def close_utterance(self) -> list[str]:
        return [json.dumps({"type": "input_audio_buffer.commit"})]

    def read(self, text: str) -> list[ServerEvent]:
        msg = _load(text)
        if msg is None:
            return [_unreadable(text)]
        kind = msg.get("type")
        if kind == "session.created":
            return [Ready()]
        if kind == "input_audio_buffer.committed":
            self._item = str(msg.get("item_id") or "")
            return []
        item = msg.get("item_id")
        if self._item is not None and item is not None and item != self._item:
            return []  # another item's (not one this client committed)
        if kind == "conversation.item.input_audio_transcription.delta":
            return [Delta(str(msg.get("delta") or ""))]
        if kind == "conversation.item.input_audio_transcription.completed":
            return [Done(str(msg.get("transcript") or ""))]
        if kind == "conversation.item.input_audio_transcription.failed":
            err = msg.get("error")
            detail = err if isinstance(err, dict) else {}
            code = str(detail.get("code") or "transcription_failed")
            return [ServerError(code, str(detail.get("message") or ""), False, "utterance")]
        if kind == "error":
            err = msg.get("error")
            detail = err if isinstance(err, dict) else {"message": str(err)}
            code = str(detail.get("code") or detail.get("type") or "error")
            message = str(detail.get("message") or "")
            if code == "input_audio_buffer_commit_empty":
                return [ServerError(code, message, False, "empty")]
            retryable = detail.get("type") == "server_error" or code in (
                "rate_limit_exceeded",
                "server_error",
            )
            return [ServerError(code, message, retryable, "session")]
        return []  # session.updated, conversation.item.*, ...


def make_dialect(name: DialectName, model: str) -> Dialect:
    return VLLMDialect(model) if name == "vllm" else OpenAIDialect(model)
