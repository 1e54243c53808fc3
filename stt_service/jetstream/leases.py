"""JetStream mode's ownership: partition leases in a key-value bucket, and the plan that shares
the partitions evenly between the replicas alive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping

from nats.js.errors import KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


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


def worker_id() -> str:
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in host)[:40]
    return f"{safe}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


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
