"""JetStream mode (``STT_MODE=jetstream``): many replicas, each session on exactly one of them.

The design, all of it on NATS itself:

- **Affinity.** Clients keep publishing plain core-NATS messages to ``{input}.{session}``. A stream
  (``STT_JS_STREAM``) captures them and, by a subject transform, stores each one under
  ``{stream}.{partition}.{session}``, where the server computes ``partition`` from the session id
  (``{{partition(N,1)}}``). Every message of a session lands in one partition, in order.
- **Ownership.** Replicas share the partitions through leases in a key-value bucket
  (``{stream}_leases``): ``p.{k}`` holds the owner's id and ``w.{id}`` says a replica is alive;
  both expire ``STT_JS_LEASE_SECONDS`` after their last renewal. Each replica holds about
  ``partitions / replicas`` of them (:func:`plan`); a new replica gets its share from the others,
  a dead one's leases expire and the survivors take them.
- **Consumption.** The owner reads each partition with an ordered consumer, starting from the
  partition's *floor*: the oldest message some live session may still need.
- **Checkpoints.** For every session the owner keeps a replay point: the inbound message after
  which nothing heard so far is unfinished (speech transcribed into a published final, or silence),
  with the session's state at that point. It is stored in a second bucket (``{stream}_state``,
  key ``s.{session}``) at most once per 5 s, and in a header (``Stt-Checkpoint``) on every message
  the session publishes, which a results stream (``{stream}_RESULTS``, the last message per
  session) keeps. So the newest checkpoint and "what was published" cannot disagree: they travel
  in one message. A new owner restores each session from the newer of the two, replays the
  inbound messages after its replay point, and the session core publishes none of what was
  already published (finals, interrupts); transcript numbering goes on where it stopped.
- **Retention.** Inbound audio is kept ``STT_JS_MAX_AGE`` seconds and ``STT_JS_MAX_BYTES`` at
  most; replay needs only the seconds since each session's last replay point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import (
    BadRequestError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from .config import Settings
from .session import Session

log = logging.getLogger(__name__)

CHECKPOINT_HEADER = "Stt-Checkpoint"
STATE_TTL_S = 3600.0  # session checkpoints and closed-session marks; floors are renewed sooner
FLOOR_RENEW_S = 600.0


class JetStreamSetupError(RuntimeError):
    """What JetStream mode needs and the server does not give; ``str()`` is one line."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Names of everything JetStream mode uses, from the settings."""

    stream: str
    partitions: int
    input_prefix: str
    output_prefix: str

    @classmethod
    def from_settings(cls, s: Settings) -> Layout:
        return cls(s.stt_js_stream, s.stt_js_partitions, s.stt_input_subject, s.stt_output_subject)

    @property
    def results(self) -> str:
        return f"{self.stream}_RESULTS"

    @property
    def leases(self) -> str:
        return f"{self.stream}_leases"

    @property
    def state(self) -> str:
        return f"{self.stream}_state"

    @property
    def transform(self) -> SubjectTransform:
        return SubjectTransform(
            src=f"{self.input_prefix}.*",
            dest=f"{self.stream}.{{{{partition({self.partitions},1)}}}}.{{{{wildcard(1)}}}}",
        )

    def partition_subject(self, k: int) -> str:
        return f"{self.stream}.{k}.*"


def partition_of(session_id: str, partitions: int) -> int:
    """The partition nats-server's ``partition(N,1)`` puts a session in (FNV-1a, 32 bit)."""
    h = 0x811C9DC5
    for b in session_id.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


def plan(
    me: str,
    counts: Mapping[str, int],
    owned: Collection[int],
    held: Collection[int],
    partitions: int,
    load: Callable[[int], tuple[int, int]] = lambda k: (0, 0),
) -> tuple[list[int], list[int]]:
    """Which partitions to try to take and which to give up, toward an even share.

    ``counts``: partitions held by each live replica (``me`` is counted as ``len(owned)``);
    ``held``: partitions with a lease (anyone's). Every replica ends with ``partitions //
    replicas`` or one more: one holding more than ``ceil(partitions / replicas)`` gives the
    excess up, one holding more than the floor gives one up while another holds less than it,
    and the rest take free partitions up to the ceiling. Partitions given up are the least
    disturbing: fewest sessions mid-speech, then fewest sessions (``load(k)`` -> (unsettled,
    sessions)). Free partitions are tried from a point that differs per replica, so replicas
    starting together rarely race for the same one.
    """
    others = {w: c for w, c in counts.items() if w != me}
    replicas = len(others) + 1
    base, target = partitions // replicas, math.ceil(partitions / replicas)
    give = 0
    if len(owned) > target:
        give = len(owned) - target
    elif len(owned) > base and any(c < base for c in others.values()):
        give = 1
    if give:
        return [], sorted(sorted(owned, key=lambda k: (*load(k), -k))[:give])
    start = zlib.crc32(me.encode()) % partitions
    free = sorted(
        (k for k in range(partitions) if k not in held), key=lambda k: (k - start) % partitions
    )
    return free[: target - len(owned)], []


