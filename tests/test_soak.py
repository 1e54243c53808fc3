"""A short soak: hundreds of sessions opened and closed in waves through the real worker, every
way a session can end (``bench/soak.py``'s five), and nothing the worker keeps grows from one
wave to the next (counts, not timings: the hour-long run with memory is ``bench/soak.py``)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench.soak import KINDS, held, one

from .speech import pcm16, silence, utterance

pytestmark = pytest.mark.slow

WAVES = 6
PER_WAVE = 30  # sessions at once
IDLE_S = 1.0  # STT_SESSION_IDLE_TIMEOUT: abandoned sessions close after this


async def test_hundreds_of_sessions_in_waves_leave_nothing_behind(service) -> None:
    u = utterance("0870")
    audio = pcm16(np.concatenate([silence(0.2), u.samples, silence(0.5)]))
    seen: list[dict[str, int]] = []
    async with service(stt_session_idle_timeout=IDLE_S) as h:
        subject = h.settings.stt_input_subject
        for wave in range(WAVES):
            sids = [f"soak-{wave}-{i}" for i in range(PER_WAVE)]
            await asyncio.gather(
                *(one(h.nc, subject, sid, i % len(KINDS), audio, 4.0) for i, sid in enumerate(sids))
            )
            # every session of the wave closed, and the ids of ended ones forgotten
            await h.wait_for(lambda: not h.worker.sessions and not h.worker._closing, 60)
            await asyncio.sleep(IDLE_S + 0.5)
            await h.wait_for(lambda: not h.worker.limits._ended, 10)
            seen.append(held(h.worker))
            finals = sum(1 for sid in sids if h.results(sid).finals)
            assert finals >= PER_WAVE * 3 // 5, f"wave {wave}: {finals} sessions with a final"
            errors = {e["code"] for sid in sids[2::5] for e in h.results(sid).errors}
            assert {"invalid_msgpack", "invalid_audio"} <= errors, errors  # the bad messages
        opened, closed = h.worker.stats.sessions_opened, h.worker.stats.sessions_closed
    warm, last = seen[1], seen[-1]
    print("held after each wave:", *seen, sep="\n  ")
    assert opened == closed == WAVES * PER_WAVE
    for table in ("sessions", "closing", "limits.ended", "voice.waiting", "turns.waiting"):
        assert last[table] == 0, (table, seen)
    assert last["tasks"] <= warm["tasks"], seen
    assert last["fds"] <= warm["fds"] + 2, seen
    assert last["threads"] <= warm["threads"], seen
