"""The NATS I/O shell around the session core.

``STT_MODE=core`` subscribes ``{STT_INPUT_SUBJECT}.*``; ``STT_MODE=jetstream`` consumes the
partitions this replica holds (:mod:`stt_service.jetstream`). Either way the callback runs for one
message at a time per subscription, and a session's messages all come through one subscription,
so they reach its :class:`~stt_service.session.Session` in order. The callback only parses, feeds
the core and executes the returned actions (publishing and handing audio to the recognizer stream
are both non-blocking), so one slow session never holds up another. Recognizer results come back
through one pump task per session.
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
from nats.js.api import ConsumerConfig, DeliverPolicy

from .backends.base import RecognitionError, Recognizer, RecognizerStream
from .config import Settings
from .health import HealthServer
from .jetstream import (
    CHECKPOINT_HEADER,
    FLOOR_RENEW_S,
    JetStreamState,
    Leases,
    ReplayTracker,
    encode_checkpoint,
)
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
    PredictTurn,
    Publish,
    Reconfigure,
    SendAudio,
    Session,
    SessionConfig,
    Speculate,
)
from .silero import shared_model
from .smartturn import MODEL_PATH as TURN_MODEL_PATH
from .smartturn import shared_model as turn_model
from .telemetry import SessionTrace, Telemetry, bind_session, session_logging
from .turnbatch import TurnRunner
from .voicebatch import VoiceBatcher

log = logging.getLogger(__name__)
TICK_S = 0.05
REPLAY_LAG = 8000  # samples of silence a replay starts before the next utterance (0.5 s)
CHECKPOINT_EVERY_S = 5.0  # a session's replay point is stored at most this often (and with
# every message it publishes): a replay is at most this much longer, the writes 5x fewer


@dataclass(eq=False)
class _Live:
    session: Session
    stream: RecognizerStream
    trace: SessionTrace
    close_reason: str = ""
    pump: asyncio.Task[None] | None = None
    on_close: list[dict[str, Any]] = field(default_factory=list)  # published after the last final
    refusing: bool = False  # chunks are being refused: the recognizer is behind
    # client timestamps of chunks whose frames wait for the voice batcher: their lag is counted
    # when it has decided them
    voice_due: list[float] = field(default_factory=list)
    # jetstream mode: the partition, and the replay point (stream sequence of the first inbound
    # message a replay would start at, and the session's state just before it)
    partition: int = -1
    v: int = 0  # checkpoint version: a newer one wins
    replay_seq: int = 0
    snap: dict[str, Any] | None = None
    persisted: int = 0  # replay point of the newest checkpoint stored (or the first message)
    persisted_at: float = 0.0  # monotonic
    handled: int = 0  # stream sequence of the last inbound message handled
    quiet_until: int = 0  # a replay: errors for messages up to here were published already
    replaying: bool = False
    abandoned: bool = False  # moved to another replica: publishes nothing more
    # results not published yet because this replica's lease on the partition was in doubt
    # (NATS unreachable, renewal late): sent in order once it is renewed, dropped if it is lost
    held: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    replay: ReplayTracker = field(default_factory=lambda: ReplayTracker(REPLAY_LAG))


@dataclass(eq=False)
class _Partition:
    k: int
    sub: Subscription | None = None
    last_seq: int = 0  # last inbound message seen
    floor: int = 0  # last floor stored
    floor_at: float = 0.0
    # sessions not open here: their checkpoint (None: none stored), read once
    known: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    closing: dict[str, _Live] = field(default_factory=dict)  # until the close is recorded
    releasing: bool = False  # being given up: no more messages are taken


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
    interrupts: int = 0
    cancelled_interrupts: int = 0
    vad: str = ""  # the voice batcher's summary
    turns: str = ""  # the end-of-turn runner's summary
    # per audio chunk: time spent handling it, and client timestamp -> handled (same-clock lag)
    chunk_handling: LatencyWindow = field(default_factory=LatencyWindow)
    chunk_lag: LatencyWindow = field(default_factory=LatencyWindow)

    def summary(self) -> str:
        return (
            f"{self.messages} messages, {self.sessions_opened} sessions, {self.published} "
            f"published, {self.errors} errors; chunk handling {self.chunk_handling.summary()}; "
            f"chunk lag from client timestamp {self.chunk_lag.summary()}; "
            f"{self.interrupts} interrupts, {self.cancelled_interrupts} taken back"
            + (f"; voice detector: {self.vad}" if self.vad else "")
            + (f"; {self.turns}" if self.turns else "")
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
        if settings.stt_mode == "jetstream":
            self.tel.observe(
                "stt.partitions.held",
                "{partition}",
                "session partitions this replica serves (jetstream mode)",
                lambda: float(len(self._parts)),
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
        self.jetstream = settings.stt_mode == "jetstream"
        self.jsx: JetStreamState | None = None
        self.leases: Leases | None = None
        self._parts: dict[int, _Partition] = {}
        self._ckpt_task: asyncio.Task[None] | None = None
        self._abandoning: set[asyncio.Task[None]] = set()
        # Silero's frames of many sessions go through one network call (STT_VAD_BATCH_MS)
        self._batch_voice = settings.stt_vad == "silero" and settings.stt_vad_batch_ms > 0
        self.voicebatch: VoiceBatcher[_Live] = VoiceBatcher(
            settings.stt_vad_batch_ms / 1000,
            lambda live: live.session.voice,
            self._voice_ready,
        )
        # the end-of-turn model's thread (loaded in start(): a broken file fails there)
        self.turns: TurnRunner[tuple[_Live, int, int]] | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self, nc: NATS | None = None) -> None:
        if self.settings.stt_vad == "silero":
            shared_model()  # load it now: a broken install fails here, not on the first chunk
        if self.config.turn_model and self.turns is None:
            path = self.settings.stt_turn_model_path or str(TURN_MODEL_PATH)
            self.turns = TurnRunner(turn_model(path), self._turn_verdict)
        if not self.recognizer.ready():
            await self.recognizer.start()
        self.nc = nc or await connect_nats(self.settings)
        subject = f"{self.settings.stt_input_subject}.*"
        if self.jetstream:
            await self._start_jetstream()
        else:
            # nats-py's default pending limits (512 Ki messages, 128 MiB) bound memory; past them
            # it reports a slow consumer through the error callback, which logs it
            self._sub = await self.nc.subscribe(subject, cb=self._on_message)
            # the SUB is only buffered until here: a round trip makes the server route to us
            # before we say we are listening (a client publishing right after would be unheard)
            await self.nc.flush()
        self._ticker = asyncio.create_task(self._tick_loop(), name="session-ticker")
        log.info(
            "listening on %s%s (backend %s), results on %s.{session}",
            subject,
            " through JetStream" if self.jetstream else "",
            self.recognizer.name,
            self.settings.stt_output_subject,
        )

    async def drain(self) -> None:
        """Stop taking new sessions, publish every pending final, close, flush NATS."""
        if self.draining:
            return
        self.draining = True
        if self.leases is not None:
            # hand every partition over: the other replicas replay each session from its last
            # checkpoint and go on; nothing is finalised early and the clients hear no error
            log.info("draining: handing %d partition(s) to the other replicas", len(self._parts))
            try:
                await asyncio.wait_for(
                    self.leases.stop(handoff=True), self.settings.stt_drain_timeout
                )
            except TimeoutError:
                log.error("hand-off timed out; the partitions move when their leases expire")
            await self.stop()
            return
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
        return bool(self._closing if sid is None else self._closing_tasks(sid))

    def _closing_tasks(self, sid: str) -> list[asyncio.Task[None]]:
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
        await self.voicebatch.aclose()  # sessions closing below decide their frames themselves
        if self.leases is not None:
            await self.leases.stop(handoff=False)
        if self._ckpt_task is not None:
            self._ckpt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ckpt_task
            self._ckpt_task = None
        now = time.time()
        for live in list(self.sessions.values()):
            if self.jetstream:  # not handed over in time: the next owner replays it
                self._abandon(live)
                continue
            await self._execute(live, live.session.close(now, reason="stop"))
        await self._wait_closed_within(self.settings.stt_drain_timeout)
        if self._abandoning:  # streams of sessions handed over: nothing of theirs is published
            await asyncio.wait(list(self._abandoning), timeout=5)
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        await self.recognizer.aclose()
        if self.settings.stt_vad == "silero":
            self.stats.vad = self.voicebatch.stats.summary()
        if self.turns is not None:
            await self.turns.aclose()
            self.stats.turns = self.turns.stats.summary()
        log.info("worker stats: %s", self.stats.summary())

    # --- jetstream mode --------------------------------------------------------------------------
    async def _start_jetstream(self) -> None:
        assert self.nc is not None
        self.jsx = await JetStreamState.open(self.nc, self.settings)
        self.leases = Leases(
            self.jsx.leases,
            self.settings.stt_js_partitions,
            self.settings.stt_js_lease_seconds,
            self._acquire,
            self._release,
            self._load,
            on_renewed=self._release_held,
        )
        layout = self.jsx.layout
        log.info(
            "jetstream mode: replica %s; stream %s (%d partitions, audio kept %g s / %.1f GiB), "
            "results %s, buckets %s and %s",
            self.leases.me,
            layout.stream,
            layout.partitions,
            self.settings.stt_js_max_age,
            self.settings.stt_js_max_bytes / 1024**3,
            layout.results,
            layout.leases,
            layout.state,
        )
        self.leases.start()
        self._ckpt_task = asyncio.create_task(self._checkpoint_loop(), name="checkpoints")

    def _tracker(self) -> ReplayTracker:
        # where the backend finds turns, the session learns one began only from its first
        # words: replay from further back, so a turn's start is never skipped
        return ReplayTracker(REPLAY_LAG if self.config.service_endpointing else 4 * REPLAY_LAG)

    def _load(self, k: int) -> tuple[int, int]:
        lives = [live for live in self.sessions.values() if live.partition == k]
        return sum(not live.session.settled for live in lives), len(lives)

    async def _acquire(self, k: int) -> None:
        assert self.jsx is not None
        floor = await self.jsx.floor(k)
        if floor is None:  # never served (or idle past the state's lifetime): start now
            floor = await self.jsx.next_seq()
            await self.jsx.put_floor(k, floor)
        part = _Partition(k, last_seq=floor - 1, floor=floor, floor_at=time.monotonic())
        self._parts[k] = part

        async def on_msg(msg: Msg) -> None:
            await self._on_partition_message(part, msg)

        try:
            part.sub = await self.jsx.js.subscribe(
                self.jsx.layout.partition_subject(k),
                stream=self.jsx.layout.stream,
                ordered_consumer=True,
                idle_heartbeat=1.0,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                config=ConsumerConfig(opt_start_seq=floor),
                cb=on_msg,
            )
        except Exception:
            del self._parts[k]
            raise
        log.debug("partition %d: consuming from stream sequence %d", k, floor)

    async def _release(self, k: int, handoff: bool) -> None:
        """Stop serving partition ``k``. ``handoff``: store where each of its sessions must be
        replayed from first (closing sessions finish first); else (lease lost) store nothing."""
        part = self._parts.get(k)
        if part is None:
            return
        part.releasing = True
        if part.sub is not None:
            with contextlib.suppress(Exception):
                await part.sub.unsubscribe()
        try:
            if handoff:
                assert self.jsx is not None
                closing = [
                    t for t in self._closing if t.get_name().removeprefix("close-") in part.closing
                ]
                if closing:  # their finals and closed-marks go out first, from here
                    await asyncio.wait(closing, timeout=self.settings.stt_drain_timeout / 2)
                # a closing session not done yet is replayed by the next owner
                lives = self._partition_lives(part)
                await asyncio.gather(
                    *(
                        self.jsx.put_checkpoint(live.session.id, self._checkpoint(live))
                        for live in lives
                    )
                )
                floor = min((live.replay_seq for live in lives), default=part.last_seq + 1)
                await self.jsx.put_floor(k, floor)
        finally:
            if self._parts.get(k) is part:
                del self._parts[k]
            lives = self._partition_lives(part)
            for live in lives:
                self._abandon(live)
            if lives:
                log.info(
                    "partition %d: %d session(s) %s",
                    k,
                    len(lives),
                    "handed over" if handoff else "left to the new owner",
                )

    def _partition_lives(self, part: _Partition) -> list[_Live]:
        lives = [live for live in self.sessions.values() if live.partition == part.k]
        return lives + [live for live in part.closing.values() if not live.abandoned]

    def _may_publish(self, live: _Live) -> bool:
        """A session's results go out only while its partition's lease is surely ours, and
        through a live connection (a reconnecting client would send them late, after a new
        owner may have published them again)."""
        assert self.nc is not None
        if self.leases is None or live.partition < 0:
            return True
        return self.nc.is_connected and self.leases.fresh(live.partition)

    async def _release_held(self) -> None:
        """After a renewal: publish, in order, what was held while the lease was in doubt."""
        assert self.nc is not None
        for live in [*self.sessions.values(), *self._closing_lives()]:
            while live.held and not live.abandoned and self._may_publish(live):
                subject, data, headers = live.held.pop(0)
                try:
                    await self.nc.publish(subject, data, headers=headers)
                    self.stats.published += 1
                except Exception as exc:
                    live.held.insert(0, (subject, data, headers))
                    log.warning("session %s: results still held: %s", live.session.id, exc)
                    break
                if not live.held:
                    live.persisted, live.persisted_at = live.replay_seq, time.monotonic()

    def _closing_lives(self) -> list[_Live]:
        return [live for part in self._parts.values() for live in part.closing.values()]

    def _abandon(self, live: _Live) -> None:
        """Forget a session another replica now serves: publish nothing more for it."""
        live.abandoned = True
        live.held.clear()
        if self.sessions.get(live.session.id) is live:
            del self.sessions[live.session.id]
        if live.pump is not None:
            live.pump.cancel()
        live.trace.close("moved", live.session.samples_heard / 16000, live.session.sequence, 0)
        task = asyncio.create_task(live.stream.aclose(), name=f"abandon-{live.session.id}")
        self._abandoning.add(task)
        task.add_done_callback(self._abandoning.discard)

    def _checkpoint(self, live: _Live) -> dict[str, Any]:
        live.v += 1
        return {
            "v": live.v,
            "replay": live.replay_seq,
            "snap": live.snap,
            "progress": live.session.progress(),
            "handled": live.handled,
        }

    async def _on_partition_message(self, part: _Partition, msg: Msg) -> None:
        if self._parts.get(part.k) is not part or part.releasing:
            return  # being given up
        seq = msg.metadata.sequence.stream
        if seq <= part.last_seq:
            return  # seen before (an ordered consumer that restarted)
        part.last_seq = seq
        self.stats.messages += 1
        sid = msg.subject.rsplit(".", 1)[-1]
        live = self.sessions.get(sid)
        prior_v = 0  # a session reopened under an id used before: its checkpoints must win
        if live is None and sid in part.closing:
            # closed here moments ago (its closed-mark may not be stored yet): a new session,
            # or a message for one that has ended
            prior_v = part.closing[sid].v + 1
        elif live is None:
            try:
                resumed = await self._resume(part, sid, seq)
            except Exception as exc:
                # without the checkpoint the session cannot go on correctly: serve the partition
                # again from its floor (taken back, or by another replica)
                log.warning("partition %d: %s; serving it again from its floor", part.k, exc)
                if self.leases is not None and not part.releasing:
                    part.releasing = True
                    task = asyncio.create_task(self.leases.drop(part.k), name=f"drop-{part.k}")
                    self._abandoning.add(task)
                    task.add_done_callback(self._abandoning.discard)
                return
            if resumed is False:
                return
            live = resumed if isinstance(resumed, _Live) else None
        if live is not None:
            point = live.replay.observe(seq, live.session)
            if point is not None:
                live.replay_seq, live.snap = point.seq, point.snapshot
            live.replaying = seq <= live.quiet_until
            live.handled = seq  # before handling: an 'end' closes the session meanwhile
        opened = live is None
        with session_logging(sid, live.trace.span if live is not None else None):
            await self._handle_message(msg.data, sid, seq, part.k)
        live = self.sessions.get(sid)
        if live is None:
            return
        if opened:
            earlier = part.known.pop(sid, None)  # the closed-mark of a session of the same id
            live.v = max(prior_v, int(earlier["v"]) + 1 if earlier else 0)
        live.replaying = False
        if self._parts.get(part.k) is not part:
            self._abandon(live)  # the partition was given up while this message was handled

    async def _resume(self, part: _Partition, sid: str, seq: int) -> _Live | bool | None:
        """The first message here of a session not open here: its checkpoint decides whether the
        message was handled before (False: skip it), or the session goes on from its checkpoint
        (the restored session), or it is new (None). Raises when the checkpoint cannot be read."""
        assert self.jsx is not None
        if sid not in part.known:
            if len(part.known) > 10_000:
                part.known.clear()
            for attempt in range(3):
                try:
                    part.known[sid] = await self.jsx.session_checkpoint(sid)
                    break
                except Exception as exc:
                    if attempt == 2:
                        raise RuntimeError(
                            f"session {sid}: could not read its checkpoint: {exc}"
                        ) from None
                    await asyncio.sleep(0.2)
        ckpt = part.known[sid]
        if ckpt is None:
            return None
        if "closed" in ckpt:
            return False if seq <= int(ckpt["closed"]) else None
        if seq < int(ckpt["replay"]):
            return False
        part.known.pop(sid, None)
        now = time.time()
        snap = ckpt.get("snap") or Session(sid, self.config, now).snapshot()
        session = Session.restore(sid, self.config, now, snap, ckpt["progress"])
        session.batched = self._batch_voice
        stream = self.recognizer.open_stream(session.params)
        live = _Live(session, stream, self.tel.session(sid), replay=self._tracker())
        live.partition = part.k
        live.v = int(ckpt["v"])
        live.replay_seq = live.persisted = int(ckpt["replay"])
        live.snap = snap
        live.handled = live.quiet_until = int(ckpt.get("handled") or 0)
        live.pump = self._start_pump(live)
        self.sessions[sid] = live
        self.stats.sessions_opened += 1
        self.tel.resumed.add(1, self.tel.attrs)
        log.info(
            "session %s resumed from stream sequence %d (transcript %d on)",
            sid,
            live.replay_seq,
            session.sequence,
        )
        return live

    async def _checkpoint_loop(self) -> None:
        """Each second: store the replay point of the sessions that moved on (each at most every
        CHECKPOINT_EVERY_S), then each partition's floor (the oldest stored replay point of its
        sessions), so replays stay short and the stream's audio can age out."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._store_checkpoints()
            except Exception as exc:
                log.warning("could not store checkpoints: %s", str(exc) or type(exc).__name__)

    async def _store_checkpoints(self) -> None:
        assert self.jsx is not None
        due = time.monotonic() - CHECKPOINT_EVERY_S
        moved = [
            live
            for live in list(self.sessions.values())
            if live.partition in self._parts
            and not self._parts[live.partition].releasing
            and live.replay_seq > live.persisted
            and live.persisted_at <= due
        ]

        async def store(live: _Live) -> None:
            replay = live.replay_seq
            assert self.jsx is not None
            if live.abandoned:
                return
            await self.jsx.put_checkpoint(live.session.id, self._checkpoint(live))
            live.persisted = max(live.persisted, replay)
            live.persisted_at = time.monotonic()

        await asyncio.gather(*(store(live) for live in moved))
        now = time.monotonic()
        for k, part in list(self._parts.items()):
            lives = self._partition_lives(part)
            floor = min((live.persisted for live in lives), default=part.last_seq + 1)
            if floor != part.floor or now - part.floor_at > FLOOR_RENEW_S:
                if self._parts.get(k) is not part or part.releasing:
                    continue  # given up meanwhile: its hand-over wrote the floor
                await self.jsx.put_floor(k, floor)
                part.floor, part.floor_at = floor, now

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
            await self._handle_message(msg.data, sid)

    async def _handle_message(
        self, data: bytes, sid: str, seq: int | None = None, partition: int = -1
    ) -> None:
        now = time.time()
        began = time.perf_counter()
        try:
            parsed = parse_inbound(data, sid, self.settings.stt_max_chunk_bytes)
            live = self.sessions.get(sid)
            if isinstance(parsed, ProtocolError):
                if live is None or not live.replaying:
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
                live = await self._open(sid, now, seq, partition)
                if live is None:
                    return
            if (
                isinstance(parsed, Chunk)
                and not live.replaying
                and await self._backlogged(live, now)
            ):
                return
            heard = live.session.queued
            await self._execute(live, live.session.handle(parsed, now))
            if live.session.awaiting_voice:
                self.voicebatch.want(live)
            elif live.voice_due:  # this message (an end, say) decided the earlier chunks' frames
                self._voice_done(live)
            if isinstance(parsed, Chunk):
                self.tel.chunks_received += 1
                self.tel.audio_received += (live.session.queued - heard) / 16000
                self.stats.chunk_handling.add(time.perf_counter() - began)
                if parsed.timestamp is not None:
                    if live.session.awaiting_voice:  # handled once the voice batcher decided it
                        live.voice_due.append(parsed.timestamp)
                    else:
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
        backlog = (live.stream.backlog() + live.session.unheard) * 2
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
            live,
        )
        return True

    async def _open(
        self, sid: str, now: float, seq: int | None = None, partition: int = -1
    ) -> _Live | None:
        if self.draining and not self.jetstream:  # jetstream: its partition is handed over
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
        session.batched = self._batch_voice
        stream = self.recognizer.open_stream(session.params)
        live = _Live(session, stream, self.tel.session(sid), replay=self._tracker())
        if seq is not None:  # jetstream: a replay of this session would start at this message
            live.partition = partition
            live.replay_seq = live.persisted = live.handled = seq
            live.snap = session.snapshot()
        live.pump = self._start_pump(live)
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
                    if self.config.service_endpointing:  # one span per turn
                        live.trace.utterance(live.session.turn_of(utterance))
                case Publish(message):
                    kind = message.get("type")
                    if kind == "interrupt":
                        self.tel.interrupts.add(1, {**self.tel.attrs, "stt.event": "interrupt"})
                    elif kind == "interrupt_cancelled":
                        self.tel.interrupts.add(
                            1,
                            {
                                **self.tel.attrs,
                                "stt.event": "cancelled",
                                "stt.reason": str(message.get("reason")),
                            },
                        )
                    with live.trace.publishing(message):
                        await self._publish(live.session.id, message, live)
                case EndUtterance(utterance, until):
                    live.stream.flush(utterance, until)
                    if self.config.service_endpointing:
                        live.trace.flushed(live.session.turn_of(utterance))
                case Measure(name, seconds, utterance):
                    live.trace.measured(name, seconds, utterance)
                case Speculate(utterance):
                    live.stream.speculate(utterance)
                case PredictTurn(utterance, seq, audio):
                    if self.turns is not None:
                        self.turns.ask((live, utterance, seq), audio)
                case Reconfigure(params):
                    live.stream.configure(params)
                case Close(reason):
                    log.info("session %s closing (%s)", live.session.id, reason)
                    live.close_reason = reason
                    self._ended[live.session.id] = time.time()
                    self._begin_close(live)

    async def _publish(self, sid: str, message: dict[str, Any], live: _Live | None = None) -> None:
        assert self.nc is not None
        live = live or self.sessions.get(sid)
        headers: dict[str, str] | None = None
        if live is not None and self.jetstream:
            if live.abandoned or (live.replaying and message.get("type") == "error"):
                return  # moved to another replica; or a replayed error, published before
            # what this session has published so far travels with the message itself
            headers = {CHECKPOINT_HEADER: encode_checkpoint(self._checkpoint(live))}
        subject = f"{self.settings.stt_output_subject}.{sid}"
        if headers is not None and live is not None and (live.held or not self._may_publish(live)):
            # fenced: another replica may own this session by now and publish it itself
            live.held.append((subject, encode(message), headers))
            return
        try:
            await self.nc.publish(subject, encode(message), headers=headers)
            if headers is not None and live is not None:
                live.persisted, live.persisted_at = live.replay_seq, time.monotonic()
            self.stats.published += 1
        except Exception as exc:  # closed connection during shutdown, or the pending buffer is full
            self.tel.dropped.add(1, {**self.tel.attrs, "stt.type": str(message.get("type"))})
            log.error("session %s: could not publish %s: %s", sid, message.get("type"), exc)

    def _begin_close(self, live: _Live) -> None:
        sid = live.session.id
        if self.sessions.get(sid) is live:
            del self.sessions[sid]
        part = self._parts.get(live.partition)
        if part is not None:  # its audio stays replayable until the close is recorded
            part.closing[sid] = live
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
                await self._publish(live.session.id, message, live)
            while live.held and not live.abandoned:  # fenced results go out first
                await asyncio.sleep(0.05)
            if self.jsx is not None and not live.abandoned and live.partition in self._parts:
                # a replay of this partition skips the session's messages up to its close
                mark = {"v": live.v + 1, "closed": live.handled}
                await self.jsx.put_checkpoint(live.session.id, mark)
                part = self._parts.get(live.partition)
                if part is not None:
                    part.known[live.session.id] = mark
        except Exception:
            log.exception("session %s: error while closing", live.session.id)
        finally:
            part = self._parts.get(live.partition)
            if part is not None and part.closing.get(live.session.id) is live:
                del part.closing[live.session.id]
        self.stats.sessions_closed += 1
        self.stats.interrupts += live.session.interrupts
        self.stats.cancelled_interrupts += live.session.cancelled_interrupts
        s = live.session
        live.trace.close(live.close_reason, s.samples_heard / 16000, s.sequence, s.interrupts)
        log.info(
            "session %s closed: %.1f s audio, %d transcripts, %d interrupts",
            s.id,
            s.samples_heard / 16000,
            s.sequence,
            s.interrupts,
        )

    def _voice_done(self, live: _Live) -> None:
        """The chunks whose frames waited for the voice batcher are handled: count their lag."""
        done = time.time()
        for sent in live.voice_due:
            self.stats.chunk_lag.add(done - sent)
        live.voice_due.clear()

    async def _turn_verdict(self, key: tuple[_Live, int, int], probability: float | None) -> None:
        """The end-of-turn model answered for a session's pause: it ends the turn, or waits."""
        live, utterance, seq = key
        if live.abandoned or live.session.closed:
            return
        with session_logging(live.session.id, live.trace.span):
            actions = live.session.turn_verdict(utterance, seq, probability, time.time())
            await self._execute(live, actions)

    async def _voice_ready(self, lives: list[_Live]) -> None:
        """The voice batcher decided these sessions' waiting frames: each goes on from there."""
        self.tel.vad_frames = self.voicebatch.stats.frames
        self.tel.vad_calls = self.voicebatch.stats.calls
        now = time.time()
        for live in lives:
            if live.abandoned or live.session.closed:
                if live.voice_due:
                    self._voice_done(live)
                continue
            try:
                with session_logging(live.session.id, live.trace.span):
                    await self._execute(live, live.session.voice_ready(now))
                if live.session.awaiting_voice:  # messages queued behind those frames brought more
                    self.voicebatch.want(live)
                elif live.voice_due:  # every chunk received so far is handled now
                    self._voice_done(live)
            except Exception:  # one broken session must not hold up the others' voices
                log.exception("session %s: internal error after voice detection", live.session.id)

    def _start_pump(self, live: _Live) -> asyncio.Task[None]:
        """The task that publishes a session's recognition events. An id reused right after its
        'end' publishes only once the earlier session's last finals are out: decodes run side by
        side, so the new session's could otherwise finish sooner."""
        sid = live.session.id
        return asyncio.create_task(self._pump(live, self._closing_tasks(sid)), name=f"pump-{sid}")

    async def _pump(self, live: _Live, after: list[asyncio.Task[None]]) -> None:
        bind_session(live.session.id, live.trace.span)
        if after:
            await asyncio.wait(after)
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