@dataclass(frozen=True, slots=True)
class ReplayPoint:
    seq: int  # stream sequence of the inbound message a replay starts at
    heard: int  # session samples before it
    snapshot: dict[str, Any]  # the session just before it (Session.snapshot())


class ReplayTracker:
    """Where a replay of one session would start.

    Fed every inbound message before the session handles it. Candidates are messages that
    arrived while the session was idle (no utterance open), grouped in runs between utterances;
    a candidate is *valid* once every utterance begun before it has had its final. The replay
    point is the newest valid candidate with ``lag`` samples of silence after it, so a replay
    hears the same silence (and pre-roll) before the next utterance as the first time. When the
    newest gap was shorter than that, an older gap is used: the utterances after it are heard
    again, and the session core publishes nothing for them (their finals were published).
    """

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self._runs: list[list[ReplayPoint]] = []
        self._in_run = False

    def observe(self, seq: int, session: Session) -> ReplayPoint | None:
        """Note message ``seq``; return the replay point now (None: none valid yet)."""
        if session.idle:
            if not self._in_run:
                self._runs.append([])
                self._in_run = True
            run = self._runs[-1]
            run.append(ReplayPoint(seq, session.samples_heard, session.snapshot()))
            # keep the newest point at least ``lag`` before the run's end, and those after it
            while len(run) > 1 and run[1].heard <= run[-1].heard - self.lag:
                del run[0]
        else:
            self._in_run = False
        for i in range(len(self._runs) - 1, -1, -1):
            run = self._runs[i]
            long_enough = run[-1].heard - run[0].heard >= self.lag
            if (long_enough or i == 0) and session.finished_before(
                int(run[0].snapshot["next_utt"])
            ):
                del self._runs[:i]
                return run[0]
        return None


def worker_id() -> str:
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in host)[:40]
    return f"{safe}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def encode_checkpoint(ckpt: Mapping[str, Any]) -> str:
    return json.dumps(ckpt, separators=(",", ":"), ensure_ascii=True)


