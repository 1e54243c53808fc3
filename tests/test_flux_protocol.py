"""The Flux protocol core against Deepgram's own SDK message models (deepgram-sdk listen.v2)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from deepgram.listen.v2.types import (
    ListenV2CloseStream,
    ListenV2Configure,
    ListenV2ConfigureFailure,
    ListenV2Connected,
    ListenV2FatalError,
    ListenV2ForceEndTurn,
    ListenV2TurnInfo,
)

from stt_service.backends.base import RecognitionError, RecognitionEvent, StreamParams
from stt_service.backends.deepgram.flux_protocol import (
    CLOSE_STREAM,
    FORCE_END_TURN,
    FluxOptions,
    FluxReceiver,
)


def turn_info(
    event: str, turn: int, transcript: str, start: float, end: float, **extra: Any
) -> str:
    words = [
        {"word": w, "confidence": 0.9, "start": start + i * 0.3, "end": start + i * 0.3 + 0.25}
        for i, w in enumerate(transcript.split())
    ]
    msg = ListenV2TurnInfo(
        request_id="req-1",
        sequence_id=1,
        event=event,
        turn_index=turn,
        audio_window_start=start,
        audio_window_end=end,
        transcript=transcript,
        words=words,
        end_of_turn_confidence=extra.pop("eot_conf", 0.2),
        **extra,
    )
    return msg.model_dump_json(exclude_none=True)


def test_query_string_carries_every_option_and_one_keyterm_each() -> None:
    defaults = FluxOptions(model="flux-general-en", eot_threshold=0.7, keyterms=("Deepgram",))
    session = defaults.for_session(
        StreamParams(
            session_id="s",
            eager_eot_threshold=0.5,
            eot_timeout_ms=3000,
            keyterms=("SageMaker", "Flux"),
        )
    )
    q = parse_qs(session.query_string(16000))
    assert q == {
        "model": ["flux-general-en"],
        "encoding": ["linear16"],
        "sample_rate": ["16000"],
        "eot_threshold": ["0.7"],
        "eager_eot_threshold": ["0.5"],
        "eot_timeout_ms": ["3000"],
        "keyterm": ["SageMaker", "Flux"],
    }
    # no per-session override: the defaults stand, absent thresholds are not sent
    q = parse_qs(defaults.for_session(StreamParams(session_id="s")).query_string())
    assert q["keyterm"] == ["Deepgram"] and "eager_eot_threshold" not in q


def test_control_messages_are_what_the_sdk_sends() -> None:
    opts = FluxOptions(eot_threshold=0.8, eager_eot_threshold=0.4, keyterms=("Nova",))
    configure = ListenV2Configure.model_validate(json.loads(opts.configure_message()))
    assert configure.thresholds is not None
    assert configure.thresholds.eot_threshold == 0.8
    assert configure.thresholds.eager_eot_threshold == 0.4
    assert configure.keyterms == ["Nova"]
    assert "eot_threshold" not in json.loads(opts.configure_message())  # nested, not flat
    assert ListenV2ForceEndTurn.model_validate(json.loads(FORCE_END_TURN)).type == "ForceEndTurn"
    assert ListenV2CloseStream.model_validate(json.loads(CLOSE_STREAM)).type == "CloseStream"


def test_turn_events_map_to_the_contract() -> None:
    rx = FluxReceiver()
    assert rx.feed(ListenV2Connected(request_id="r", sequence_id=0).model_dump_json()) == []
    assert rx.connected
    start = rx.feed(turn_info("StartOfTurn", 0, "", 0.0, 0.2))
    update = rx.feed(turn_info("Update", 0, "hello how", 0.0, 0.8))
    eager = rx.feed(turn_info("EagerEndOfTurn", 0, "hello how are you", 0.0, 1.4, eot_conf=0.6))
    resumed = rx.feed(turn_info("TurnResumed", 0, "hello how are you", 0.0, 1.6))
    end = rx.feed(
        turn_info(
            "EndOfTurn", 0, "hello how are you doing", 0.0, 2.0, eot_conf=0.9, trigger="model"
        )
    )
    events = [e for batch in (start, update, eager, resumed, end) for e in batch]
    assert all(isinstance(e, RecognitionEvent) for e in events)
    evs = [e for e in events if isinstance(e, RecognitionEvent)]
    assert [(e.event, e.is_final) for e in evs] == [
        ("start_of_turn", False),
        ("update", False),
        ("eager_end_of_turn", False),
        ("turn_resumed", False),
        ("end_of_turn", True),
    ]
    assert evs[0].started_speaking and not any(e.started_speaking for e in evs[1:])
    final = evs[-1]
    assert final.text == "hello how are you doing" and final.turn_index == 0
    assert (final.audio_start, final.audio_end) == (0.0, 2.0)
    assert final.words is not None and [w.word for w in final.words][-1] == "doing"
    assert final.confidence == 0.9  # mean word confidence


def test_errors_and_refused_configuration() -> None:
    rx = FluxReceiver()
    (refused,) = rx.feed(
        ListenV2ConfigureFailure(
            request_id="r",
            sequence_id=3,
            code="INVALID_THRESHOLD",
            description="eager_eot_threshold must not exceed eot_threshold",
        ).model_dump_json()
    )
    assert isinstance(refused, RecognitionError) and refused.code == "configure_failed"
    assert "must not exceed" in refused.message
    (fatal,) = rx.feed(
        ListenV2FatalError(
            sequence_id=4, code="INTERNAL_SERVER_ERROR", description="boom"
        ).model_dump_json()
    )
    assert isinstance(fatal, RecognitionError) and "INTERNAL_SERVER_ERROR" in fatal.message
    (junk,) = rx.feed("not json")
    assert isinstance(junk, RecognitionError) and "unreadable" in junk.message


def test_reconnect_keeps_times_and_turns_session_relative_and_no_final_twice() -> None:
    rx = FluxReceiver()
    rx.feed(turn_info("EndOfTurn", 0, "first turn", 0.0, 2.0))
    rx.feed(turn_info("Update", 1, "second", 2.5, 3.0))  # unfinished when the stream breaks
    # reconnect: the unfinished turn's audio (from 2.4 s of the session) is sent again
    rx.rebase(lambda t: 2.4 + t)
    (update,) = rx.feed(turn_info("Update", 0, "second turn", 0.1, 0.9))
    (final,) = rx.feed(turn_info("EndOfTurn", 0, "second turn", 0.1, 1.2))
    assert isinstance(final, RecognitionEvent) and isinstance(update, RecognitionEvent)
    assert final.turn_index == 1 and final.is_final
    assert (final.audio_start, final.audio_end) == (2.5, 3.6)
    assert final.words is not None and final.words[0].start == 2.5
    assert rx.finalized_until == 3.6  # a later reconnect resends only audio after this
    # the server repeating that final (or an older one) publishes nothing
    assert rx.feed(turn_info("EndOfTurn", 0, "second turn", 0.1, 1.2)) == []
    (next_turn,) = rx.feed(turn_info("EndOfTurn", 1, "third", 2.0, 3.0))
    assert isinstance(next_turn, RecognitionEvent) and next_turn.turn_index == 2


def test_flux_events_through_the_session_core() -> None:
    from stt_service.protocol import Start
    from stt_service.session import Publish, Session, SessionConfig

    session = Session("flux-1", SessionConfig(service_endpointing=False), now=100.0)
    session.handle(Start(state="responding", speaker_id="u1"), 100.0)
    rx = FluxReceiver()
    published: list[dict[str, Any]] = []
    for raw in (
        turn_info("StartOfTurn", 0, "", 0.0, 0.2),
        turn_info("Update", 0, "stop please", 0.0, 0.9),
        turn_info("EndOfTurn", 0, "stop please", 0.0, 1.1),
    ):
        for ev in rx.feed(raw):
            published += [a.message for a in session.on_event(ev, 101.0) if isinstance(a, Publish)]
    kinds = [(m["type"], m.get("event")) for m in published]
    assert kinds == [("interrupt", None), ("transcript", "update"), ("transcript", "end_of_turn")]
    assert session.state == "listening"
    final = published[-1]
    assert final["is_final"] and final["turn_index"] == 0 and final["speaker_id"] == "u1"
    assert [w["word"] for w in final["words"]] == ["stop", "please"]
    assert [m["sequence"] for m in published[1:]] == [0, 1]
