"""Floods of warnings: the first of each kind in full, the rest in one summary line a window; and
through the real worker, a flood of bad messages that every sender still hears back about."""

from __future__ import annotations

import asyncio
import logging
import re

import jiwer
import pytest

from stt_service.commands.client import normalize_text
from stt_service.floods import FloodLog

from .speech import joined, utterance


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_each_kind_is_logged_first_then_summed_up_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    floods = FloodLog(logging.getLogger("t.floods"), window_s=10.0, first=3, clock=clock)
    with caplog.at_level(logging.WARNING, "t.floods"):
        for i in range(1000):  # 1,000 bad messages from 50 sessions in 5 s
            clock.t = i * 0.005
            floods.warning("invalid_msgpack", f"s{i % 50}", "session %s: bad", f"s{i % 50}")
        floods.warning("invalid_audio", "s7", "session %s: odd audio", "s7")  # another kind
        assert _lines(caplog, "t.floods") == [
            "session s0: bad",
            "session s1: bad",
            "session s2: bad",
            "session s7: odd audio",
        ]
        clock.t = 9.9
        floods.flush()  # the window is not over
        assert len(_lines(caplog, "t.floods")) == 4
        clock.t = 10.0
        floods.flush()
        assert _lines(caplog, "t.floods")[4:] == [
            "997 more invalid_msgpack from 50 sessions in the last 10 s"
        ]
        assert floods.suppressed == 997
        # a new window: the kind is logged in full again, and a quiet window says nothing
        floods.warning("invalid_msgpack", "s3", "session %s: bad", "s3")
        clock.t = 30.0
        floods.flush()
        assert _lines(caplog, "t.floods")[5:] == ["session s3: bad"]


def test_one_session_repeating_itself_and_errors_of_no_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    floods = FloodLog(logging.getLogger("t.floods2"), window_s=60.0, first=1, clock=clock)
    with caplog.at_level(logging.WARNING, "t.floods2"):
        for i in range(120):  # a password changed on the server: an error every reconnect
            clock.t = i * 0.5
            floods.warning("NATS errors (Authorization Violation)", None, "NATS: %s", "x")
        clock.t = 60.0
        floods.flush()
    assert _lines(caplog, "t.floods2") == [
        "NATS: x",
        "119 more NATS errors (Authorization Violation) in the last 60 s",
    ]


@pytest.mark.slow
async def test_a_flood_of_bad_messages_is_summed_up_and_every_sender_hears_of_it(
    service, caplog: pytest.LogCaptureFixture
) -> None:
    """2,000 bad messages from 100 senders while a healthy session talks: each sender gets an
    error for each message, the log holds a few lines and a summary that counts the rest, and
    the healthy session's words come through."""
    healthy = utterance("0870")
    senders = [f"flood-{i}" for i in range(100)]
    async with service() as h:
        stream = asyncio.create_task(h.stream("healthy-flood", joined([healthy]), speed=2.0))
        with caplog.at_level(logging.WARNING, "stt_service.runner.worker"):
            for _ in range(20):
                for sid in senders:
                    await h.nc.publish(f"ai.voice.stream.{sid}", b"\xc1not msgpack")
                await asyncio.sleep(0.01)
            res = await stream
            await h.wait_for(lambda: all(len(h.results(s).errors) == 20 for s in senders), 60)
            h.worker.floods.flush()  # (the clock says it too, once the window is over)
            h.worker.floods.window_s = 0.0
            h.worker.floods.flush()
    for sid in senders:
        assert {e["code"] for e in h.results(sid).errors} == {"invalid_msgpack"}
    lines = _lines(caplog, "stt_service.runner.worker")
    flood = [line for line in lines if "invalid_msgpack" in line]
    logged = [line for line in flood if line.startswith("session flood-")]
    summed = [re.match(r"([\d,]+) more invalid_msgpack from ([\d,]+) sessions", x) for x in flood]
    counted = sum(int(m.group(1).replace(",", "")) for m in summed if m)
    assert len(flood) <= 20, flood
    assert logged and counted and len(logged) + counted == 2000, flood
    assert len(res.finals) == 1
    wer = jiwer.wer(normalize_text(healthy.reference), normalize_text(res.text))
    assert wer <= 0.1, res.text