def decode_checkpoint(raw: bytes | str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("ignoring an unreadable session checkpoint")
        return None
    return value if isinstance(value, dict) and isinstance(value.get("v"), int) else None


class JetStreamState:
    """The streams and buckets of JetStream mode, created or checked by :meth:`open`."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, layout: Layout, leases: KeyValue, state: KeyValue
    ) -> None:
        self.nc = nc
        self.js = js
        self.layout = layout
        self.leases = leases
        self.state = state

    @classmethod
    async def open(cls, nc: NATS, settings: Settings) -> JetStreamState:
        layout = Layout.from_settings(settings)
        js = nc.jetstream(timeout=5.0)
        try:
            await js.account_info()
        except (ServiceUnavailableError, NotFoundError):
            raise JetStreamSetupError(
                "STT_MODE=jetstream: JetStream is not enabled on the NATS server (start it "
                "with -js, or add 'jetstream {}' to its configuration), or not for this "
                "account; use STT_MODE=core for one replica without it"
            ) from None
        except Exception as exc:
            raise JetStreamSetupError(
                f"STT_MODE=jetstream: could not reach JetStream: {str(exc) or type(exc).__name__}"
            ) from None
        replicas = settings.stt_js_replicas
        audio = StreamConfig(
            name=layout.stream,
            description="stt-service inbound audio, kept for replay after a failover",
            subjects=[f"{layout.input_prefix}.*"],
            subject_transform=layout.transform,
            max_age=settings.stt_js_max_age,
            max_bytes=settings.stt_js_max_bytes,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE,
            num_replicas=replicas,
            allow_direct=True,
        )
        results = StreamConfig(
            name=layout.results,
            description="stt-service: the last message published per session, with its checkpoint",
            subjects=[f"{layout.output_prefix}.*"],
            max_msgs_per_subject=1,
            max_age=STATE_TTL_S,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE,
            num_replicas=replicas,
            allow_direct=True,
        )
        leases = await _ensure_bucket(
            js, layout.leases, settings.stt_js_lease_seconds, replicas, "partition leases"
        )
        state = await _ensure_bucket(js, layout.state, STATE_TTL_S, replicas, "session checkpoints")
        jsx = cls(nc, js, layout, leases, state)
        if await _ensure_stream(js, audio, layout, check_transform=True):
            # a new stream: its every message is for the replicas, even those sent before one
            # of them holds the partition (a partition without a floor starts at the end)
            for k in range(layout.partitions):
                await jsx.put_floor(k, 1)
        await _ensure_stream(js, results, layout, check_transform=False)
        return jsx

    # --- checkpoints -------------------------------------------------------------------------
    async def session_checkpoint(self, session_id: str) -> dict[str, Any] | None:
        """The newest checkpoint of a session: its key, or its last published message's header."""
        stored: dict[str, Any] | None = None
        with contextlib.suppress(NotFoundError):  # no key, or deleted
            entry = await self.state.get(f"s.{session_id}")
            stored = decode_checkpoint(entry.value)
        published: dict[str, Any] | None = None
        subject = f"{self.layout.output_prefix}.{session_id}"
        with contextlib.suppress(NotFoundError):
            msg = await self.js.get_last_msg(self.layout.results, subject, direct=True)
            published = decode_checkpoint((msg.headers or {}).get(CHECKPOINT_HEADER))
        found = [c for c in (stored, published) if c is not None]
        return max(found, key=lambda c: int(c["v"])) if found else None

    async def put_checkpoint(self, session_id: str, ckpt: Mapping[str, Any]) -> None:
        await self.state.put(f"s.{session_id}", encode_checkpoint(ckpt).encode())

    async def floor(self, k: int) -> int | None:
        try:
            entry = await self.state.get(f"p.{k}")
        except NotFoundError:
            return None
        return int(entry.value or b"0") or None

    async def put_floor(self, k: int, seq: int) -> None:
        await self.state.put(f"p.{k}", str(seq).encode())

    async def next_seq(self) -> int:
        """The stream sequence the next inbound message will get."""
        info = await self.js.stream_info(self.layout.stream)
        return int(info.state.last_seq) + 1


async def _ensure_stream(
    js: JetStreamContext, want: StreamConfig, layout: Layout, *, check_transform: bool
) -> bool:
    """Create the stream (True), or check and update the existing one (False)."""
    assert want.name is not None
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        try:
            await js.add_stream(want)
        except BadRequestError as exc:
            raise JetStreamSetupError(
                f"STT_MODE=jetstream: could not create stream {want.name}: {exc.description} "
                "(another stream may already hold these subjects)"
            ) from None
        log.info("created JetStream stream %s", want.name)
        return True
    have = info.config
    if check_transform:
        got, expected = have.subject_transform, layout.transform
        if got is None or (got.src, got.dest) != (expected.src, expected.dest):
            raise JetStreamSetupError(
                f"STT_MODE=jetstream: stream {want.name} exists with another layout "
                f"(transform {got.dest if got else None!r}, expected {expected.dest!r}): "
                "STT_JS_PARTITIONS or STT_INPUT_SUBJECT changed; delete the stream while no "
                "session is live to change them"
            )
    changed = (have.max_age, have.max_bytes) != (want.max_age, want.max_bytes)
    if changed:
        have.max_age, have.max_bytes = want.max_age, want.max_bytes
        await js.update_stream(have)
        log.info(
            "stream %s: retention now %g s / %d bytes", want.name, want.max_age, want.max_bytes
        )
    return False


async def _ensure_bucket(
    js: JetStreamContext, name: str, ttl: float, replicas: int, what: str
) -> KeyValue:
    try:
        kv = await js.key_value(name)
    except (NotFoundError, BadRequestError):
        kv = await js.create_key_value(
            KeyValueConfig(
                bucket=name,
                description=f"stt-service {what}",
                history=1,
                ttl=ttl,
                storage=StorageType.FILE,
                replicas=replicas,
            )
        )
        log.info("created key-value bucket %s", name)
        return kv
    status = await kv.status()
    if status.ttl is not None and abs(status.ttl - ttl) > 0.01:
        raise JetStreamSetupError(
            f"STT_MODE=jetstream: bucket {name} keeps keys {status.ttl:g} s, this replica "
            f"expects {ttl:g} s (STT_JS_LEASE_SECONDS differs between replicas?); give all "
            "replicas the same value, or delete the bucket while no replica runs"
        )
    return kv


async def lease_table(leases: KeyValue) -> tuple[dict[int, str], set[str]]:
    """The leases now: partition -> the replica holding it, and the replicas alive."""
    try:
        keys = await leases.keys()
    except NoKeysError:
        return {}, set()
    owners: dict[int, str] = {}
    for key in keys:
        if key.startswith("p."):
            with contextlib.suppress(NotFoundError):  # given up meanwhile
                owners[int(key[2:])] = ((await leases.get(key)).value or b"").decode()
    return owners, {key[2:] for key in keys if key.startswith("w.")}


async def partition_owners(leases: KeyValue) -> dict[str, int]:
    """How many partitions each replica holds now (replica id -> count), from the leases."""
    owners, _ = await lease_table(leases)
    return dict(Counter(owners.values()))


class Leases:
    """This replica's share of the partitions.

    Two tasks: one renews the leases held (and says this replica is alive) every quarter of the
    lease time, each renewal bounded by that quarter, and declares a partition lost when its
    renewal is older than three quarters of the lease time (before the server lets another replica
    take it); the other moves toward an even share (:func:`plan`). Renewal goes on while
    partitions are being given up, so a slow hand-over never costs the other leases.

    ``on_acquire(k)`` starts consuming a partition just leased; ``on_release(k, handoff)`` stops
    it: with ``handoff`` (giving it up, or draining) checkpoints are written first and the lease
    is then deleted, so the next owner starts at once; without (the lease was lost) nothing is
    written, as another replica may own it already.
    """

    def __init__(
        self,
        kv: KeyValue,
        partitions: int,
        ttl: float,
        on_acquire: Callable[[int], Awaitable[None]],
        on_release: Callable[[int, bool], Awaitable[None]],
        load: Callable[[int], tuple[int, int]],
        me: str | None = None,
        on_renewed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.kv = kv
        self._on_renewed = on_renewed
        self.me = me or worker_id()
        self.partitions = partitions
        self.ttl = ttl
        self.interval = ttl / 4
        self.owned: dict[int, int] = {}  # partition -> revision of our lease
        self._renewed: dict[int, float] = {}
        self._on_acquire = on_acquire
        self._on_release = on_release
        self._load = load
        self._releasing: set[int] = set()
        self._would_give = False  # the last look at the leases found partitions to give up
        self._tasks: list[asyncio.Task[None]] = []
        self._warned: set[str] = set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.renew, "renew"), name="lease-renewal"),
            asyncio.create_task(self._every(self.rebalance, "share"), name="lease-sharing"),
        ]

    async def _every(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        # renew first, to be seen; look for free partitions at least twice a second: a dead
        # replica's partitions are taken soon after its leases expire
        every = min(self.interval, 0.5) if what == "share" else self.interval
        await asyncio.sleep(every if what == "share" else 0)
        while True:
            began = time.monotonic()
            try:
                await step()
                self._warned.discard(what)
            except Exception as exc:
                if what not in self._warned:  # once per outage, not every cycle
                    log.warning("partition leases (%s): %s", what, str(exc) or type(exc).__name__)
                    self._warned.add(what)
            await asyncio.sleep(max(0.0, every - (time.monotonic() - began)))

    def fresh(self, k: int) -> bool:
        """Whether this replica surely holds partition ``k`` now: renewed within half the lease
        time, so no other replica can have taken it. Results are published only then."""
        return k in self.owned and time.monotonic() - self._renewed.get(k, 0.0) < self.ttl / 2

    async def renew(self) -> None:
        renewed = False
        for k, rev in list(self.owned.items()):
            try:
                try:
                    new = await asyncio.wait_for(
                        self.kv.update(f"p.{k}", self.me.encode(), last=rev), self.interval
                    )
                except KeyWrongLastSequenceError:
                    # an earlier renewal that timed out here may have reached the server: if the
                    # lease is still ours, carry on from its revision instead of dropping it
                    new = await asyncio.wait_for(self._still_mine(k), self.interval)
                if k in self.owned:
                    self.owned[k] = new
                    self._renewed[k] = time.monotonic()
                    renewed = True
            except (KeyWrongLastSequenceError, NotFoundError):
                await self._lost(k, "another replica holds it now")
            except Exception:
                if time.monotonic() - self._renewed.get(k, 0.0) > self.ttl * 0.75:
                    await self._lost(k, "could not renew it in time")
        if renewed and self._on_renewed is not None:
            await self._on_renewed()  # results held while the lease was in doubt can go now
        await asyncio.wait_for(self.kv.put(f"w.{self.me}", b"1"), self.interval)

    async def _still_mine(self, k: int) -> int:
        """Renew partition ``k``'s lease from its current revision if this replica still holds
        it; KeyWrongLastSequenceError if another one does."""
        entry = await self.kv.get(f"p.{k}")
        if entry.value != self.me.encode() or entry.revision is None:
            raise KeyWrongLastSequenceError()
        return await self.kv.update(f"p.{k}", self.me.encode(), last=entry.revision)

    async def rebalance(self) -> None:
        """Move toward an even share of the partitions."""
        # counted from the leases themselves: a replica's own count could be a cycle old
        owners, alive = await lease_table(self.kv)
        counts = {w: 0 for w in alive | set(owners.values()) if w != self.me}
        for owner in owners.values():
            if owner in counts:
                counts[owner] += 1
        held = set(owners)
        mine = [k for k in self.owned if k not in self._releasing]
        take, give_up = plan(self.me, counts, mine, held, self.partitions, self._load)
        # Giving a partition up moves its sessions, so it waits for a second look, half a second
        # later: one read of the leases can come up a partition short (a balanced replica once
        # gave one up that way, with no lease lost anywhere); a real imbalance is still there.
        would_give_before, self._would_give = self._would_give, bool(give_up)
        if not would_give_before:
            give_up = []
        for k in give_up:
            await self.release(k)
        taken = []
        for k in take:
            try:
                rev = await self.kv.create(f"p.{k}", self.me.encode())
            except KeyWrongLastSequenceError:
                continue  # another replica was quicker
            self.owned[k] = rev
            self._renewed[k] = time.monotonic()
            try:
                await self._on_acquire(k)
            except Exception:
                log.exception("partition %d: could not start consuming it; giving it back", k)
                await self._free(k)
                continue
            taken.append(k)
        if taken or give_up:
            log.info(
                "partitions: took %s, gave up %s; holding %d of %d (%d replicas; the others "
                "hold %s)",
                taken or "none",
                give_up or "none",
                len(self.owned),
                self.partitions,
                len(counts) + 1,
                ", ".join(str(c) for c in sorted(counts.values())) or "none",
            )

    async def release(self, k: int) -> None:
        """Give a partition up: checkpoint its sessions, then free the lease (renewed meanwhile)."""
        self._releasing.add(k)
        try:
            await self._on_release(k, True)
        finally:
            await self._free(k)

    async def _free(self, k: int) -> None:
        rev = self.owned.pop(k, None)
        self._releasing.discard(k)
        if rev is not None:  # only our own lease: never one another replica took meanwhile
            with contextlib.suppress(Exception):
                await self.kv.delete(f"p.{k}", last=rev)

    async def drop(self, k: int) -> None:
        """Stop serving a partition without a hand-over and free its lease: it is served again
        from its floor (by this replica or another) as after a failover."""
        if k not in self.owned:
            return
        self._releasing.add(k)
        try:
            await self._on_release(k, False)
        finally:
            await self._free(k)

    async def _lost(self, k: int, why: str) -> None:
        if self.owned.pop(k, None) is None:
            return
        log.warning("partition %d lost: %s; its sessions move to the new owner", k, why)
        await self._on_release(k, False)

    async def stop(self, handoff: bool = True) -> None:
        """Stop sharing; with ``handoff``, give every partition up (all at once, renewing them
        meanwhile) for the others to take. Then stop renewing."""
        for task in self._tasks[1:]:
            task.cancel()
        if handoff and self.owned:
            results = await asyncio.gather(
                *(self.release(k) for k in sorted(self.owned)), return_exceptions=True
            )
            for r in results:
                if isinstance(r, BaseException):
                    log.error("hand-over failed: %s", r)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.kv.delete(f"w.{self.me}")
