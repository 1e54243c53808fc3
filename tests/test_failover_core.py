"""Failover bookkeeping without I/O: replay points, restore, and what a restored session must not
publish again; the partition plan; the partition hash against a real nats-server."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nats
import numpy as np
import pytest
from nats.js.api import StreamConfig

from stt_service.backends.base import RecognitionEvent
from stt_service.bus.embedded import EmbeddedNats
from stt_service.jetstream import Layout, ReplayTracker, partition_of, plan
from stt_service.protocol import Inbound, ProtocolError, parse_inbound
from stt_service.session import (
    EndUtterance,
    Progress,
    Publish,
    SendAudio,
    Session,
    SessionConfig,
    Snapshot,
)

from .speech import silence, utterance

SID = "fail-1"
T0 = 1_700_000_000.0
LAG = 8000


def inbound(obj: dict[str, Any]) -> Inbound:
    parsed = parse_inbound(msgpack.packb(obj, use_bin_type=True), SID, 512 * 1024)
    assert not isinstance(parsed, ProtocolError)
    return parsed


def conversation(state: str = "listening") -> list[tuple[int, Inbound]]:
    """Stream sequence numbers and messages: start, three utterances in 100 ms chunks, end."""
    audio = np.concatenate(
        [
            silence(0.6),
            utterance("0880").samples,
            silence(1.4),
            utterance("0930").samples,
            silence(1.0),  # a short gap: the previous final is still pending when speech resumes
            utterance("0890").samples,
            silence(1.5),
        ]
    )
    msgs: list[Inbound] = [inbound({"type": "start", "state": state, "speaker_id": "ann"})]
    msgs += [
        inbound({"type": "chunk", "audio": audio[i : i + 1600].tobytes()})
        for i in range(0, audio.size, 1600)
    ]
    msgs.append(inbound({"type": "end"}))
    return [(100 + i, m) for i, m in enumerate(msgs)]


@dataclass
class Recognizer:
    """Answers like a recognizer: a partial once an utterance has 1 s of audio, and its final
    ``delay`` messages after the utterance ends; the text names the audio it was given."""

    delay: int = 4
    spans: dict[int, list[int]] = field(default_factory=dict)
    partial_sent: set[int] = field(default_factory=set)
    due: list[tuple[int, int]] = field(default_factory=list)  # (deliver at seq, utterance)

    def take(self, actions: list[Any], seq: int) -> list[RecognitionEvent]:
        events = []
        for a in actions:
            if isinstance(a, SendAudio):
                span = self.spans.setdefault(a.utterance, [a.offset, a.offset])
                span[1] = a.offset + a.samples.size
                if span[1] - span[0] >= 16000 and a.utterance not in self.partial_sent:
                    self.partial_sent.add(a.utterance)
                    events.append(self.event(a.utterance, False))
            elif isinstance(a, EndUtterance):
                self.due.append((seq + self.delay, a.utterance))
        return events

    def finals_due(self, seq: int) -> list[RecognitionEvent]:
        ready = [u for at, u in self.due if at <= seq]
        self.due = [(at, u) for at, u in self.due if at > seq]
        return [self.event(u, True) for u in ready]

    def event(self, u: int, final: bool) -> RecognitionEvent:
        a, b = self.spans[u]
        return RecognitionEvent(u, f"audio {a // 480} to {b // 480}", final, a / 16000, b / 16000)


def run(
    session: Session,
    messages: list[tuple[int, Inbound]],
    *,
    start_at: int = 0,
    stop_after: int | None = None,
    tracker: ReplayTracker | None = None,
) -> tuple[list[dict[str, Any]], ReplayTracker]:
    """Feed messages from ``start_at`` (the stream position) through the session and a
    recognizer; returns what the session published, and its replay tracker."""
    tracker = tracker or ReplayTracker(LAG)
    rec = Recognizer()
    out: list[dict[str, Any]] = []
    for seq, m in messages:
        if seq < start_at:
            continue
        now = T0 + seq * 0.1
        tracker.observe(seq, session)
        actions = session.handle(m, now)
        events = rec.take(actions, seq) + rec.finals_due(seq)
        for ev in events:
            actions += session.on_event(ev, now)
        out += [a.message for a in actions if isinstance(a, Publish)]
        if stop_after is not None and seq >= stop_after:
            break
    for ev in rec.finals_due(10**9):  # what the recognizer still owes at the end
        out += [a.message for a in session.on_event(ev, T0) if isinstance(a, Publish)]
    return out, tracker


def finals(published: list[dict[str, Any]]) -> list[str]:
    return [m["transcript"] for m in published if m.get("is_final")]


@pytest.mark.parametrize("crash_after", [110, 150, 178, 186, 195, 230, 262])
def test_a_restored_session_publishes_each_final_once_and_numbers_on(crash_after: int) -> None:
    messages = conversation()
    calm, _ = run(Session(SID, SessionConfig(), T0), messages)
    assert len(finals(calm)) == 3

    # the first owner, until it dies after message ``crash_after``; what it had published
    first = Session(SID, SessionConfig(), T0)
    before, tracker = run(first, messages, stop_after=crash_after)
    point = tracker.observe(crash_after + 1, first)  # the newest valid replay point
    assert point is not None and point.seq <= crash_after + 1
    progress = first.progress()

    # the next owner: restored from the checkpoint, replays the stream from its replay point
    second = Session.restore(SID, SessionConfig(), T0, point.snapshot, progress)
    after, _ = run(second, messages, start_at=point.seq)

    seen = before + after
    transcripts = [m for m in seen if m["type"] == "transcript"]
    assert [m["sequence"] for m in transcripts] == list(range(len(transcripts)))
    # the same utterances, cut at the same samples, each final once
    assert finals(seen) == finals(calm)
    assert all(m["speaker_id"] == "ann" for m in transcripts)


# the keys of a checkpoint's snapshot and progress as every version of the service has written
# them: a replica of another version must read what this one stores (a rolling upgrade)
SNAPSHOT_KEYS = {
    "heard",
    "pending",
    "next_utt",
    "state",
    "speaker",
    "params",
    "rate",
    "channels",
    "explicit",
    "audio",
    "opened_at",
    "chunks",
}
PROGRESS_KEYS = {"sequence", "finished", "interrupt_at", "interrupts", "final_end", "turn"}


def test_a_checkpoint_read_back_from_json_restores_the_same_session() -> None:
    """What a new owner reads is the checkpoint's JSON text: restored from it, the session
    publishes what it would have published restored from the objects themselves."""
    messages = conversation()
    calm, _ = run(Session(SID, SessionConfig(), T0), messages)
    first = Session(SID, SessionConfig(), T0)
    before, tracker = run(first, messages, stop_after=195)
    point = tracker.observe(196, first)
    assert point is not None
    snap, progress = point.snapshot.to_json(), first.progress().to_json()
    assert set(snap) == SNAPSHOT_KEYS and set(progress) == PROGRESS_KEYS
    stored = json.loads(json.dumps({"snap": snap, "progress": progress}))
    assert Snapshot.from_json(stored["snap"]) == point.snapshot
    assert Progress.from_json(stored["progress"]) == first.progress()

    direct = Session.restore(SID, SessionConfig(), T0, point.snapshot, first.progress())
    read_back = Session.restore(
        SID,
        SessionConfig(),
        T0,
        Snapshot.from_json(stored["snap"]),
        Progress.from_json(stored["progress"]),
    )
    out_direct, _ = run(direct, messages, start_at=point.seq)
    out_read, _ = run(read_back, messages, start_at=point.seq)
    assert finals(out_read) == finals(out_direct)
    assert finals(before + out_read) == finals(calm)  # each final once, none lost


def test_a_replay_starts_in_the_silence_before_an_utterance() -> None:
    messages = conversation()
    s = Session(SID, SessionConfig(), T0)
    tracker = ReplayTracker(LAG)
    rec = Recognizer()
    points = {}
    for seq, m in messages:
        points[seq] = tracker.observe(seq, s)
        actions = s.handle(m, T0 + seq * 0.1)
        for ev in rec.take(actions, seq) + rec.finals_due(seq):
            s.on_event(ev, T0)
    # in each utterance, the replay point lies after the previous one and before the first
    # sample of its own (its pre-roll), so a replay fills the pre-roll again
    for seq, u in ((170, 1), (230, 2)):
        p = points[seq]
        assert p is not None and p.snapshot.next_utterance == u
        assert rec.spans[u - 1][1] <= p.heard <= rec.spans[u][0]
    # at the end, after the last final: in the trailing silence
    p = points[messages[-1][0]]
    assert p is not None and p.snapshot.next_utterance == 3


def test_interrupts_are_not_published_again_after_a_restore() -> None:
    messages = conversation(state="responding")
    first = Session(SID, SessionConfig(), T0)
    before, _ = run(first, messages, stop_after=118)
    assert [m["type"] for m in before].count("interrupt") == 1
    # the checkpoint the owner stored before the barge-in (the session still responding)
    probe = Session(SID, SessionConfig(), T0)
    probe.handle(messages[0][1], T0)  # the start: a replay from the first chunk
    snapshot = probe.snapshot()
    assert snapshot.state == "responding"
    second = Session.restore(SID, SessionConfig(), T0, snapshot, first.progress())
    after, _ = run(second, messages, start_at=messages[1][0])
    assert [m["type"] for m in after].count("interrupt") == 0
    assert second.state == "listening" and second.interrupts == 1


def test_plan_shares_partitions_evenly_and_gives_up_the_quietest() -> None:
    # alone: take everything
    take, give = plan("a", {}, [], [], 8)
    assert sorted(take) == list(range(8)) and give == []
    # a second replica appears: the first gives up half, the emptiest partitions first
    load = {0: (1, 3), 1: (0, 0), 2: (0, 2), 3: (0, 1), 4: (0, 0), 5: (2, 2), 6: (0, 0), 7: (0, 5)}
    take, give = plan("a", {"b": 0}, list(range(8)), list(range(8)), 8, load.__getitem__)
    assert take == [] and sorted(give) == [1, 3, 4, 6]
    # the newcomer takes the free ones, up to its share
    take, give = plan("b", {"a": 4}, [], [0, 2, 5, 7], 8)
    assert sorted(take) == [1, 3, 4, 6] and give == []
    # a replica died: the survivors' share grows to cover its partitions
    take, give = plan("a", {"c": 3}, [0, 1, 2], [0, 1, 2, 6, 7, 8], 9)
    assert len(take) == 2 and set(take) <= {3, 4, 5} and give == []


def test_plan_converges_to_an_even_share() -> None:
    """Replicas that each run the plan in turn end with 16 // 3 or one more partition each."""
    holders: dict[str, set[int]] = {"a": set(range(8)), "b": set(range(8, 16)), "c": set()}
    for _ in range(6):
        for me in holders:
            counts = {w: len(p) for w, p in holders.items()}
            held = set().union(*holders.values())
            take, give = plan(me, counts, holders[me], held, 16)
            holders[me] -= set(give)
            holders[me] |= set(take) - held
    sizes = sorted(len(p) for p in holders.values())
    assert sizes == [5, 5, 6]
    assert sorted(k for p in holders.values() for k in p) == list(range(16))


