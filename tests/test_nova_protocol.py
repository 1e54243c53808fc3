"""The Nova protocol core against Deepgram's own SDK message models (deepgram-sdk listen.v1)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pytest
from deepgram.listen.v1.types import (
    ListenV1CloseStream,
    ListenV1Configure,
    ListenV1ConfigureFailure,
    ListenV1ConfigureSuccess,
    ListenV1Error,
    ListenV1Finalize,
    ListenV1KeepAlive,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)

from stt_service.backends.base import RecognitionError, RecognitionEvent, StreamParams
from stt_service.backends.deepgram.nova_protocol import (
    CLOSE_STREAM,
    FINALIZE,
    KEEP_ALIVE,
    PATH,
    NovaOptions,
    NovaReceiver,
)
from stt_service.protocol import Word


def results(
    transcript: str,
    start: float,
    duration: float,
    *,
    is_final: bool = False,
    speech_final: bool = False,
    from_finalize: bool = False,
    confidence: float = 0.9,
    languages: list[str] | None = None,
) -> str:
    """A ``Results`` message as the SDK models it; words spread over the window."""
    tokens = transcript.split()
    step = duration / max(1, len(tokens))
    words = [
        {
            "word": t.strip(".,?!").lower(),
            "punctuated_word": t,
            "start": start + i * step,
            "end": start + (i + 1) * step,
            "confidence": confidence,
        }
        for i, t in enumerate(tokens)
    ]
    alt: dict[str, Any] = {"transcript": transcript, "confidence": confidence, "words": words}
    if languages is not None:
        alt["languages"] = languages
    msg = ListenV1Results(
        channel_index=[0, 1],
        duration=duration,
        start=start,
        is_final=is_final,
        speech_final=speech_final,
        from_finalize=from_finalize,
        channel={"alternatives": [alt]},
        metadata={
            "request_id": "req-1",
            "model_info": {"name": "general-nova-3", "version": "2025", "arch": "nova-3"},
            "model_uuid": "uuid-1",
        },
    )
    return msg.model_dump_json(exclude_none=True)


def utterance_end(last_word_end: float) -> str:
    return ListenV1UtteranceEnd(channel=[0, 1], last_word_end=last_word_end).model_dump_json()


def events(rx: NovaReceiver, *messages: str) -> list[RecognitionEvent]:
    out: list[RecognitionEvent] = []
    for m in messages:
        for e in rx.feed(m):
            assert isinstance(e, RecognitionEvent), e
            out.append(e)
    return out


# --- what to send ---------------------------------------------------------------------------------
def test_query_string_for_nova_3_uses_keyterm_and_session_overrides() -> None:
    defaults = NovaOptions(keyterms=("Deepgram",), utterance_end_ms=1000)
    session = defaults.for_session(
        StreamParams(session_id="s", language="en-GB", keyterms=("SageMaker", "Nova"))
    )
    q = parse_qs(session.query_string(16000))
    assert q == {
        "model": ["nova-3"],
        "encoding": ["linear16"],
        "sample_rate": ["16000"],
        "channels": ["1"],
        "interim_results": ["true"],
        "punctuate": ["true"],
        "smart_format": ["true"],
        "endpointing": ["300"],
        "utterance_end_ms": ["1000"],
        "vad_events": ["true"],
        "language": ["en-GB"],
        "keyterm": ["SageMaker", "Nova"],
    }
    assert PATH == "v1/listen"
    # no per-session override: the defaults stand, and absent options are not sent
    plain = parse_qs(defaults.for_session(StreamParams(session_id="s")).query_string(8000))
    assert plain["keyterm"] == ["Deepgram"] and plain["sample_rate"] == ["8000"]
    assert "language" not in plain and "keywords" not in plain


def test_query_string_for_older_models_uses_keywords_and_optional_settings() -> None:
    opts = NovaOptions(
        model="nova-2-general",
        language="de",
        endpointing_ms=None,
        smart_format=False,
        keyterms=("Flux", "Nova"),
    )
    q = parse_qs(opts.query_string())
    assert q["keywords"] == ["Flux", "Nova"] and "keyterm" not in q
    assert q["smart_format"] == ["false"] and q["language"] == ["de"]
    assert "endpointing" not in q and "utterance_end_ms" not in q
    assert parse_qs(NovaOptions(model="nova-3-medical", keyterms=("x",)).query_string())[
        "keyterm"
    ] == ["x"]


def test_control_messages_are_what_the_sdk_sends() -> None:
    assert ListenV1KeepAlive.model_validate(json.loads(KEEP_ALIVE)).type == "KeepAlive"
    assert ListenV1Finalize.model_validate(json.loads(FINALIZE)).type == "Finalize"
    assert ListenV1CloseStream.model_validate(json.loads(CLOSE_STREAM)).type == "CloseStream"
    configure = ListenV1Configure.model_validate(
        json.loads(NovaOptions(keyterms=("Nova", "Flux")).configure_message())
    )
    assert configure.keyterms == ["Nova", "Flux"]


# --- what the server's messages mean --------------------------------------------------------------
def test_interims_and_segments_make_one_final_with_every_segment() -> None:
    rx = NovaReceiver()
    evs = events(
        rx,
        results("", 0.0, 0.5),  # silence: nothing to say
        results("hello", 0.5, 0.5),
        results("hello", 0.5, 0.6),  # unchanged: no second partial
        results("Hello, how", 0.5, 1.0, is_final=True, confidence=0.8),
        results("are", 1.5, 0.4, confidence=0.7),
        results("are you?", 1.5, 0.8, is_final=True, speech_final=True, confidence=0.9),
    )
    assert [(e.text, e.is_final, e.event) for e in evs] == [
        ("hello", False, "interim"),
        ("Hello, how", False, "interim"),  # the segment corrected the interim
        ("Hello, how are", False, "interim"),
        ("Hello, how are you?", True, "speech_final"),
    ]
    assert {e.utterance for e in evs} == {0} and {e.turn_index for e in evs} == {0}
    partial, final = evs[2], evs[3]
    assert partial.confidence == 0.7  # the interim alternative's own
    assert (partial.audio_start, partial.audio_end) == (0.5, 1.9)
    assert final.confidence == 0.85  # the mean over the held segments
    assert (final.audio_start, final.audio_end) == (0.5, 2.3)
    assert final.words == [
        Word("Hello,", 0.5, 1.0, 0.8),
        Word("how", 1.0, 1.5, 0.8),
        Word("are", 1.5, 1.9, 0.9),
        Word("you?", 1.9, 2.3, 0.9),
    ]
    assert final.language is None
    assert rx.finalized_until == 2.3
    # the next utterance is numbered 1; an empty speech_final with nothing held says nothing
    assert events(rx, results("", 2.3, 0.5, is_final=True, speech_final=True)) == []
    assert rx.finalized_until == 2.8
    (nxt,) = events(rx, results("again", 3.0, 0.5, is_final=True, speech_final=True))
    assert nxt.is_final and nxt.utterance == 1 and nxt.text == "again"


def test_finalize_utterance_end_and_finish_publish_held_text_once() -> None:
    rx = NovaReceiver()
    # Finalize: the from_finalize result closes the utterance, even when its own text is empty
    (p,) = events(rx, results("one two", 0.0, 1.0, is_final=True))
    assert not p.is_final
    (f,) = events(rx, results("", 1.0, 0.2, is_final=True, from_finalize=True))
    assert f.is_final and f.event == "finalize" and f.text == "one two" and f.utterance == 0
    # UtteranceEnd closes held text; a second UtteranceEnd (or an empty Finalize) says nothing
    events(rx, results("three", 2.0, 0.5, is_final=True))
    (u,) = events(rx, utterance_end(2.5))
    assert u.is_final and u.event == "utterance_end" and u.text == "three" and u.utterance == 1
    assert events(rx, utterance_end(2.5)) == []
    assert events(rx, results("", 2.5, 0.1, is_final=True, from_finalize=True)) == []
    # an interim never becomes a final by itself
    events(rx, results("four", 3.0, 0.5))
    assert events(rx, utterance_end(3.5)) == []
    # finish(): held is_final text becomes the final, once
    events(rx, results("five six", 3.0, 1.0, is_final=True))
    (end,) = rx.finish()
    assert isinstance(end, RecognitionEvent)
    assert end.is_final and end.text == "five six" and end.utterance == 2
    assert rx.finish() == []


def test_speech_final_and_from_finalize_together_give_one_final() -> None:
    rx = NovaReceiver()
    (f,) = events(
        rx, results("bye", 0.0, 0.5, is_final=True, speech_final=True, from_finalize=True)
    )
    assert f.event == "finalize" and f.is_final
    assert rx.finish() == [] and events(rx, utterance_end(0.5)) == []


def test_rebase_keeps_times_session_relative_and_utterances_increasing() -> None:
    rx = NovaReceiver()
    (first,) = events(rx, results("first", 0.0, 1.0, is_final=True, speech_final=True))
    events(rx, results("second part", 1.0, 1.0, is_final=True))
    events(rx, results("lost interim", 2.0, 0.5))  # the connection breaks here
    assert rx.finalized_until == 2.0
    # the new connection starts with the session's audio from 2.0 s
    offset = rx.finalized_until
    rx.rebase(lambda t: t + offset)
    (partial,) = events(rx, results("of it", 0.0, 0.4))
    assert partial.text == "second part of it" and partial.utterance == 1
    assert (partial.audio_start, partial.audio_end) == (1.0, 2.4)
    (final,) = events(rx, results("of it", 0.0, 0.6, is_final=True, speech_final=True))
    assert final.text == "second part of it" and final.utterance == 1 > first.utterance
    assert (final.audio_start, final.audio_end) == (1.0, 2.6)
    assert final.words is not None
    assert [(w.word, w.start) for w in final.words] == [
        ("second", 1.0),
        ("part", 1.5),
        ("of", 2.0),
        ("it", 2.3),
    ]
    assert rx.finalized_until == 2.6
    # a second reconnect shifts again; numbering goes on
    rx.rebase(lambda t: t + 10.0)
    (third,) = events(rx, results("third", 1.0, 0.5, is_final=True, speech_final=True))
    assert third.utterance == third.turn_index == 2
    assert (third.audio_start, third.audio_end) == (11.0, 11.5)
    assert rx.finalized_until == 11.5


def test_language_metadata_and_vad_events() -> None:
    rx = NovaReceiver()
    started = ListenV1SpeechStarted(channel=[0, 1], timestamp=0.2).model_dump_json()
    assert rx.feed(started) == []
    (f,) = events(
        rx, results("hola", 0.0, 0.5, is_final=True, speech_final=True, languages=["es", "en"])
    )
    assert f.language == "es"
    metadata = ListenV1Metadata(
        transaction_key="deprecated",
        request_id="req-9",
        sha256="0" * 64,
        created="2025-01-01T00:00:00.000Z",
        duration=1.0,
        channels=1,
    ).model_dump_json()
    assert rx.feed(metadata) == [] and rx.request_id == "req-9"
    ok = ListenV1ConfigureSuccess(request_id="req-9", keyterms=["a"]).model_dump_json()
    assert rx.feed(ok) == []


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        b"\xff\xfe",
        "[1, 2]",
        '{"no": "type"}',
        '{"type": "Results", "start": 0}',
        '{"type": "Results", "start": 0, "duration": 1, "channel": {"alternatives": []}}',
    ],
)
def test_unreadable_messages_are_errors(raw: str | bytes) -> None:
    (err,) = NovaReceiver().feed(raw)
    assert isinstance(err, RecognitionError) and err.code == "backend_error"
    assert "Nova sent an unreadable message" in err.message


def test_deepgram_errors_are_errors() -> None:
    rx = NovaReceiver()
    (err,) = rx.feed(
        ListenV1Error(variant="SchemaError", description="bad message").model_dump_json()
    )
    assert isinstance(err, RecognitionError) and err.code == "backend_error"
    assert err.message == "Nova error SchemaError: bad message"
    (legacy,) = rx.feed(json.dumps({"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials"}))
    assert isinstance(legacy, RecognitionError) and legacy.code == "backend_error"
    assert legacy.message == "Nova error INVALID_AUTH: Invalid credentials"
    (refused,) = rx.feed(
        ListenV1ConfigureFailure(
            request_id="r",
            code="CONFIGURE_KEYTERMS_NOT_SUPPORTED",
            description="not on this model",
        ).model_dump_json()
    )
    assert isinstance(refused, RecognitionError) and refused.code == "configure_failed"
    # an error does not disturb the utterance in progress
    events(rx, results("kept", 0.0, 0.5, is_final=True))
    assert rx.feed("garbage") and [e.text for e in events(rx, utterance_end(0.5))] == ["kept"]
