"""The session runner: sessions, their actions, recognizer pumps, publishing, limits, ticks, drain.

Messages come from a way in (:mod:`.inlet`: the core subscription, or JetStream mode's
partitions), which calls :meth:`Worker.handle` for one message at a time per subscription; a
session's messages all come through one subscription, so they reach its
:class:`~stt_service.session.Session` in order. Handling only parses, feeds the core and executes
the returned actions (publishing and handing audio to the recognizer stream are both
non-blocking), so one slow session never holds up another. Recognizer results come back through
one pump task per session. What the runner publishes goes out through the way in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nats.aio.client import Client as NATS

from ..backends.base import RecognitionError, Recognizer
from ..bus.natsconn import connect_nats
from ..config import Settings
from ..floods import FloodLog
from ..protocol import Chunk, Code, Playback, ProtocolError, error_message, parse_inbound
from ..session import (
    TICK,
    Action,
    Close,
    EndUtterance,
    Input,
    Measure,
    PredictTurn,
    Publish,
    Reconfigure,
    SendAudio,
    Session,
    SessionConfig,
    Shutdown,
    Speculate,
    Tick,
    TurnVerdict,
    VoiceReady,
)
from ..telemetry import Telemetry, bind_session, session_logging
from .inlet import CoreInlet, Inlet, Live
from .limits import Limits
from .models import SharedModels
from .stats import WorkerStats

log = logging.getLogger(__name__)
TICK_S = 0.05


class Worker:
    """Runs sessions; ``inlet`` is the way messages come in (:func:`.serve.inlet_for` picks
    it from the settings; the core subscription when not given)."""

    def __init__(
        self,
        settings: Settings,
        recognizer: Recognizer,
        telemetry: Telemetry | None = None,
        inlet: Inlet | None = None,
    ) -> None:
        if inlet is None and settings.stt_mode != "core":
            raise ValueError(f"STT_MODE={settings.stt_mode}: give the worker its way in")
        self.inlet: Inlet = inlet or CoreInlet()
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
        self.tel.observe_total(
            "stt.backend.stalls",
            "{stall}",
            "recognizer streams (Flux, Nova, realtime) and whisper-http requests that owed an "
            "answer and went silent, replaced by the watchdog",
            lambda: getattr(self.recognizer, "stalls", 0),  # backends without a watchdog: none
        )
        self.config = SessionConfig.from_settings(
            settings, service_endpointing=recognizer.endpointing == "service"
        )
        self.sessions: dict[str, Live] = {}
        self.stats = WorkerStats()
        self.draining = False
        self.nc: NATS | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.floods = FloodLog(log)  # the warnings of bad messages and refusals, rate-limited
        self.limits = Limits(settings.limits, self.floods)
        self.models = SharedModels(settings, self.config, self._feed, self.stats, self.tel)

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self, nc: NATS | None = None) -> None:
        self.models.load()
        if not self.recognizer.ready():
            await self.recognizer.start()
        self.nc = nc or await connect_nats(self.settings.nats)
        await self.inlet.start(self)
        self._ticker = asyncio.create_task(self._tick_loop(), name="session-ticker")
        log.info(
            "listening on %s.*%s (backend %s), results on %s.{session}",
            self.settings.stt_input_subject,
            self.inlet.via,
            self.recognizer.name,
            self.settings.stt_output_subject,
        )

    async def drain(self) -> None:
        """Stop taking new sessions, publish every pending final, close, flush NATS."""
        if self.draining:
            return
        self.draining = True
        await self.inlet.drain()
        if self.inlet.hands_over:  # the sessions go on elsewhere: nothing to finalise here
            await self.stop()
            return
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
            await self._feed(live, Shutdown("drain"), now)
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
        return bool(self._closing if sid is None else self.closing_tasks(sid))

    def closing_tasks(self, sid: str) -> list[asyncio.Task[None]]:
        return [t for t in self._closing if t.get_name() == f"close-{sid}"]

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
        await self.models.close_voice()  # sessions closing below decide their frames themselves
        await self.inlet.stop()  # jetstream: sessions not handed over are the next owner's
        now = time.time()
        for live in list(self.sessions.values()):
            await self._feed(live, Shutdown("stop"), now)
        await self._wait_closed_within(self.settings.stt_drain_timeout)
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        await self.recognizer.aclose()
        await self.models.close_turns()
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

    # --- inbound --------------------------------------------------------------------------------
    async def handle(self, data: bytes, sid: str, origin: object = None) -> None:
        """One inbound message of session ``sid``, as the way in received it."""
        live = self.sessions.get(sid)
        with session_logging(sid, live.trace.span if live is not None else None):
            await self._handle(data, sid, origin, live)

    async def _handle(self, data: bytes, sid: str, origin: object, live: Live | None) -> None:
        now = time.time()
        began = time.perf_counter()
        try:
            parsed = parse_inbound(data, sid, self.settings.stt_max_chunk_bytes)
            if isinstance(parsed, ProtocolError):
                if live is None or not self.inlet.replaying(live):
                    await self._reply_error(sid, parsed.code, parsed.message, now)
                return
            if live is None:
                # draining: no new session, unless it goes with the others to another replica
                draining = self.draining and not self.inlet.hands_over
                refusal = self.limits.new_session(sid, parsed, now, len(self.sessions), draining)
                if refusal is not None:
                    await self._reply_error(sid, refusal.code, refusal.message, now)
                    return
                live = self.add(Session(sid, self.config, now))
                bind_session(sid, live.trace.span)  # (for the rest of this message's handling)
                self.inlet.opened(live, origin)
                log.info("session %s opened (%d live)", sid, len(self.sessions))
            if (
                isinstance(parsed, Chunk)
                and not self.inlet.replaying(live)
                and await self._backlogged(live, now)
            ):
                return
            if not await self._feed(live, parsed, now):
                return
            self.models.handled(live)  # (an end, say, decides the earlier chunks' frames)
            if isinstance(parsed, Chunk):
                self.tel.chunks_received += 1
                # the chunk's own length: frames still short of whole, or taken early by an
                # end of turn between chunks, count at once
                self.tel.audio_received += live.session.intake.samples_of(parsed.pcm) / 16000
                self.stats.chunk_handling.add(time.perf_counter() - began)
                if parsed.timestamp is not None:
                    if live.session.awaiting_voice:  # handled once the voice batcher decided it
                        live.voice_due.append(parsed.timestamp)
                    else:
                        self.stats.chunk_lag.add(time.time() - parsed.timestamp)
            elif isinstance(parsed, Playback):
                rate = parsed.sample_rate or live.session.intake.normalizer.sample_rate
                self.tel.playback_received += len(parsed.pcm) / (2 * rate)
        except Exception:
            log.exception("session %s: internal error handling a message", sid)
            await self._reply_error(
                sid,
                Code.INTERNAL_ERROR,
                "internal error handling this message; see the service log",
                now,
            )

    async def _backlogged(self, live: Live, now: float) -> bool:
        """Refuse a chunk (with an error) while the recognizer holds too much of this session's
        audio: refused audio was never accepted, so nothing accepted is ever dropped."""
        backlog = (live.stream.backlog() + live.session.unheard) * 2
        refusal = self.limits.backlog(backlog)
        if refusal is None:
            live.refusing = False
            return False
        self.stats.refused_chunks += 1
        self.tel.refused.add(1, {**self.tel.attrs, "stt.code": refusal.code})
        if not live.refusing:
            live.refusing = True
            log.warning(
                "session %s: %d bytes of audio wait for the recognizer; refusing chunks",
                live.session.id,
                backlog,
            )
        self.stats.errors += 1
        message = error_message(
            session_id=live.session.id, code=refusal.code, message=refusal.message, timestamp=now
        )
        with live.trace.publishing(message):
            await self._publish(live.session.id, message, live)
        return True

    def add(self, session: Session) -> Live:
        session.batched = self.models.batched
        stream = self.recognizer.open_stream(session.params)
        live = Live(session, stream, self.tel.session(session.id))
        live.pump = self._start_pump(live)
        self.sessions[session.id] = live
        self.stats.sessions_opened += 1
        return live

    async def _reply_error(self, sid: str, code: str, message: str, now: float) -> None:
        self.stats.errors += 1
        if code not in (Code.BACKEND_ERROR, Code.INTERNAL_ERROR):
            self.tel.refused.add(1, {**self.tel.attrs, "stt.code": code})
        if code not in (Code.TOO_MANY_SESSIONS, Code.SERVICE_DRAINING):
            self.floods.warning(code, sid[:128], "session %s: %s: %s", sid[:128], code, message)
        reply = error_message(session_id=sid, code=code, message=message, timestamp=now)
        live = self.sessions.get(sid)
        if live is None:
            await self._publish(sid, reply)
            return
        with live.trace.publishing(reply):  # every error a session's client gets: on its span
            await self._publish(sid, reply)

    # --- actions --------------------------------------------------------------------------------
    async def _execute(self, live: Live, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case SendAudio(samples, offset, utterance):
                    live.stream.send_audio(samples, offset, utterance)
                    if self.config.service_endpointing:  # one span per turn
                        live.trace.utterance(live.session.turn_of(utterance), utterance)
                case Publish(message):
                    self.tel.count_published(message)
                    with live.trace.publishing(message):
                        await self._publish(live.session.id, message, live)
                case EndUtterance(utterance, until):
                    live.stream.flush(utterance, until)
                    if self.config.service_endpointing:
                        live.trace.flushed(live.session.turn_of(utterance), utterance)
                case Measure(name, seconds, utterance):
                    index = utterance  # -1: the session's
                    if self.config.service_endpointing and utterance >= 0:  # the turn's span
                        index = live.session.turn_of(utterance)
                    live.trace.measured(name, seconds, index)
                case Speculate(utterance):
                    live.stream.speculate(utterance)
                case PredictTurn(utterance, seq, audio):
                    self.models.ask_turn(live, utterance, seq, audio)
                case Reconfigure(params):
                    live.stream.configure(params)
                case Close(reason):
                    log.info("session %s closing (%s)", live.session.id, reason)
                    live.close_reason = reason
                    self.limits.ended(live.session.id, time.time())
                    self._begin_close(live)

    async def _publish(self, sid: str, message: dict[str, Any], live: Live | None = None) -> None:
        live = live or self.sessions.get(sid)
        subject = f"{self.settings.stt_output_subject}.{sid}"
        try:
            if await self.inlet.send(subject, message, live):
                self.stats.published += 1
        except Exception as exc:  # closed connection during shutdown, or the pending buffer is full
            self.tel.dropped.add(1, {**self.tel.attrs, "stt.type": str(message.get("type"))})
            log.error("session %s: could not publish %s: %s", sid, message.get("type"), exc)

    def _begin_close(self, live: Live) -> None:
        sid = live.session.id
        if self.sessions.get(sid) is live:
            del self.sessions[sid]
        self.inlet.closing(live)
        task = asyncio.create_task(self._finish(live), name=f"close-{sid}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _finish(self, live: Live) -> None:
        bind_session(live.session.id, live.trace.span)
        complete = False
        try:
            await live.stream.aclose()
            if live.pump is not None:
                await live.pump
            for message in live.on_close:  # (a drain's error: an event on the session's span)
                with live.trace.publishing(message):
                    await self._publish(live.session.id, message, live)
            complete = True
        except Exception:
            log.exception("session %s: error while closing", live.session.id)
        try:
            await self.inlet.closed(live, complete)
        except Exception:
            log.exception("session %s: error while closing", live.session.id)
        self.stats.sessions_closed += 1
        self.stats.interrupts += live.session.interrupts
        self.stats.cancelled_interrupts += live.session.cancelled_interrupts
        s = live.session
        echo = s.intake.echo
        if echo is not None:
            self.tel.echo_suppressed += echo.suppressed_frames
            live.trace.echo(echo.reference.received_s, echo.suppressed_frames)
        live.trace.close(live.close_reason, s.samples_heard / 16000, s.sequence, s.interrupts)
        log.info(
            "session %s closed: %.1f s audio, %d transcripts, %d interrupts%s",
            s.id,
            s.samples_heard / 16000,
            s.sequence,
            s.interrupts,
            ""
            if echo is None
            else f"; echo cancelled: {echo.reference.received_s:.1f} s of playback, "
            f"{echo.suppressed_frames} voiced frames it explained",
        )

    # --- the recognizer's results, the clock ---------------------------------------------------
    def _start_pump(self, live: Live) -> asyncio.Task[None]:
        """The task that publishes a session's recognition events. An id reused right after its
        'end' publishes only once the earlier session's last finals are out: decodes run side by
        side, so the new session's could otherwise finish sooner."""
        sid = live.session.id
        return asyncio.create_task(self._pump(live, self.closing_tasks(sid)), name=f"pump-{sid}")

    async def _pump(self, live: Live, after: list[asyncio.Task[None]]) -> None:
        bind_session(live.session.id, live.trace.span)
        if after:
            await asyncio.wait(after)
        try:
            async for event in live.stream.events():
                if isinstance(event, RecognitionError):
                    self.tel.backend_errors.add(1, {**self.tel.attrs, "stt.code": event.code})
                await self._feed(live, event, time.time())
        except Exception:
            log.exception("session %s: recognizer stream failed", live.session.id)
            await self._reply_error(
                live.session.id,
                Code.BACKEND_ERROR,
                "the recognizer stream failed; see the service log",
                time.time(),
            )

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.time()
            for live in list(self.sessions.values()):
                await self._feed(live, TICK, now)
            self.limits.forget(now)
            self.floods.flush()

    # --- the one way into a session's core ------------------------------------------------------
    async def _feed(self, live: Live, item: Input, now: float) -> bool:
        """Everything a session hears (a message, a recognizer event, a model's answer, the
        clock, a shutdown) goes into its core here, and the actions it returns are carried out.
        An internal error is logged with what was fed, the client is told of one in what it
        sent or would have received (``internal_error``), and no other session notices.
        False when it failed."""
        with session_logging(live.session.id, live.trace.span):
            try:
                await self._execute(live, live.session.feed(item, now))
                return True
            except Exception:
                log.exception(
                    "session %s: internal error on %s", live.session.id, type(item).__name__
                )
        if not isinstance(item, Tick | VoiceReady | TurnVerdict | Shutdown):
            await self._reply_error(
                live.session.id,
                Code.INTERNAL_ERROR,
                "internal error handling this message; see the service log",
                now,
            )
        return False
