"""Every per-session limit hit once, through a real worker: an ``error`` to the client, no crash,
other sessions undisturbed, nothing accepted dropped. (``STT_MAX_CHUNK_BYTES`` and
``STT_MAX_SESSIONS`` are hit in test_service.py and test_protocol.py.)"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from stt_service.commands.client import normalize_text

from .speech import joined, pcm16, silence, utterance, utterances

pytestmark = pytest.mark.slow


async def test_session_duration_limit_finalises_then_closes(service) -> None:
    u = utterance("0880")  # "he was not an ill disposed young man" (about 3 s)
    async with service(stt_max_session_seconds=2.0, stt_chunk_timeout=5.0) as h:
        # real time, no end: the 2 s limit falls in the middle of the sentence
        await h.stream("long-1", pcm16(u.samples), speed=1.0, send_end=False, wait=False)
        other = asyncio.create_task(h.stream("short-1", joined([u]), speed=4.0))
        await h.wait_closed("long-1", timeout=30)
        res = h.results("long-1")
        short = await other
    codes = [e["code"] for e in res.errors]
    assert codes[0] == "session_too_long", codes
    assert "STT_MAX_SESSION_SECONDS" in res.errors[0]["message"]
    # the client kept streaming: it is told, chunk by chunk, that the session has ended
    assert set(codes[1:]) <= {"unknown_session"}
    # the speech heard before the limit was still transcribed
    assert len(res.finals) == 1
    assert normalize_text(res.finals[0]["transcript"]).startswith("he was")
    # a session under the limit is not touched
    assert not short.errors and len(short.finals) == 1


async def test_buffered_audio_limit_refuses_chunks_and_keeps_the_session(service) -> None:
    """Audio sent far faster than real time piles up finals waiting for the model; past 1 s of
    waiting audio, chunks are refused with ``backend_overloaded`` (never silently dropped) and
    the session goes on once the model catches up."""
    parts = list(utterances())
    burst = joined(parts, gap_s=1.0)  # five sentences, each ended by the VAD
    async with service(stt_max_buffered_audio_bytes=32_000, stt_partial_interval=0.0) as h:
        await h.stream("burst-1", burst, speed=0, send_end=False, wait=False)
        await h.wait_for(lambda: bool(h.results("burst-1").errors), timeout=30)
        worker_live = h.worker.sessions.get("burst-1")
        assert worker_live is not None, "the session was closed instead of refusing chunks"
        # wait until the model caught up with what it accepted, then speak again
        await h.wait_for(lambda: worker_live.stream.backlog() == 0, timeout=60)
        late = utterance("0880")
        await h.stream("burst-1", joined([late]), speed=4.0, send_start=False)
        res = h.results("burst-1")
    codes = {e["code"] for e in res.errors}
    assert codes == {"backend_overloaded"}, res.errors
    assert "STT_MAX_BUFFERED_AUDIO_BYTES" in res.errors[0]["message"]
    # the first sentence was accepted whole and transcribed; the last one, sent after the
    # backlog cleared, too
    first = normalize_text(res.finals[0]["transcript"])
    assert first.split()[:3] == normalize_text(parts[0].reference).split()[:3], res.finals
    assert "young man" in normalize_text(res.finals[-1]["transcript"])
    assert h.worker.stats.refused_chunks == len(res.errors)


async def test_idle_and_duration_limits_do_not_disturb_a_busy_worker(service) -> None:
    """Many short sessions hitting the duration limit together: each gets its error, none
    crashes the worker, which then serves a new session normally."""
    async with service(stt_max_session_seconds=0.5) as h:
        tone = pcm16(np.concatenate([silence(1.5)]))
        await asyncio.gather(
            *(h.stream(f"many-{i}", tone, speed=1.0, send_end=False, wait=False) for i in range(8))
        )
        await h.wait_for(lambda: all(h.results(f"many-{i}").errors for i in range(8)), timeout=10)
        assert all(h.results(f"many-{i}").errors[0]["code"] == "session_too_long" for i in range(8))
    async with service() as h:
        res = await h.stream("after-1", joined([utterance("0880")]))
    assert len(res.finals) == 1 and not res.errors
