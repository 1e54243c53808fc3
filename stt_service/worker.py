"""The NATS I/O shell around the session core.

Subscribes ``{STT_INPUT_SUBJECT}.*``; nats-py runs the subscription callback for one message at a
time, so each session's messages reach its :class:`~stt_service.session.Session` in order. The
callback only parses, feeds the core and executes the returned actions (publishing and handing
audio to the recognizer stream are both non-blocking), so one slow session never holds up another.
Recognizer results come back through one pump task per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .backends.base import RecognitionError, Recognizer, RecognizerStream
from .config import Settings
from .health import HealthServer
from .natsconn import connect_nats
from .protocol import (
    Chunk,
    Code,
    End,
    Finalize,
    ProtocolError,
    Start,
    encode,
    error_message,
    parse_inbound,
    session_id_from_subject,
)
from .session import (
    Action,
    Close,
    EndUtterance,
    Measure,
    Publish,
    Reconfigure,
    SendAudio,
    Session,
    SessionConfig,
    Speculate,
)
from .telemetry import SessionTrace, Telemetry, bind_session, session_logging

log = logging.getLogger(__name__)
TICK_S = 0.05


@dataclass(eq=False)
class _Live:
    session: Session
    stream: RecognizerStream
    trace: SessionTrace
    close_reason: str = ""
    pump: asyncio.Task[None] | None = None
    on_close: list[dict[str, Any]] = field(default_factory=list)  # published after the last final
    refusing: bool = False  # chunks are being refused: the recognizer is behind


class LatencyWindow:
    """The most recent ``keep`` durations (seconds) and their percentiles."""

    def __init__(self, keep: int = 200_000) -> None:
        self._values: deque[float] = deque(maxlen=keep)
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self._values.append(seconds)
        self.count += 1
        self.max = max(self.max, seconds)

    def summary(self) -> str:
        if not self.count:
            return "none"
        ordered = sorted(self._values)

        def at(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

        return (
            f"p50 {at(0.5):.1f} ms, p99 {at(0.99):.1f} ms, max {self.max * 1000:.1f} ms "
            f"over {self.count}"
        )


@dataclass
class WorkerStats:
    messages: int = 0
    errors: int = 0
    published: int = 0
    sessions_opened: int = 0
    sessions_closed: int = 0
    refused_chunks: int = 0
    # per audio chunk: time spent handling it, and client timestamp -> handled (same-clock lag)
    chunk_handling: LatencyWindow = field(default_factory=LatencyWindow)
    chunk_lag: LatencyWindow = field(default_factory=LatencyWindow)

    def summary(self) -> str:
        return (
            f"{self.messages} messages, {self.sessions_opened} sessions, {self.published} "
            f"published, {self.errors} errors; chunk handling {self.chunk_handling.summary()}; "
            f"chunk lag from client timestamp {self.chunk_lag.summary()}"
        )


class Worker:
    def __init__(
        self, settings: Settings, recognizer: Recognizer, telemetry: Telemetry | None = None
    ) -> None:
        self.settings = settings
        self.recognizer = recognizer
        self.tel = telemetry or Telemetry(backend=recognizer.name)
        self.tel.observe(
            "stt.inference.queue_depth",
            "{request}",
            "decodes waiting for the model (local and HTTP Whisper)",
            self._queue_depth,
        )
        self.tel.observe(
            "stt.audio.backlog",
            "s",
            "audio accepted and not yet recognised, all sessions",
            lambda: sum(live.stream.backlog() for live in list(self.sessions.values())) / 16000,
        )
        self.config = SessionConfig.from_settings(
            settings, service_endpointing=recognizer.endpointing == "service"
        )
        self.sessions: dict[str, _Live] = {}
        self.stats = WorkerStats()
        self.draining = False
        self.nc: NATS | None = None
        self._sub: Subscription | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._refused: dict[str, float] = {}  # session ids refused recently (log once)
        self._ended: dict[str, float] = {}  # session ids closed recently: no implicit restart

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self, nc: NATS | None = None) -> None:
        if not self.recognizer.ready():
            await self.recognizer.start()
        self.nc = nc or await connect_nats(self.settings)
        subject = f"{self.settings.stt_input_subject}.*"
        # nats-py's default pending limits (512 Ki messages, 128 MiB) bound memory; past them
        # it reports a slow consumer through the error callback, which logs it
        self._sub = await self.nc.subscribe(subject, cb=self._on_message)
        # the SUB is only buffered until here: a round trip makes the server route to us before
        # we say we are listening (a client publishing right after would otherwise be unheard)
        await self.nc.flush()
        self._ticker = asyncio.create_task(self._tick_loop(), name="session-ticker")
        log.info(
            "listening on %s (backend %s), results on %s.{session}",
            subject,
            self.recognizer.name,
            self.settings.stt_output_subject,
        )

    async def drain(self) -> None:
        """Stop taking new sessions, publish every pending final, close, flush NATS."""
        if self.draining:
            return
        self.draining = True
        # stop receiving, but first handle every message already on its way to us: audio the
        # clients sent before the signal is transcribed, not dropped
        if self._sub is not None:
            try:
                drained = self._sub.drain()  # type: ignore[no-untyped-call]
                await asyncio.wait_for(drained, self.settings.stt_drain_timeout / 2)
            except Exception as exc:
                log.warning("could not drain the subscription: %s", str(exc) or type(exc).__name__)
        log.info("draining %d session(s)", len(self.sessions))
        now = time.time()
        for sid, live in list(self.sessions.items()):
            live.on_close.append(
                error_message(
                    session_id=sid,
                    code=Code.SERVICE_DRAINING,
                    message="this worker is shutting down; speech so far was transcribed, "
                    "later audio is not heard",
                    timestamp=now,
                )
            )
            await self._execute(live, live.session.close(now, reason="drain"))
        if not await self._wait_closed_within(self.settings.stt_drain_timeout):
            log.error(
                "drain timed out after %g s; pending results are lost",
                self.settings.stt_drain_timeout,
            )
        await self.stop()

    async def _wait_closed_within(self, seconds: float) -> bool:
        """wait_closed(), but give up after ``seconds``: cancel what is left and say so."""
        try:
            await asyncio.wait_for(self.wait_closed(), seconds)
            return True
        except TimeoutError:
            for task in list(self._closing):
                task.cancel()
            await asyncio.gather(*list(self._closing), return_exceptions=True)
            return False

    def is_closing(self, sid: str | None = None) -> bool:
        """Whether a session (any, without ``sid``) is still publishing its last results."""
        return any(sid is None or t.get_name() == f"close-{sid}" for t in self._closing)

    async def wait_closed(self) -> None:
        """Until every closing session has published its last results."""
        while self._closing:
            # awaiting already-finished tasks does not yield to the loop, and the done callbacks
            # that empty the set run from the loop: sleep(0) lets them run
            await asyncio.wait(list(self._closing))
            await asyncio.sleep(0)

    async def stop(self) -> None:
        """Close what is still open (pending speech is still finalised), then disconnect."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        now = time.time()
        for live in list(self.sessions.values()):
            await self._execute(live, live.session.close(now, reason="stop"))
        await self._wait_closed_within(self.settings.stt_drain_timeout)
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        await self.recognizer.aclose()
        log.info("worker stats: %s", self.stats.summary())

    def _queue_depth(self) -> float | None:
        try:  # read from the exporter's thread: a plain attribute read, no loop state changed
            return float(getattr(self.recognizer, "scheduler").depth)  # noqa: B009
        except Exception:  # no scheduler (Deepgram streams), or not started yet
            return None

    def readiness(self) -> list[str]:
        """Why this worker should not get traffic now (empty: ready)."""
        problems = []
        if self.draining:
            problems.append("draining")
        if self.nc is None:
            problems.append("starting: not connected to NATS yet")
        elif not self.nc.is_connected:
            problems.append("NATS connection lost; reconnecting")
        if not self.recognizer.ready():
            problems.append(f"recognizer {self.recognizer.name} not ready")
        return problems

    async def run_until_signal(self) -> None:
        """``serve``: health checks, run until SIGTERM/SIGINT, then drain and return."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        health: HealthServer | None = None
        if self.settings.stt_health_port:
            # up before the model loads: /healthz answers, /readyz says what is missing
            health = HealthServer(
                self.settings.stt_health_host, self.settings.stt_health_port, self.readiness
            )
            await health.start()
        try:
            await self.start()
            await stop.wait()
            log.info("signal received")
            await self.drain()
        finally:
            if health is not None:
                await health.aclose()

    # --- inbound --------------------------------------------------------------------------------
    async def _on_message(self, msg: Msg) -> None:
        self.stats.messages += 1
        sid = session_id_from_subject(msg.subject, self.settings.stt_input_subject)
        live = self.sessions.get(sid)
        with session_logging(sid, live.trace.span if live is not None else None):
            await self._handle_message(msg, sid)

    async def _handle_message(self, msg: Msg, sid: str) -> None:
        now = time.time()
        began = time.perf_counter()
        try:
            parsed = parse_inbound(msg.data, sid, self.settings.stt_max_chunk_bytes)
            live = self.sessions.get(sid)
            if isinstance(parsed, ProtocolError):
                await self._reply_error(sid, parsed.code, parsed.message, now)
                return
            if live is None:
                if sid in self._ended and not isinstance(parsed, Start):
                    await self._reply_error(
                        sid,
                        Code.UNKNOWN_SESSION,
                        f"{parsed.type}: session {sid!r} has ended; send 'start' to open it again",
                        now,
                    )
                    return
                if isinstance(parsed, End | Finalize):
                    await self._reply_error(
                        sid,
                        Code.UNKNOWN_SESSION,
                        f"{parsed.type}: no open session {sid!r} (never started, ended, or "
                        "closed after being idle)",
                        now,
                    )
                    return
                live = await self._open(sid, now)
                if live is None:
                    return
            if isinstance(parsed, Chunk) and await self._backlogged(live, now):
                return
            heard = live.session.samples_heard
            await self._execute(live, live.session.handle(parsed, now))
            if isinstance(parsed, Chunk):
                self.tel.chunks.add(1, self.tel.attrs)
                self.tel.audio.add((live.session.samples_heard - heard) / 16000, self.tel.attrs)
                self.stats.chunk_handling.add(time.perf_counter() - began)
                if parsed.timestamp is not None:
                    self.stats.chunk_lag.add(time.time() - parsed.timestamp)
        except Exception:
            log.exception("session %s: internal error handling a message", sid)
            await self._reply_error(
                sid,
                Code.INTERNAL_ERROR,
                "internal error handling this message; see the service log",
                now,
            )

    async def _backlogged(self, live: _Live, now: float) -> bool:
        """Refuse a chunk (with an error) while the recognizer holds too much of this session's
        audio: refused audio was never accepted, so nothing accepted is ever dropped."""
        backlog = live.stream.backlog() * 2
        limit = self.settings.stt_max_buffered_audio_bytes
        if backlog < limit:
            live.refusing = False
            return False
        self.stats.refused_chunks += 1
        self.tel.refused.add(1, {**self.tel.attrs, "stt.code": Code.BACKEND_OVERLOADED})
        if not live.refusing:
            live.refusing = True
            log.warning(
                "session %s: %d bytes of audio wait for the recognizer; refusing chunks",
                live.session.id,
                backlog,
            )
        self.stats.errors += 1
        message = (
            f"this chunk was not accepted: {backlog / 32000:.1f} s of this session's audio is "
            f"still waiting for the recognizer (limit STT_MAX_BUFFERED_AUDIO_BYTES="
            f"{limit}); send it again later or slow down"
        )
        await self._publish(
            live.session.id,
            error_message(
                session_id=live.session.id,
                code=Code.BACKEND_OVERLOADED,
                message=message,
                timestamp=now,
            ),
        )
        return True

    async def _open(self, sid: str, now: float) -> _Live | None:
        if self.draining:
            await self._refuse(
                sid,
                Code.SERVICE_DRAINING,
                "this worker is shutting down and takes no new sessions",
                now,
            )
            return None
        if len(self.sessions) >= self.settings.stt_max_sessions:
            await self._refuse(
                sid,
                Code.TOO_MANY_SESSIONS,
                f"this worker is at its limit of {self.settings.stt_max_sessions} "
                "sessions (STT_MAX_SESSIONS); try again later",
                now,
            )
            return None
        session = Session(sid, self.config, now)
        stream = self.recognizer.open_stream(session.params)
        live = _Live(session, stream, self.tel.session(sid))
        live.pump = asyncio.create_task(self._pump(live), name=f"pump-{sid}")
        self.sessions[sid] = live
        self.stats.sessions_opened += 1
        log.info("session %s opened (%d live)", sid, len(self.sessions))
        return live

    async def _refuse(self, sid: str, code: str, message: str, now: float) -> None:
        if sid not in self._refused:
            log.warning("session %s refused: %s", sid, code)
            if len(self._refused) > 10_000:
                self._refused.clear()
        self._refused[sid] = now
        await self._reply_error(sid, code, message, now)

    async def _reply_error(self, sid: str, code: str, message: str, now: float) -> None:
        self.stats.errors += 1
        if code not in (Code.BACKEND_ERROR, Code.INTERNAL_ERROR):
            self.tel.refused.add(1, {**self.tel.attrs, "stt.code": code})
        if code not in (Code.TOO_MANY_SESSIONS, Code.SERVICE_DRAINING):
            log.warning("session %s: %s: %s", sid[:128], code, message)
        await self._publish(
            sid, error_message(session_id=sid, code=code, message=message, timestamp=now)
        )

    # --- actions --------------------------------------------------------------------------------
    async def _execute(self, live: _Live, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case SendAudio(samples, offset, utterance):
                    live.stream.send_audio(samples, offset, utterance)
                    if self.config.service_endpointing:
                        live.trace.utterance(utterance)
                case Publish(message):
                    with live.trace.publishing(message):
                        await self._publish(live.session.id, message)
                case EndUtterance(utterance, until):
                    live.stream.flush(utterance, until)
                    if self.config.service_endpointing:
                        live.trace.flushed(utterance)
                case Measure(name, seconds, utterance):
                    live.trace.measured(name, seconds, utterance)
                case Speculate(utterance):
                    live.stream.speculate(utterance)
                case Reconfigure(params):
                    live.stream.configure(params)
                case Close(reason):
                    log.info("session %s closing (%s)", live.session.id, reason)
                    live.close_reason = reason
                    self._ended[live.session.id] = time.time()
                    self._begin_close(live)

    async def _publish(self, sid: str, message: dict[str, Any]) -> None:
        assert self.nc is not None
        try:
            await self.nc.publish(f"{self.settings.stt_output_subject}.{sid}", encode(message))
            self.stats.published += 1
        except Exception as exc:  # closed connection during shutdown, or the pending buffer is full
            self.tel.dropped.add(1, {**self.tel.attrs, "stt.type": str(message.get("type"))})
            log.error("session %s: could not publish %s: %s", sid, message.get("type"), exc)

    def _begin_close(self, live: _Live) -> None:
        sid = live.session.id
        if self.sessions.get(sid) is live:
            del self.sessions[sid]
        task = asyncio.create_task(self._finish(live), name=f"close-{sid}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _finish(self, live: _Live) -> None:
        bind_session(live.session.id, live.trace.span)
        try:
            await live.stream.aclose()
            if live.pump is not None:
                await live.pump
            for message in live.on_close:
                await self._publish(live.session.id, message)
        except Exception:
            log.exception("session %s: error while closing", live.session.id)
        self.stats.sessions_closed += 1
        s = live.session
        live.trace.close(live.close_reason, s.samples_heard / 16000, s.sequence, s.interrupts)
        log.info(
            "session %s closed: %.1f s audio, %d transcripts, %d interrupts",
            s.id,
            s.samples_heard / 16000,
            s.sequence,
            s.interrupts,
        )

    async def _pump(self, live: _Live) -> None:
        bind_session(live.session.id, live.trace.span)
        try:
            async for event in live.stream.events():
                if isinstance(event, RecognitionError):
                    self.tel.backend_errors.add(1, {**self.tel.attrs, "stt.code": event.code})
                await self._execute(live, live.session.on_event(event, time.time()))
        except Exception:
            log.exception("session %s: recognizer stream failed", live.session.id)
            await self._reply_error(
                live.session.id,
                Code.BACKEND_ERROR,
                "the recognizer stream failed; see the service log",
                time.time(),
            )

    async def _tick_loop(self) -> None:
        timeout = self.settings.stt_chunk_timeout
        while True:
            await asyncio.sleep(TICK_S)
            now = time.time()
            for live in list(self.sessions.values()):
                try:
                    actions = live.session.tick(now, timeout)
                    if actions:
                        with session_logging(live.session.id, live.trace.span):
                            await self._execute(live, actions)
                except Exception:  # one broken session must not stop the clock for the others
                    log.exception("session %s: internal error on a clock tick", live.session.id)
            if self._refused:
                self._refused = {k: t for k, t in self._refused.items() if now - t < 60}
            if self._ended:
                keep = self.settings.stt_session_idle_timeout
                self._ended = {k: t for k, t in self._ended.items() if now - t < keep}
