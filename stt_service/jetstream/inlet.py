"""JetStream mode's way in: the partitions this replica leases, and failover between replicas.

For each partition it holds (:class:`~.leases.Leases`), an ordered consumer delivers the inbound
messages from the partition's floor to the session runner. Beside the runner it keeps, per
session (:class:`SessionReplay`, in :attr:`~..runner.inlet.Live.tag`), the replay point and its
checkpoint; it resumes a session another replica served from its checkpoint (replaying the
messages after it; errors published the first time are not sent again), stores checkpoints and
floors every second, holds a session's results while the partition's lease is in doubt, and on
drain hands its partitions over (checkpoints written first, so the next owner starts at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from ..protocol import encode
from ..runner.inlet import Live, Runner
from ..session import Session
from .checkpoints import store_checkpoints
from .leases import Leases
from .outbox import Outbox
from .replay import (
    CHECKPOINT_HEADER,
    Partition,
    ReplayTracker,
    SessionReplay,
    encode_checkpoint,
)
from .streams import JetStreamState

log = logging.getLogger(__name__)
REPLAY_LAG = 8000  # samples of silence a replay starts before the next utterance (0.5 s)


def _st(live: Live) -> SessionReplay:
    st: SessionReplay = live.tag
    return st


class JetStreamInlet:
    """``STT_MODE=jetstream``: see the module's docstring."""

    via = " through JetStream"
    hands_over = True

    def __init__(self) -> None:
        self._r: Runner | None = None
        self.jsx: JetStreamState | None = None
        self.leases: Leases | None = None
        self._parts: dict[int, Partition] = {}
        self._ckpt_task: asyncio.Task[None] | None = None
        self._outbox: Outbox | None = None
        self._abandoning: set[asyncio.Task[None]] = set()  # and partitions dropped

    @property
    def r(self) -> Runner:
        assert self._r is not None
        return self._r

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self, runner: Runner) -> None:
        assert runner.nc is not None
        self._r = runner
        runner.tel.observe(
            "stt.partitions.held",
            "{partition}",
            "session partitions this replica serves (jetstream mode)",
            lambda: float(len(self._parts)),
        )
        settings = runner.settings
        self.jsx = await JetStreamState.open(runner.nc, settings)
        self._outbox = Outbox(runner.nc, self.jsx)
        self.leases = Leases(
            self.jsx.leases,
            settings.stt_js_partitions,
            settings.stt_js_lease_seconds,
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
            settings.stt_js_max_age,
            settings.stt_js_max_bytes / 1024**3,
            layout.results,
            layout.leases,
            layout.state,
        )
        self.leases.start()
        self._ckpt_task = asyncio.create_task(self._checkpoint_loop(), name="checkpoints")

    async def drain(self) -> None:
        """Hand every partition over: the other replicas replay each session from its last
        checkpoint and go on; nothing is finalised early and the clients hear no error."""
        if self.leases is None:
            return
        log.info("draining: handing %d partition(s) to the other replicas", len(self._parts))
        try:
            await asyncio.wait_for(
                self.leases.stop(handoff=True), self.r.settings.stt_drain_timeout
            )
        except TimeoutError:
            log.error("hand-off timed out; the partitions move when their leases expire")

    async def stop(self) -> None:
        if self.leases is not None:
            await self.leases.stop(handoff=False)
        if self._ckpt_task is not None:
            self._ckpt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ckpt_task
            self._ckpt_task = None
        for live in list(self.r.sessions.values()):  # not handed over in time: the next owner
            self._abandon(live)  # replays it
        if self._abandoning:  # streams of sessions handed over: nothing of theirs is published
            await asyncio.wait(list(self._abandoning), timeout=5)

    # --- partitions -----------------------------------------------------------------------------
    def _tracker(self) -> ReplayTracker:
        # where the backend finds turns, the session learns one began only from its first
        # words: replay from further back, so a turn's start is never skipped
        return ReplayTracker(REPLAY_LAG if self.r.config.service_endpointing else 4 * REPLAY_LAG)

    def _load(self, k: int) -> tuple[int, int]:
        lives = [live for live in self.r.sessions.values() if _st(live).partition == k]
        return sum(not live.session.settled for live in lives), len(lives)

    async def _acquire(self, k: int) -> None:
        assert self.jsx is not None
        floor = await self.jsx.floor(k)
        if floor is None:  # never served (or idle past the state's lifetime): start now
            floor = await self.jsx.next_seq()
            await self.jsx.put_floor(k, floor)
        part = Partition(k, last_seq=floor - 1, floor=floor, floor_at=time.monotonic())
        self._parts[k] = part

        async def on_msg(msg: Msg) -> None:
            await self._on_message(part, msg)

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
                closing = [t for sid in part.closing for t in self.r.closing_tasks(sid)]
                if closing:  # their finals and closed-marks go out first, from here
                    await asyncio.wait(closing, timeout=self.r.settings.stt_drain_timeout / 2)
                # a closing session not done yet is replayed by the next owner
                lives = self._partition_lives(part)
                await asyncio.gather(
                    *(
                        self.jsx.put_checkpoint(live.session.id, self._checkpoint(live))
                        for live in lives
                    )
                )
                floor = min((_st(live).replay_seq for live in lives), default=part.last_seq + 1)
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

    def _partition_lives(self, part: Partition) -> list[Live]:
        lives = [live for live in self.r.sessions.values() if _st(live).partition == part.k]
        return lives + [live for live in part.closing.values() if not live.abandoned]

    def _abandon(self, live: Live) -> None:
        """Forget a session another replica now serves: publish nothing more for it, and close
        its recognizer stream without a final."""
        live.abandoned = True
        if live.tag is not None:
            _st(live).held.clear()
            _st(live).sent.clear()
        if self.r.sessions.get(live.session.id) is live:
            del self.r.sessions[live.session.id]
        if live.pump is not None:
            live.pump.cancel()
        live.trace.close("moved", live.session.samples_heard / 16000, live.session.sequence, 0)
        self._track(asyncio.create_task(live.stream.aclose(), name=f"abandon-{live.session.id}"))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._abandoning.add(task)
        task.add_done_callback(self._abandoning.discard)

    # --- inbound --------------------------------------------------------------------------------
    async def _on_message(self, part: Partition, msg: Msg) -> None:
        if self._parts.get(part.k) is not part or part.releasing:
            return  # being given up
        seq = msg.metadata.sequence.stream
        if seq <= part.last_seq:
            return  # seen before (an ordered consumer that restarted)
        part.last_seq = seq
        self.r.stats.messages += 1
        sid = msg.subject.rsplit(".", 1)[-1]
        live = self.r.sessions.get(sid)
        prior_v = 0  # a session reopened under an id used before: its checkpoints must win
        if live is None and sid in part.closing:
            # closed here moments ago (its closed-mark may not be stored yet): a new session,
            # or a message for one that has ended
            prior_v = _st(part.closing[sid]).v + 1
        elif live is None:
            try:
                resumed = await self._resume(part, sid, seq)
            except Exception as exc:
                # without the checkpoint the session cannot go on correctly: serve the partition
                # again from its floor (taken back, or by another replica)
                log.warning("partition %d: %s; serving it again from its floor", part.k, exc)
                if self.leases is not None and not part.releasing:
                    part.releasing = True
                    self._track(
                        asyncio.create_task(self.leases.drop(part.k), name=f"drop-{part.k}")
                    )
                return
            if resumed is False:
                return
            live = resumed if isinstance(resumed, Live) else None
        if live is not None:
            st = _st(live)
            point = st.replay.observe(seq, live.session)
            if point is not None:
                st.replay_seq, st.snap = point.seq, point.snapshot
            st.replaying = seq <= st.quiet_until
            st.handled = seq  # before handling: an 'end' closes the session meanwhile
        opened = live is None
        await self.r.handle(msg.data, sid, (part, seq))
        live = self.r.sessions.get(sid)
        if live is None:
            return
        st = _st(live)
        if opened:
            earlier = part.known.pop(sid, None)  # the closed-mark of a session of the same id
            st.v = max(prior_v, int(earlier["v"]) + 1 if earlier else 0)
        st.replaying = False
        if self._parts.get(part.k) is not part:
            self._abandon(live)  # the partition was given up while this message was handled

    def opened(self, live: Live, origin: object) -> None:
        assert isinstance(origin, tuple)  # (partition, stream sequence), from _on_message
        part, seq = origin  # a replay of this session would start at this message
        live.tag = SessionReplay(
            part.k,
            self._tracker(),
            replay_seq=seq,
            persisted=seq,
            handled=seq,
            snap=live.session.snapshot(),
        )

    def replaying(self, live: Live) -> bool:
        return live.tag is not None and _st(live).replaying

    async def _resume(self, part: Partition, sid: str, seq: int) -> Live | bool | None:
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
        st, snap, progress = SessionReplay.resumed(part.k, self._tracker(), ckpt)
        now = time.time()
        config = self.r.config
        snap = snap or Session(sid, config, now).snapshot()
        st.snap = snap
        live = self.r.add(Session.restore(sid, config, now, snap, progress))
        live.tag = st
        replay = st.replay_seq
        self.r.tel.resumed.add(1, self.r.tel.attrs)
        log.info(
            "session %s resumed from stream sequence %d (transcript %d on)",
            sid,
            replay,
            live.session.sequence,
        )
        return live

    # --- outbound -------------------------------------------------------------------------------
    def _may_publish(self, st: SessionReplay) -> bool:
        """A session's results go out only while its partition's lease is surely ours, and
        through a live connection (a reconnecting client would send them late, after a new
        owner may have published them again), once what the server missed is known (.outbox)."""
        assert self.r.nc is not None
        if self.leases is None or st.partition < 0:
            return True
        outbox_ready = self._outbox is None or not self._outbox.reconnected
        return self.r.nc.is_connected and self.leases.fresh(st.partition) and outbox_ready

    def _can_publish(self, live: Live) -> bool:
        return not live.abandoned and self._may_publish(_st(live))

    async def send(self, subject: str, message: dict[str, Any], live: Live | None) -> bool:
        nc = self.r.nc
        assert nc is not None
        if live is None or live.tag is None:
            await nc.publish(subject, encode(message))
            return True
        st = _st(live)
        if live.abandoned or (st.replaying and message.get("type") == "error"):
            return False  # moved to another replica; or a replayed error, published before
        # what this session has published so far travels with the message itself
        headers = {CHECKPOINT_HEADER: encode_checkpoint(self._checkpoint(live))}
        if st.held or not self._may_publish(st):
            # fenced: another replica may own this session by now and publish it itself
            st.held.append((subject, encode(message), headers))
            return False
        data = encode(message)
        await nc.publish(subject, data, headers=headers)
        st.sent.append((subject, data, headers))
        st.persisted, st.persisted_at = st.replay_seq, time.monotonic()
        return True

    def _lives(self) -> list[Live]:
        """The sessions this replica publishes for: those open and those closing."""
        closing = [live for part in self._parts.values() for live in part.closing.values()]
        return [live for live in (*self.r.sessions.values(), *closing) if not live.abandoned]

    async def _release_held(self) -> None:
        """After a renewal: publish, in order, what was held while the lease was in doubt; first
        what the server never received, if it went away (.outbox)."""
        assert self._outbox is not None
        lives = self._lives()
        try:
            await self._outbox.recover(_st(live) for live in lives)
        except Exception as exc:
            log.warning("could not look up the results stream: %s", exc)
        for live in lives:
            st = _st(live)
            had = bool(st.held)
            may = functools.partial(self._can_publish, live)
            self.r.stats.published += await self._outbox.release(st, live.session.id, may)
            if had and not st.held:
                st.persisted, st.persisted_at = st.replay_seq, time.monotonic()

    def closing(self, live: Live) -> None:
        part = self._parts.get(_st(live).partition)
        if part is not None:  # its audio stays replayable until the close is recorded
            part.closing[live.session.id] = live

    async def closed(self, live: Live, complete: bool) -> None:
        st = _st(live)
        try:
            if complete:
                while st.held and not live.abandoned:  # fenced results go out first
                    await asyncio.sleep(0.05)
                if self.jsx is not None and not live.abandoned and st.partition in self._parts:
                    # a replay of this partition skips the session's messages up to its close
                    mark = {"v": st.v + 1, "closed": st.handled}
                    await self.jsx.put_checkpoint(live.session.id, mark)
                    part = self._parts.get(st.partition)
                    if part is not None:
                        part.known[live.session.id] = mark
        finally:
            part = self._parts.get(st.partition)
            if part is not None and part.closing.get(live.session.id) is live:
                del part.closing[live.session.id]

    # --- checkpoints ----------------------------------------------------------------------------
    def _checkpoint(self, live: Live) -> dict[str, Any]:
        return _st(live).checkpoint(live.session.progress())

    async def _checkpoint_loop(self) -> None:
        """Each second: confirm what was published, then store the checkpoints and floors that
        are due (.checkpoints)."""
        while True:
            await asyncio.sleep(1.0)
            try:
                if self._outbox is not None:  # what was published in the last second arrived
                    await self._outbox.confirm(_st(live) for live in self._lives())
                assert self.jsx is not None
                await store_checkpoints(
                    self.jsx,
                    self.r.sessions.values(),
                    self._parts,
                    self._partition_lives,
                    self._checkpoint,
                )
            except Exception as exc:
                log.warning("could not store checkpoints: %s", str(exc) or type(exc).__name__)