def test_partition_of_matches_the_servers_subject_transform() -> None:
    layout = Layout("PT", 7, "ai.voice.stream", "ai.voice.transcription")
    ids = [f"sess-{i}" for i in range(40)] + ["a", "Z_9-x", "0" * 128]

    async def stored_partitions(url: str) -> dict[str, int]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name="PT", subjects=["ai.voice.stream.*"], subject_transform=layout.transform
            )
        )
        for sid in ids:
            await js.publish(f"ai.voice.stream.{sid}", b"x")
        info = await js.stream_info("PT", subjects_filter=">")
        await nc.close()
        return {s.split(".")[2]: int(s.split(".")[1]) for s in info.state.subjects or {}}

    with EmbeddedNats(jetstream=True) as server:
        got = asyncio.run(stored_partitions(server.url))
    assert got == {sid: partition_of(sid, 7) for sid in ids}


def test_a_failed_final_does_not_hold_the_replay_point_back() -> None:
    """A final whose decode failed never comes: the session is settled again after its error,
    so replays (and the stream's retention) do not reach back to that utterance forever."""
    from stt_service.backends.base import RecognitionError

    s = Session(SID, SessionConfig(), T0)
    messages = conversation()
    tracker = ReplayTracker(LAG)
    rec = Recognizer()
    for seq, m in messages[:50]:  # through the first utterance's end and into the gap
        tracker.observe(seq, s)
        rec.take(s.handle(m, T0 + seq * 0.1), seq)
    assert rec.due and not s.settled  # the first final is awaited
    s.on_event(RecognitionError("backend_error", "decode failed", utterance=0), T0)
    assert s.settled
    point = tracker.observe(messages[50][0], s)
    assert point is not None and point.snapshot.next_utterance == 1


