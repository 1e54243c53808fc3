"""One session's stream to a realtime ASR server (vLLM Realtime, OpenAI Realtime).

The service's own voice detector finds the utterances; each is streamed to the server while the
speaker talks (appends of 100 ms), closed when the session ends it, and its transcript comes back
as deltas (partials) and one done (the final). The protocols live in :mod:`.protocol`,
the backend that opens these streams in :mod:`.backend`;
the transports are the Deepgram backends' (SageMaker's HTTP/2 bidirectional stream with each JSON
event in one ``UTF8`` payload part and no model invocation path, as the AWS sample bridge to vLLM
expects; or a WebSocket to ``REALTIME_URL``). Faults are handled as the Deepgram stream does, with
the same :mod:`stt_service.backends.retry` policy:

- one connection per session; one utterance open on it at a time (vLLM drops a commit sent while
  a generation runs, and audio sent between the final commit and ``done``): audio of the next
  utterance waits, in order, for the last one's transcript;
- a dropped connection, throttling, 5xx, ``InternalStreamFailure`` or a failed generation: a new
  connection after a jittered backoff, and only the unfinished utterance is sent again (from the
  start of its current segment); a final is never published twice;
- validation, authentication, an unknown model or endpoint, ``ModelStreamError``: the session is
  told at once;
- a server silent for :data:`STALL_S` while it owes a transcript: replaced (:mod:`..watchdog`);
- an utterance longer than ``REALTIME_MAX_UTTERANCE_S`` is sent as several segments (vLLM's engine
  dies when one generation passes ``--max-model-len``) whose transcripts make one final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import soxr

from ...audio import Int16Array
from ...protocol import Code
from ..base import EndpointHint, RecognitionError, RecognitionEvent, StreamEvent, StreamParams
from ..retry import RetryPolicy
from ..streaming import CONNECT_WAIT_S, reconnecting
from ..transports.base import Connector, Duplex, TransportError
from ..watchdog import StallCount, StallWatch
from .protocol import Delta, Dialect, Done, Ready, ServerError

log = logging.getLogger(__name__)

RATE = 16000
APPEND_BYTES = 3200  # 100 ms of 16 kHz PCM16 per append (vLLM's sample sends 4 KB)
DONE_WAIT_S = 30.0  # from the closing commit to the transcript
MAX_PENDING_S = 60.0  # audio waiting for a slow or lost server, per session
STALL_S = 4.0  # the watchdog's default: the longest silence between a closing commit and done


@dataclass(slots=True)
class _Utterance:
    index: int
    start: int  # session sample of the first byte of ``data``
    data: bytearray = field(default_factory=bytearray)  # 16 kHz PCM16
    closed: bool = False
    seg_start: int = 0  # byte offset in ``data`` where the segment being sent began
    sent: int = 0  # bytes of ``data`` sent in the open segment
    texts: list[str] = field(default_factory=list)  # transcripts of finished segments
    delta: str = ""  # what the open segment's deltas say so far

    def text(self) -> str:
        return " ".join(t.strip() for t in [*self.texts, self.delta] if t.strip())


class StreamSource(Protocol):
    """What a stream uses of its backend (:class:`~.backend.RealtimeBackend`)."""

    policy: RetryPolicy
    max_segment_bytes: int  # bytes of 16 kHz PCM16 sent as one generation at most
    stall_count: StallCount

    @property
    def connector(self) -> Connector: ...

    def stall_s(self, model_default: float) -> float | None: ...

    def dialect(self) -> Dialect: ...


class RealtimeStream:
    """One session's utterances, streamed one at a time over one connection (renewed after a
    fault). The session-facing calls never block; one task does all the I/O."""

    def __init__(self, backend: StreamSource, params: StreamParams) -> None:
        self._backend = backend
        self._dialect = backend.dialect()
        self._policy = backend.policy
        self._session = params.session_id
        self._params = params
        self._events: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
        self._utts: deque[_Utterance] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._closed_at: float | None = None
        self._dead = False  # gave up: audio is dropped until the session closes
        self._overflowed = False
        self._reconfigure = False
        self._last_final = -1  # the highest utterance a final was published for
        self._current: _Utterance | None = None  # the utterance open on the server
        self._result: asyncio.Future[str] | None = None  # the open segment's transcript
        self._watch = StallWatch(None, name=self._dialect.name, session=self._session)
        self._task = asyncio.create_task(self._run(), name=f"realtime-{params.session_id}")

    # --- RecognizerStream -----------------------------------------------------------------------
    def send_audio(self, samples: Int16Array, offset: int, utterance: int) -> None:
        if self._dead or self._closing or utterance <= self._last_final:
            return
        utt = self._utts[-1] if self._utts else None
        if utt is None or utt.index != utterance:
            if utt is not None and utt.index > utterance:
                return  # audio for an utterance already superseded
            utt = _Utterance(utterance, offset)
            self._utts.append(utt)
        if self.backlog() >= MAX_PENDING_S * RATE:
            if not self._overflowed:
                self._overflowed = True
                self._error(
                    Code.BACKEND_ERROR,
                    f"{self._dialect.name} is not keeping up: over {MAX_PENDING_S:g} s of audio "
                    "is waiting; newer audio is dropped until it catches up",
                )
            return
        self._overflowed = False
        utt.data += samples.astype("<i2", copy=False).tobytes()
        self._wake.set()

    def flush(self, utterance: int, until: int | None = None) -> None:
        utt = next((u for u in self._utts if u.index == utterance), None)
        if utt is None:
            return  # nothing was sent for it: no final
        utt.closed = True
        if until is not None and utt.start < until < utt.start + len(utt.data) // 2:
            cut = 2 * (until - utt.start)
            # what the server already has stays with this utterance; the rest moves on
            cut = max(cut, utt.seg_start + utt.sent)
            rest = bytes(utt.data[cut:])
            del utt.data[cut:]
            if rest:
                nxt = next((u for u in self._utts if u.index == utterance + 1), None)
                if nxt is None:
                    nxt = _Utterance(utterance + 1, utt.start + cut // 2)
                    self._utts.insert(self._utts.index(utt) + 1, nxt)
                else:
                    nxt.start -= len(rest) // 2
                nxt.data[:0] = rest
        self._wake.set()

    def speculate(self, utterance: int) -> None:
        """The speaker paused: what the server has transcribed so far is the hint (it decodes
        while audio arrives, so there is nothing to start)."""
        utt = self._current
        if utt is not None and utt.index == utterance:
            self._events.put_nowait(EndpointHint(utterance, utt.text() or None))

    def configure(self, params: StreamParams) -> None:
        old, self._params = self._params, params
        if params.keyterms == old.keyterms and params.language == old.language:
            return
        if params.keyterms != old.keyterms and not self._dialect.can_prompt():
            self._events.put_nowait(
                RecognitionError(
                    Code.CONFIGURE_FAILED,
                    f"{self._dialect.name} takes no prompt: keyterms are not used",
                )
            )
        self._reconfigure = True
        self._wake.set()

    def backlog(self) -> int:
        """Audio of utterances with no final yet (less segments already transcribed)."""
        return sum(len(u.data) - u.seg_start for u in self._utts) // 2

    async def aclose(self) -> None:
        if not self._closing:
            self._closing = True
            self._closed_at = time.monotonic()
            for utt in self._utts:
                utt.closed = True
            self._wake.set()
        await self._task

    async def events(self) -> AsyncIterator[StreamEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    # --- session side ---------------------------------------------------------------------------
    def _error(self, code: str, message: str, utterance: int | None = None) -> None:
        log.error("session %s: %s", self._session, message)
        self._events.put_nowait(RecognitionError(code, message, utterance))

    def _prompt(self) -> str:
        return ", ".join(self._params.keyterms) if self._dialect.can_prompt() else ""

    # --- the I/O task ---------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._serve()
        except Exception:  # a bug, not a transport failure: still end the session's events
            log.exception("session %s: the %s stream failed", self._session, self._dialect.name)
            self._error(Code.INTERNAL_ERROR, f"the {self._dialect.name} stream failed")
        finally:
            self._events.put_nowait(None)

    def _work_left(self) -> bool:
        return any(u.data or not u.closed for u in self._utts)

    async def _serve(self) -> None:
        async def go_on() -> bool:
            """Connect once there is an utterance to send; not at all once closing without."""
            while not self._work_left():
                if self._closing:
                    return False
                self._utts.clear()
                self._wake.clear()
                await self._wake.wait()
            return True

        done = await reconnecting(
            name=self._dialect.name,
            session=self._session,
            connector=self._backend.connector,
            policy=self._policy,
            target=lambda: ("", self._dialect.query),
            go_on=go_on,
            run=self._connection,
            closed_at=lambda: self._closed_at,
            report=self._error,
        )
        if not done:
            self._dead = True
            self._utts.clear()

    async def _connection(self, duplex: Duplex) -> TransportError | None:
        """Run one connection until the session has nothing left: None, else the failure."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watch = StallWatch(
            self._backend.stall_s(STALL_S),
            name=self._dialect.name,
            session=self._session,
            count=self._backend.stall_count,
        )
        reader = asyncio.create_task(self._read(duplex, ready))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(asyncio.shield(ready), reader), CONNECT_WAIT_S)
            if not ready.done():
                if reader.done():
                    raise _reader_failure(reader)
                return TransportError(
                    f"no session.created within {CONNECT_WAIT_S:g} s",
                    retryable=True,
                    cause="no session",
                )
            self._reconfigure = False
            for text in self._dialect.session_update(self._params.language, self._prompt()):
                await duplex.send_text(text)
            while True:
                utt = await self._next_utterance(reader)
                if utt is None:
                    return None
                await self._send_utterance(duplex, utt, reader)
        except TransportError as failure:
            return failure
        finally:
            self._current = None
            if self._result is not None and not self._result.done():
                self._result.cancel()
            self._result = None
            reader.cancel()
            await asyncio.wait({reader}, timeout=0.25)
            if reader.done() and not reader.cancelled():
                reader.exception()  # retrieved: handled through the futures
            await duplex.aclose()

    async def _next_utterance(self, reader: asyncio.Task[None]) -> _Utterance | None:
        """The oldest utterance with audio; None once the session is closing with none left."""
        while True:
            while self._utts and not self._utts[0].data and self._utts[0].closed:
                self._utts.popleft()  # flushed with no audio: no final
            if self._utts and self._utts[0].data:
                return self._utts[0]
            if self._closing and not self._work_left():
                return None
            if reader.done():
                raise _reader_failure(reader)
            self._wake.clear()
            await _first(self._wake.wait(), reader)

    async def _send_utterance(
        self, duplex: Duplex, utt: _Utterance, reader: asyncio.Task[None]
    ) -> None:
        dialect = self._dialect
        cap = self._backend.max_segment_bytes
        utt.sent, utt.delta = 0, ""  # after a reconnect, the open segment goes again
        self._current = utt
        while True:  # one segment after another
            if self._reconfigure:
                self._reconfigure = False
                for text in dialect.session_update(self._params.language, self._prompt()):
                    await duplex.send_text(text)
            self._result = asyncio.get_running_loop().create_future()
            for text in dialect.open_utterance():
                await duplex.send_text(text)
            resampler = (
                soxr.ResampleStream(RATE, dialect.rate, 1, dtype="int16")
                if dialect.rate != RATE
                else None
            )
            while True:
                seg_end = min(len(utt.data), utt.seg_start + cap)
                while utt.seg_start + utt.sent < seg_end:
                    pos = utt.seg_start + utt.sent
                    piece = bytes(utt.data[pos : min(seg_end, pos + APPEND_BYTES)])
                    utt.sent += len(piece)
                    if out := self._resample(piece, resampler):  # soxr may hold a first piece
                        await duplex.send_text(dialect.append(out))
                if utt.sent >= cap or (utt.closed and utt.seg_start + utt.sent >= len(utt.data)):
                    break
                if reader.done():
                    raise _reader_failure(reader)
                self._wake.clear()
                await _first(self._wake.wait(), reader)
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, np.int16), last=True)
                if tail.size:
                    await duplex.send_text(dialect.append(tail.tobytes()))
            for text in dialect.close_utterance():
                await duplex.send_text(text)
            with self._backend.stall_count.awaiting(self._watch):  # the transcript is due
                text = await self._transcript(reader)
            utt.texts.append(text)
            utt.seg_start += utt.sent
            utt.sent, utt.delta = 0, ""
            if utt.closed and utt.seg_start >= len(utt.data):
                self._finish(utt)
                return

    @staticmethod
    def _resample(piece: bytes, resampler: soxr.ResampleStream | None) -> bytes:
        if resampler is None:
            return piece
        out = resampler.resample_chunk(np.frombuffer(piece, "<i2"))
        return np.asarray(out, "<i2").tobytes()

    async def _transcript(self, reader: asyncio.Task[None]) -> str:
        assert self._result is not None
        result = self._result
        try:
            await asyncio.wait_for(_first(asyncio.shield(result), reader), DONE_WAIT_S)
        except TimeoutError:
            raise TransportError(
                f"no transcript within {DONE_WAIT_S:g} s of the end of the utterance",
                retryable=True,
                cause="no transcript",
            ) from None
        if not result.done():
            raise _reader_failure(reader)
        exc = result.exception()
        if isinstance(exc, _UtteranceFailed):
            return ""  # reported by the reader; the utterance has no words
        if exc is not None:
            raise exc
        return result.result()

    def _finish(self, utt: _Utterance) -> None:
        self._current = None
        if self._utts and self._utts[0] is utt:
            self._utts.popleft()
        if utt.index <= self._last_final:
            return  # never twice
        self._last_final = utt.index
        seconds = len(utt.data) / 2 / RATE
        self._events.put_nowait(
            RecognitionEvent(
                utterance=utt.index,
                text=utt.text(),
                is_final=True,
                audio_start=utt.start / RATE,
                audio_end=utt.start / RATE + seconds,
            )
        )

    async def _read(self, duplex: Duplex, ready: asyncio.Future[None]) -> None:
        while (message := await self._watch.receive(duplex)) is not None:
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            for event in self._dialect.read(message):
                failure = self._on_event(event, ready)
                if failure is not None:
                    raise failure
        raise TransportError("the server ended the stream", retryable=True, cause="stream ended")

    def _on_event(
        self, event: Ready | Delta | Done | ServerError, ready: asyncio.Future[None]
    ) -> TransportError | None:
        """Apply one server event; a failure of the connection is returned (the reader ends)."""
        result, utt = self._result, self._current
        if isinstance(event, Ready):
            if not ready.done():
                ready.set_result(None)
        elif isinstance(event, Delta):
            if utt is None or not event.text:
                return None
            before = utt.text()
            utt.delta += event.text
            if (text := utt.text()) != before:
                end = (utt.seg_start + utt.sent) / 2 / RATE
                self._events.put_nowait(
                    RecognitionEvent(
                        utterance=utt.index,
                        text=text,
                        is_final=False,
                        audio_start=utt.start / RATE,
                        audio_end=utt.start / RATE + end,
                    )
                )
        elif isinstance(event, Done):
            if result is not None and not result.done():
                result.set_result(event.text)
        else:
            return self._on_error(event, result, utt)
        return None

    def _on_error(
        self, err: ServerError, result: asyncio.Future[str] | None, utt: _Utterance | None
    ) -> TransportError | None:
        name = self._dialect.name
        said = f"{name}: {err.code}" + (f": {err.message}" if err.message else "")
        if err.scope == "empty":
            if result is not None and not result.done():
                result.set_result("")
            return None
        if err.scope == "notice" or (err.scope == "utterance" and not err.retryable):
            index = utt.index if utt is not None and err.scope == "utterance" else None
            self._error(Code.BACKEND_ERROR, said, index)
            if err.scope == "utterance" and result is not None and not result.done():
                result.set_exception(_UtteranceFailed())
            return None
        return TransportError(said, retryable=err.retryable, cause=err.code)


class _UtteranceFailed(Exception):
    """The server could not transcribe the open utterance (already reported)."""


def _reader_failure(reader: asyncio.Task[None]) -> TransportError:
    exc = reader.exception() if reader.done() and not reader.cancelled() else None
    if isinstance(exc, TransportError):
        return exc
    if exc is not None:
        raise exc
    return TransportError("the stream ended unexpectedly", retryable=True, cause="stream ended")


async def _first(aw: Awaitable[object], reader: asyncio.Task[None]) -> None:
    """Wait for ``aw`` (a coroutine or future) or for the reader to end, whichever is first."""
    task = asyncio.ensure_future(aw)
    try:
        await asyncio.wait({task, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
