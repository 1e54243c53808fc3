"""Deepgram's streaming models (Flux ``v2/listen``, Nova ``v1/listen``) over any transport.

The model finds turns itself, so every frame of a session's audio is streamed, in 80 ms chunks.
A :class:`~.dialect.Dialect` says what to send and how to read the answers (:mod:`.flux`,
:mod:`.nova`); a :class:`~..transports.base.Connector` opens the stream (SageMaker HTTP/2,
Deepgram's WebSocket).
This module is the part they share, written once:

- **Faults.** A transport failure is retried with jittered exponential backoff when it is
  retryable (throttling, 5xx, an internal stream failure, a reset) and while the retry budget
  lasts; a terminal one (validation, authentication, an unknown endpoint, the model refusing)
  is reported at once. Either way the session hears it as an ``error`` naming the cause.
- **Replay.** Audio sent on a connection is kept until the model has finalised it. A new
  connection first resends only the unfinished turn's audio, then what queued meanwhile. Times
  stay session-relative and turn numbers keep increasing (:class:`~.dialect.Timeline`, the
  receiver's ``rebase``); the receiver never produces a final twice. Every buffer is bounded.
- **Stalls.** A stream that owes an answer to speech (or to a force or close) and sends nothing
  for the model's stall time is replaced as a dropped one is (:mod:`..watchdog`).
- **Keep-alive.** While the client pauses, the stream is fed silence (Flux has no keep-alive
  message, and silence lets the model end the turn); Nova switches to ``KeepAlive`` messages
  after a few seconds. Injected silence is not session audio: :class:`Timeline` maps it out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...audio import Int16Array, rms_dbfs
from ...config import DeepgramSettings
from ...protocol import Code
from ..base import RecognitionError, StreamEvent, StreamParams
from ..streaming import CLOSE_WAIT_S, StreamingBackend, reconnecting, sagemaker_connector
from ..transports.base import Connector, Duplex, TransportError
from ..watchdog import StallWatch
from .dialect import Dialect, Timeline

log = logging.getLogger(__name__)

RATE = 16000
CHUNK_SAMPLES = 1280  # 80 ms
CHUNK_BYTES = 2 * CHUNK_SAMPLES
SILENCE = bytes(CHUNK_BYTES)
MAX_QUEUED_CHUNKS = 750  # 60 s of audio waiting for a slow or lost connection
PAUSE_S = 0.5  # no client audio for this long (wall clock): the client has paused
KEEPALIVE_EVERY_S = 4.0  # Deepgram closes a stream after about 10 s without audio or KeepAlive
SILENCE_BEFORE_KEEPALIVE_S = 3.0  # silence lets the model end the turn; then KeepAlive suffices
IDLE_KEEP_S = 3.0  # outside any turn, sent audio older than this need not be resent
SPEECH_DB = -45.0  # a chunk this loud is speech the model owes an answer to (the watchdog)


@dataclass(slots=True)
class _Audio:
    pos: int  # session sample index of the first sample
    data: bytes


@dataclass(slots=True)
class _Control:
    kind: Literal["force", "configure", "close"]
    text: str


_Item = _Audio | _Control


class DeepgramBackend(StreamingBackend):
    """A :class:`~.base.Recognizer` for one Deepgram API over one transport."""

    endpointing: Literal["service", "backend"] = "backend"

    def __init__(
        self,
        settings: DeepgramSettings,
        dialect: Dialect,
        name: str = "",
    ) -> None:
        super().__init__(settings)
        self.deepgram = settings
        self.dialect = dialect
        self.name = name or dialect.name.lower()

    async def make_connector(self) -> Connector:
        """SageMaker when ``DEEPGRAM_TRANSPORT`` says so (or an endpoint is named), else the
        hosted WebSocket API with ``DEEPGRAM_API_KEY``."""
        settings = self.deepgram
        if settings.resolved_deepgram_transport() == "websocket":
            from ..transports.websocket import WebSocketConnector

            key = settings.deepgram_api_key.get_secret_value() if settings.deepgram_api_key else ""
            return WebSocketConnector(key, base_url=settings.deepgram_url)
        return await sagemaker_connector(settings)

    def describe(self) -> str:
        return f"Deepgram {self.dialect.describe()} on {self.where()}"

    def open_stream(self, params: StreamParams) -> DeepgramStream:
        return DeepgramStream(self, params)


class DeepgramStream:
    """One session's stream: audio and control messages out, model events in, across
    reconnects. The session-facing calls never block; one task does all the I/O."""

    def __init__(self, backend: DeepgramBackend, params: StreamParams) -> None:
        self._backend = backend
        self._dialect = backend.dialect
        self._policy = backend.policy
        self._session = params.session_id
        self._options = self._dialect.options(params)
        self._rx = self._dialect.receiver()
        self._events: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
        self._outbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._queued_audio = 0
        self._pending = bytearray()
        self._pending_pos = 0
        self._replay: deque[_Audio] = deque()
        self._replay_bytes = 0
        self._replay_truncated = False
        self._force_at: int | None = None  # session sample where an unanswered force was sent
        self._close_requested = False
        self._closed_at: float | None = None
        self._sent_until = 0  # session sample after the last audio sent to the model
        self._overflowed = False
        self._closing = False
        self._connecting = False  # set once the first connection is being opened
        self.connections = 0  # streams opened so far (for tests and logs)
        self._stall_s = backend.stall_s(self._dialect.stall_s)
        self._task = asyncio.create_task(self._run(), name=f"deepgram-{params.session_id}")

    # --- RecognizerStream -----------------------------------------------------------------------
    def send_audio(self, samples: Int16Array, offset: int, utterance: int) -> None:
        if not self._pending:
            self._pending_pos = offset
        self._pending += samples.astype("<i2", copy=False).tobytes()
        while len(self._pending) >= CHUNK_BYTES:
            self._queue(_Audio(self._pending_pos, bytes(self._pending[:CHUNK_BYTES])))
            del self._pending[:CHUNK_BYTES]
            self._pending_pos += CHUNK_SAMPLES

    def flush(self, utterance: int, until: int | None = None) -> None:
        self._flush_pending()
        self._queue(_Control("force", self._dialect.force_end))

    def speculate(self, utterance: int) -> None:
        """The model finds turns itself (service endpointing is off): nothing to do."""

    def backlog(self) -> int:
        return self._queued_audio * CHUNK_SAMPLES + len(self._pending) // 2

    def configure(self, params: StreamParams) -> None:
        options = self._dialect.options(params)
        if options == self._options:
            return
        self._options = options  # a reconnect's query string carries them in any case
        if not self._connecting:
            return  # the first connection's query string will
        message = self._dialect.configure_message(options)
        if message is None:
            self._events.put_nowait(
                RecognitionError(
                    Code.CONFIGURE_FAILED,
                    f"{self._dialect.name} cannot change its options mid-stream; "
                    "they apply from the next connection",
                )
            )
            return
        self._queue(_Control("configure", message))

    async def aclose(self) -> None:
        if not self._closing:
            self._flush_pending()
            self._queue(_Control("close", self._dialect.close_stream))
            self._closing = True
            self._closed_at = time.monotonic()
        await self._task

    async def events(self) -> AsyncIterator[StreamEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    # --- session side ---------------------------------------------------------------------------
    def _flush_pending(self) -> None:
        if self._pending:
            self._queue(_Audio(self._pending_pos, bytes(self._pending)))
            self._pending_pos += len(self._pending) // 2
            self._pending.clear()

    def _queue(self, item: _Item) -> None:
        if self._closing:
            return
        if isinstance(item, _Audio):
            if self._queued_audio >= MAX_QUEUED_CHUNKS:
                if not self._overflowed:
                    self._overflowed = True
                    self._error(
                        Code.BACKEND_ERROR,
                        f"{self._dialect.name} is not keeping up: over "
                        f"{MAX_QUEUED_CHUNKS * CHUNK_SAMPLES // RATE} s of audio is waiting to be "
                        "sent; newer audio is dropped until it catches up",
                    )
                return
            if self._queued_audio < MAX_QUEUED_CHUNKS // 2:
                self._overflowed = False  # caught up: a new overflow is worth a new error
            self._queued_audio += 1
        self._outbox.put_nowait(item)

    def _error(self, code: str, message: str) -> None:
        log.error("session %s: %s", self._session, message)
        self._events.put_nowait(RecognitionError(code, message))

    # --- the I/O task ---------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._serve()
        except Exception:  # a bug, not a transport failure: still end the session's events
            log.exception("session %s: the %s stream failed", self._session, self._dialect.name)
            self._error(Code.INTERNAL_ERROR, f"the {self._dialect.name} stream failed")
        finally:
            for event in self._rx.finish():
                self._events.put_nowait(event)
            self._events.put_nowait(None)

    async def _serve(self) -> None:
        self._connecting = True  # from now on, option changes go in Configure messages

        async def go_on() -> bool:  # closing with nothing unfinished: no need to (re)connect
            return not (self._closing and not self._replay and self._queued_audio == 0)

        async def run(duplex: Duplex) -> TransportError | None:
            self.connections += 1
            return await self._connection(duplex)

        done = await reconnecting(
            name=self._dialect.name,
            session=self._session,
            connector=self._backend.connector,
            policy=self._policy,
            target=lambda: (self._dialect.path, self._options.query_string(RATE)),
            go_on=go_on,
            run=run,
            closed_at=lambda: self._closed_at,
            report=self._error,
        )
        if not done:
            await self._discard_outbox()

    async def _connection(self, duplex: Duplex) -> TransportError | None:
        """Run one connection until it ends: None when done, else the failure."""
        start = self._replay[0].pos if self._replay else self._sent_until
        timeline = Timeline(start)
        self._rx.rebase(timeline.to_session)
        watch = StallWatch(
            self._stall_s,
            name=self._dialect.name,
            session=self._session,
            count=self._backend.stall_count,
        )
        sender = asyncio.create_task(self._send(duplex, timeline, watch))
        reader = asyncio.create_task(self._read(duplex, watch))
        try:
            done, _ = await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
            if sender in done and sender.exception() is None:
                # all sent, CloseStream included: wait (bounded) for the last final
                try:
                    await asyncio.wait_for(asyncio.shield(reader), CLOSE_WAIT_S)
                except TimeoutError:
                    log.warning(
                        "session %s: no end of stream within %g s of CloseStream",
                        self._session,
                        CLOSE_WAIT_S,
                    )
                    return None
                except TransportError as failure:
                    return failure
                return None
            for task in done:
                problem = task.exception()
                if problem is not None:
                    if isinstance(problem, TransportError):
                        return problem
                    raise problem
            # the model ended the stream while the session still runs
            return TransportError(
                "the stream ended unexpectedly", retryable=True, cause="stream ended"
            )
        finally:
            log.debug("session %s: stream done (%s, %s)", self._session, sender, reader)
            for task in (sender, reader):
                task.cancel()
            # a send stuck on a dropped connection may not end at once: do not wait for it
            await asyncio.wait({sender, reader}, timeout=0.25)
            for task in (sender, reader):
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: any failure was handled above
            await duplex.aclose()

    async def _send(self, duplex: Duplex, timeline: Timeline, watch: StallWatch) -> None:
        # first what the last connection left unfinished
        if self._replay and self._replay_truncated:
            self._error(
                Code.BACKEND_ERROR,
                f"the connection was lost during a turn longer than the replay buffer "
                f"(DEEPGRAM_REPLAY_BUFFER_BYTES={self._policy.replay_buffer_bytes}); only "
                "its last part was resent",
            )
            self._replay_truncated = False
        force_at = self._force_at
        played = time.monotonic()  # when the replayed audio would have played in real time
        for chunk in list(self._replay):
            if force_at is not None and chunk.pos >= force_at:
                await duplex.send_text(self._dialect.force_end)  # where it was sent before
                force_at = None
            timeline.audio(chunk.pos, len(chunk.data) // 2)
            await duplex.send_binary(chunk.data)
            played += len(chunk.data) / 2 / RATE
            _owe_if_speech(watch, chunk.data, played)
        if force_at is not None:
            await duplex.send_text(self._dialect.force_end)
            self._owe_final(watch, played)
        if self._close_requested:
            await duplex.send_text(self._dialect.close_stream)
            watch.owe(at=played)
            await duplex.close_input()
            return
        # the audio clock: when the audio sent so far has been played out in real time. The
        # client has paused only when nothing came for PAUSE_S past that (big chunks, a client
        # ahead of real time and network jitter are not pauses)
        due = time.monotonic()
        paused_since: float | None = None
        last_keepalive = 0.0
        while True:
            now = time.monotonic()
            if paused_since is None:
                timeout = max(0.01, due + PAUSE_S - now)
            else:
                timeout = max(0.01, due - now)
            try:
                item = await asyncio.wait_for(self._outbox.get(), timeout)
            except TimeoutError:
                self._flush_pending()
                now = time.monotonic()
                if not self._outbox.empty() or now < due + (0 if paused_since else PAUSE_S):
                    continue
                if paused_since is None:
                    paused_since = now
                keep_alive = self._dialect.keep_alive
                if keep_alive is None or now - paused_since < SILENCE_BEFORE_KEEPALIVE_S:
                    timeline.silence(CHUNK_SAMPLES)
                    due = max(due, now) + CHUNK_SAMPLES / RATE
                    await duplex.send_binary(SILENCE)
                    self._forget_finalized()
                else:
                    due = now + CHUNK_SAMPLES / RATE
                    if now - last_keepalive >= KEEPALIVE_EVERY_S:
                        last_keepalive = now
                        await duplex.send_text(keep_alive)
                continue
            paused_since = None
            if isinstance(item, _Audio):
                self._queued_audio -= 1
                self._remember(item)
                n = len(item.data) // 2
                timeline.audio(item.pos, n)
                self._sent_until = item.pos + n
                due = max(due, time.monotonic()) + n / RATE
                await duplex.send_binary(item.data)
                _owe_if_speech(watch, item.data, due)
                continue
            if item.kind == "force":
                self._force_at = self._sent_until
            elif item.kind == "close":
                self._close_requested = True
            await duplex.send_text(item.text)
            if item.kind == "force":
                self._owe_final(watch, due)
            elif item.kind == "close":
                watch.owe(at=due)  # the last final, or the stream's end
                await duplex.close_input()
                return

    def _owe_final(self, watch: StallWatch, played: float) -> None:
        """A turn forced to its end owes its final once the audio before it has played (a force
        outside a turn may go unanswered)."""
        if self._rx.turn_open:
            watch.owe(at=played)

    def _remember(self, chunk: _Audio) -> None:
        """Keep sent audio until the model has finalised it; bounded."""
        self._replay.append(chunk)
        self._replay_bytes += len(chunk.data)
        while self._replay_bytes > self._policy.replay_buffer_bytes and self._replay:
            dropped = self._replay.popleft()
            self._replay_bytes -= len(dropped.data)
            self._replay_truncated = True

    def _forget_finalized(self) -> None:
        until = round(self._rx.finalized_until * RATE)
        if self._force_at is not None and until >= self._force_at - CHUNK_SAMPLES:
            self._force_at = None  # answered
        if not self._rx.turn_open:
            # no turn under way: audio well before the latest sent cannot start one any more
            until = max(until, self._sent_until - round(IDLE_KEEP_S * RATE))
        while self._replay and self._replay[0].pos + len(self._replay[0].data) // 2 <= until:
            dropped = self._replay.popleft()
            self._replay_bytes -= len(dropped.data)
        if not self._replay:
            self._replay_truncated = False

    async def _read(self, duplex: Duplex, watch: StallWatch) -> None:
        while (message := await watch.receive(duplex)) is not None:
            for event in self._rx.feed(message):
                if getattr(event, "is_final", False):
                    self._force_at = None
                self._events.put_nowait(event)
            self._forget_finalized()

    async def _discard_outbox(self) -> None:
        """After giving up: take what the session still sends until it closes, and drop it."""
        self._replay.clear()
        self._replay_bytes = 0
        if self._close_requested:
            return
        while True:
            item = await self._outbox.get()
            if isinstance(item, _Audio):
                self._queued_audio -= 1
            elif item.kind == "close":
                return


def _owe_if_speech(watch: StallWatch, pcm: bytes, played: float) -> None:
    """Speech sent: the model owes an answer from when it would have played out (``played``,
    monotonic), since a model may pace itself on the audio; silence may go unanswered."""
    if watch.stall_s is not None and rms_dbfs(np.frombuffer(pcm, "<i2")) > SPEECH_DB:
        watch.owe(at=played)
