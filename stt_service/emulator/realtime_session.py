"""One realtime emulator connection (:mod:`.realtime`), sans-I/O: vLLM Realtime's or OpenAI
Realtime's (transcription mode) client events in, their server events out, and the faults a test
can ask of it. The decoding of its generations is :mod:`.realtime_decode`'s.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import soxr

from .realtime_decode import Generation, GenerationDecoding
from .transcriber import RATE, Transcriber, shared_transcriber

log = logging.getLogger(__name__)

OPENAI_MODELS = frozenset(
    {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-realtime-whisper"}
)

Emit = Callable[[str | None], None]  # a message to send; None: cut the connection


@dataclass
class RealtimeFaults:
    """Knobs for fault tests, consumed by the first connections (each a list, one per connection,
    in order; None in a list: that connection is served normally).

    ``drop_after_bytes``: cut the connection (no close frame) once it has received that much
    audio. ``error_after_bytes``: ``(bytes, code, message)``: an error event in the middle of the
    generation, which then ends without ``done`` (vLLM's ``processing_error``).
    ``stall_after_bytes``: the server hangs once it has received that much audio: the connection
    stays open and is read, and nothing more is answered."""

    drop_after_bytes: list[int | None] = field(default_factory=list)
    error_after_bytes: list[tuple[int, str, str] | None] = field(default_factory=list)
    stall_after_bytes: list[int | None] = field(default_factory=list)


class RealtimeEmulator(GenerationDecoding):
    """One connection. ``connected()`` gives the greeting; ``on_text`` / ``on_audio`` the replies
    to each client message; later replies (transcripts) go through the ``emit`` given to
    :meth:`bind` (the server calls it before ``connected``)."""

    def __init__(
        self,
        query: str = "",
        script: Sequence[str] = (),
        *,
        dialect: str | None = None,
        served_model: str | None = None,
        transcriber: Transcriber | None = None,
        max_audio_s: float | None = None,
        partials: bool = True,
        drop_after_bytes: int | None = None,
        error_after: tuple[int, str, str] | None = None,
        stall_after_bytes: int | None = None,
    ) -> None:
        q = parse_qs(query)
        self.dialect = dialect or (
            "openai" if q.get("intent", [""])[0] == "transcription" else "vllm"
        )
        self.served_model = served_model
        self._transcriber = transcriber
        self.max_audio_s = max_audio_s
        self.partials = partials
        self.drop_after_bytes = drop_after_bytes
        self.error_after = error_after
        self.stall_after_bytes = stall_after_bytes
        self.stalled = False
        self.closed = False
        self.received_bytes = 0  # audio bytes (decoded from base64)
        self.discarded_bytes = 0  # vLLM: appended after the final commit, before done
        self.dropped_commits = 0  # vLLM: commits while a generation ran
        self.generations = 0
        self.transcripts: list[str] = []
        self.prompts: list[str] = []
        self.session_updates = 0
        self._emit: Emit = lambda text: None
        self._validated = False
        self._model = ""
        self._language: str | None = None
        self._prompt = ""
        self._gen: Generation | None = None
        self._pending = bytearray()  # vLLM: audio appended with no generation open
        self._stale_final = False
        self._items: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._event = 0

    @property
    def transcriber(self) -> Transcriber:
        if self._transcriber is None:
            self._transcriber = shared_transcriber()
        return self._transcriber

    def bind(self, emit: Emit) -> None:
        self._emit = emit

    # --- server side ----------------------------------------------------------------------------
    def connected(self) -> list[str]:
        if self.dialect == "vllm":
            created = {
                "type": "session.created",
                "id": f"sess-{uuid.uuid4().hex}",
                "created": int(time.time()),
            }
        else:
            created = {
                "type": "session.created",
                "event_id": self._event_id(),
                "session": self._session_json(),
            }
        return [json.dumps(created)]

    def on_audio(self, data: bytes) -> list[str]:
        """A binary frame: newer vLLM answers ``invalid_frame``; OpenAI takes only JSON."""
        return [self._error("invalid_frame", "binary frames are not accepted: send JSON text")]

    def on_text(self, text: str) -> list[str]:
        if self.stalled:
            return []  # hung: read on, answer nothing
        try:
            msg = json.loads(text)
        except ValueError:
            return [self._error("invalid_json", "Invalid JSON")]
        if not isinstance(msg, dict):
            return [self._error("invalid_json", "Invalid JSON")]
        kind = msg.get("type")
        if kind == "session.update":
            return self._session_update(msg)
        if kind == "input_audio_buffer.append":
            return self._append(msg)
        if kind == "input_audio_buffer.commit":
            if self.dialect == "vllm":
                return self._vllm_commit(bool(msg.get("final", False)))
            return self._openai_commit()
        if kind == "input_audio_buffer.clear" and self.dialect == "openai":
            self._pending.clear()
            cleared = {"type": "input_audio_buffer.cleared", "event_id": self._event_id()}
            return [json.dumps(cleared)]
        return [self._error("unknown_event", f"Unknown event type: {kind}")]

    # --- messages -------------------------------------------------------------------------------
    def _session_update(self, msg: dict[str, Any]) -> list[str]:
        self.session_updates += 1
        if self.dialect == "vllm":
            model = msg.get("model")
            if model is None:
                return [self._error("invalid_event", "Missing required field: model")]
            if self.served_model is not None and model != self.served_model:
                return [self._error("model_not_found", f"The model `{model}` does not exist.")]
            self._validated, self._model = True, str(model)
            self._language = msg.get("language")
            return []
        session = msg.get("session")
        if not isinstance(session, dict) or session.get("type") != "transcription":
            return [self._error("invalid_value", "session.type must be 'transcription'")]
        audio_in = (session.get("audio") or {}).get("input") or {}
        fmt = audio_in.get("format") or {}
        if fmt and (fmt.get("type") != "audio/pcm" or fmt.get("rate") != 24000):
            return [self._error("invalid_value", "only audio/pcm at 24000 Hz is emulated")]
        transcription = audio_in.get("transcription") or {}
        model = transcription.get("model")
        known = {self.served_model} if self.served_model else OPENAI_MODELS
        if model is not None and model not in known:
            return [self._error("invalid_model", f"Model '{model}' is not supported.")]
        if model is not None:
            self._validated, self._model = True, str(model)
        self._language = transcription.get("language")
        self._prompt = str(transcription.get("prompt") or "")
        self.prompts.append(self._prompt)
        return [
            json.dumps(
                {
                    "type": "session.updated",
                    "event_id": self._event_id(),
                    "session": self._session_json(),
                }
            )
        ]

    def _append(self, msg: dict[str, Any]) -> list[str]:
        try:
            raw = base64.b64decode(str(msg["audio"]), validate=True)
        except (KeyError, binascii.Error, ValueError):
            return [self._error("invalid_audio", "Invalid audio data")]
        if not raw or len(raw) % 2:
            return [self._error("invalid_audio", "Invalid audio data")]
        if self.dialect == "openai":
            raw = _to_16k(raw)
        self.received_bytes += len(raw)
        if self.stall_after_bytes is not None and self.received_bytes >= self.stall_after_bytes:
            self.stalled = True
            return []
        if self.drop_after_bytes is not None and self.received_bytes >= self.drop_after_bytes:
            self.drop_after_bytes = None
            self._cut()
            return []
        gen = self._gen
        if self.dialect == "vllm" and gen is not None and gen.ended:
            self.discarded_bytes += len(raw)  # behind the end sentinel: cleared after done
            return []
        if gen is None:
            self._pending += raw
            return []
        gen.audio += raw
        replies: list[str] = []
        if self.error_after is not None and self.received_bytes >= self.error_after[0]:
            _, code, message = self.error_after
            self.error_after = None
            self._gen = None  # the generation failed: no done
            replies.append(self._error(code, message))
            return replies
        if self.max_audio_s is not None and len(gen.audio) > self.max_audio_s * RATE * 2:
            log.warning("realtime emulator: generation past max-model-len: the engine dies")
            self._cut()
            return []
        self._maybe_partial(gen)
        return replies

    def _vllm_commit(self, final: bool) -> list[str]:
        if not self._validated:
            return [
                self._error(
                    "model_not_validated",
                    "Model not validated. Make sure to validate the model by sending a "
                    "session.update event.",
                )
            ]
        if final:
            if self._gen is None or self._gen.ended:
                self._stale_final = True  # ends the next generation at once
                return []
            self._gen.ended = True
            self._spawn(self._finish(self._gen))
            return []
        if self._gen is not None:
            self.dropped_commits += 1
            log.warning("realtime emulator: Generation already in progress, ignoring commit")
            return []
        gen = Generation(audio=bytearray(self._pending))
        self._pending.clear()
        self._gen = gen
        self.generations += 1
        if self._stale_final:
            self._stale_final = False
            gen.ended = True
            self._spawn(self._finish(gen))
        return []

    def _openai_commit(self) -> list[str]:
        audio = bytes(self._pending)
        self._pending.clear()
        if len(audio) < RATE // 10 * 2:
            ms = len(audio) / 2 / RATE * 1000
            return [
                self._error(
                    "input_audio_buffer_commit_empty",
                    "Error committing input audio buffer: buffer too small. Expected at least "
                    f"100ms of audio, but buffer only has {ms:.2f}ms of audio.",
                )
            ]
        item = f"item_{uuid.uuid4().hex[:20]}"
        previous = self._items[-1] if self._items else None
        self._items.append(item)
        self.generations += 1
        gen = Generation(audio=bytearray(audio), ended=True)
        self._spawn(self._finish(gen, item))
        committed = {
            "type": "input_audio_buffer.committed",
            "event_id": self._event_id(),
            "previous_item_id": previous,
            "item_id": item,
        }
        return [json.dumps(committed)]

    # --- helpers --------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _send(self, msg: dict[str, Any]) -> None:
        if not self.closed and not self.stalled:
            self._emit(json.dumps(msg))

    def _cut(self) -> None:
        self.closed = True
        self._emit(None)

    def close(self) -> None:
        """The connection ended: stop work for it."""
        self.closed = True
        for task in list(self._tasks):
            task.cancel()

    def _error(self, code: str, message: str) -> str:
        if self.dialect == "vllm":
            return json.dumps({"type": "error", "error": message, "code": code})
        kind = (
            "server_error"
            if code in ("server_error", "processing_error")
            else ("invalid_request_error")
        )
        return json.dumps(
            {
                "type": "error",
                "event_id": self._event_id(),
                "error": {
                    "type": kind,
                    "code": code,
                    "message": message,
                    "param": None,
                    "event_id": None,
                },
            }
        )

    def _event_id(self) -> str:
        self._event += 1
        return f"event_{self._event:06d}{uuid.uuid4().hex[:8]}"

    def _session_json(self) -> dict[str, Any]:
        transcription = (
            {"model": self._model, "language": self._language, "prompt": self._prompt}
            if self._model
            else None
        )
        return {
            "type": "transcription",
            "id": "sess_emulated",
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": transcription,
                    "turn_detection": None,
                    "noise_reduction": None,
                }
            },
            "include": None,
        }


def _to_16k(pcm24k: bytes) -> bytes:
    x = np.frombuffer(pcm24k, "<i2")
    return np.asarray(soxr.resample(x, 24000, RATE), "<i2").tobytes()
