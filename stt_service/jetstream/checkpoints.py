"""JetStream mode's stored checkpoints: each second, the replay point of every session that moved
on (each at most every :data:`CHECKPOINT_EVERY_S`), then each partition's floor (the oldest stored
replay point of its sessions), so replays stay short and the stream's audio can age out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .replay import Partition, SessionReplay
from .streams import FLOOR_RENEW_S, JetStreamState

if TYPE_CHECKING:
    from ..runner.inlet import Live

CHECKPOINT_EVERY_S = 5.0  # a session's replay point is stored at most this often (and with
# every message it publishes): a replay is at most this much longer, the writes 5x fewer


def _st(live: Live) -> SessionReplay:
    st: SessionReplay = live.tag
    return st


async def store_checkpoints(
    jsx: JetStreamState,
    sessions: Iterable[Live],
    parts: dict[int, Partition],
    lives_of: Callable[[Partition], list[Live]],
    checkpoint: Callable[[Live], dict[str, Any]],
) -> None:
    """Store the checkpoints that are due, then the floors that changed (see the module)."""
    due = time.monotonic() - CHECKPOINT_EVERY_S
    moved = []
    for live in list(sessions):
        st = _st(live)
        part = parts.get(st.partition)
        if part is None or part.releasing:
            continue
        if st.replay_seq > st.persisted and st.persisted_at <= due:
            moved.append(live)

    async def store(live: Live) -> None:
        st = _st(live)
        replay = st.replay_seq
        if live.abandoned:
            return
        await jsx.put_checkpoint(live.session.id, checkpoint(live))
        st.persisted = max(st.persisted, replay)
        st.persisted_at = time.monotonic()

    await asyncio.gather(*(store(live) for live in moved))
    now = time.monotonic()
    for k, part in list(parts.items()):
        floor = min((_st(live).persisted for live in lives_of(part)), default=part.last_seq + 1)
        if floor != part.floor or now - part.floor_at > FLOOR_RENEW_S:
            if parts.get(k) is not part or part.releasing:
                continue  # given up meanwhile: its hand-over wrote the floor
            await jsx.put_floor(k, floor)
            part.floor, part.floor_at = floor, now