@pytest.mark.parametrize("replayed_turns", [0, 1])
def test_turn_numbers_go_on_after_a_restore_whatever_the_new_stream_counts(
    replayed_turns: int,
) -> None:
    """Where the backend numbers turns (Flux), a restored session's new stream counts from 0
    again, and may or may not hear the last finished turn again: the client's turn_index goes
    on from the last final it got either way, and the repeated turn is not published."""
    config = SessionConfig(service_endpointing=False)
    first = Session(SID, config, T0)
    for turn, (a, b) in enumerate([(0.5, 2.0), (3.0, 4.5)]):
        first.on_event(RecognitionEvent(0, f"turn {turn}", True, a, b, turn_index=turn), T0)
    assert first.last_turn == 1
    second = Session.restore(SID, config, T0, first.snapshot(), first.progress())
    out: list[dict[str, Any]] = []
    events = []
    if replayed_turns:  # the tail of turn 1, heard again as the new stream's turn 0
        events.append(RecognitionEvent(0, "turn 1", True, 3.9, 4.5, turn_index=0))
    events += [
        RecognitionEvent(0, "turn 2 so", False, 5.0, 5.6, turn_index=replayed_turns),
        RecognitionEvent(0, "turn 2 so far", True, 5.0, 6.2, turn_index=replayed_turns),
    ]
    for ev in events:
        out += [a.message for a in second.on_event(ev, T0) if isinstance(a, Publish)]
    assert [(m["transcript"], m["turn_index"]) for m in out] == [
        ("turn 2 so", 2),
        ("turn 2 so far", 2),
    ]
    assert [m["sequence"] for m in out] == [2, 3]
