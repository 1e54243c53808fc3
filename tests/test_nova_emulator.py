"""The Nova emulator speaks Deepgram's exact messages and is driven by the audio it hears."""

from __future__ import annotations

import itertools
import json
from typing import Any

from deepgram.listen.v1.types import (
    ListenV1ConfigureFailure,
    ListenV1ConfigureSuccess,
    ListenV1Error,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)

from stt_service.backends.base import RecognitionError, RecognitionEvent, StreamEvent, StreamParams
from stt_service.backends.deepgram.nova_protocol import (
    CLOSE_STREAM,
    FINALIZE,
    KEEP_ALIVE,
    NovaOptions,
    NovaReceiver,
)
from stt_service.emulator.nova import NovaEmulator

from .speech import joined, pcm16, silence, utterance

MODELS: dict[str, Any] = {
    "Results": ListenV1Results,
    "Metadata": ListenV1Metadata,
    "SpeechStarted": ListenV1SpeechStarted,
    "UtteranceEnd": ListenV1UtteranceEnd,
    "ConfigureSuccess": ListenV1ConfigureSuccess,
    "ConfigureFailure": ListenV1ConfigureFailure,
    "Error": ListenV1Error,
}
LINES = ["he was not an ill disposed young man", "he might even have been made amiable himself"]
GAP_S = 1.5


def stream(emu: NovaEmulator, pcm: bytes, chunk: int = 2560) -> list[str]:
    out: list[str] = []
    for i in range(0, len(pcm), chunk):
        out += emu.on_audio(pcm[i : i + chunk])
    return out


def check(messages: list[str]) -> list[dict[str, Any]]:
    """Every message validates against the SDK's model of its type."""
    parsed = [json.loads(m) for m in messages]
    for m in parsed:
        MODELS[m["type"]].model_validate(m)
    return parsed


def finals(evs: list[StreamEvent]) -> list[RecognitionEvent]:
    assert not [e for e in evs if isinstance(e, RecognitionError)]
    return [e for e in evs if isinstance(e, RecognitionEvent) and e.is_final]


def two_utterances() -> tuple[bytes, list[tuple[float, float]]]:
    """Two LibriVox utterances with a gap, and where each one's audio lies (seconds)."""
    first, second = utterance("0880"), utterance("0930")
    audio = joined([first, second], gap_s=GAP_S)
    start1 = 0.5
    start2 = start1 + first.audio.duration + GAP_S
    return audio.pcm, [
        (start1, start1 + first.audio.duration),
        (start2, start2 + second.audio.duration),
    ]


def test_receiver_gets_exactly_the_script_lines_from_real_speech() -> None:
    opts = NovaOptions(utterance_end_ms=1000).for_session(StreamParams("s", keyterms=("Nova",)))
    emu = NovaEmulator(query=opts.query_string(), script=LINES)
    assert emu.keyterms == ["Nova"] and emu.endpointing_ms == 300 and emu.sample_rate == 16000
    assert emu.connected() == []
    pcm, spans = two_utterances()
    messages = stream(emu, pcm)
    parsed = check(messages)
    assert emu.received_bytes == len(pcm)
    kinds = [m["type"] for m in parsed]
    assert kinds.count("SpeechStarted") == 2 and kinds.count("UtteranceEnd") == 2
    res = [m for m in parsed if m["type"] == "Results"]
    assert any(not m["is_final"] for m in res)  # interims
    assert any(m["is_final"] and not m["speech_final"] for m in res)  # mid-speech segments
    assert sum(m["speech_final"] for m in res) == 2
    # all is_final segments of an utterance join to its line, exactly once
    texts = [m["channel"]["alternatives"][0]["transcript"] for m in res if m["is_final"]]
    assert " ".join(t for t in texts if t) == " ".join(LINES)
    # the segments are contiguous, and every word lies within its result's window
    finals_ = [m for m in res if m["is_final"]]
    for a, b in itertools.pairwise(finals_):
        assert b["start"] >= round(a["start"] + a["duration"], 3) - 1e-6
    for m in res:
        for w in m["channel"]["alternatives"][0]["words"]:
            assert m["start"] - 1e-6 <= w["start"] < w["end"] <= m["start"] + m["duration"] + 1e-6

    rx = NovaReceiver()
    evs = [e for m in messages for e in rx.feed(m)]
    got = finals(evs)
    assert [f.text for f in got] == LINES
    assert [f.event for f in got] == ["speech_final", "speech_final"]
    assert [f.utterance for f in got] == [0, 1]
    for f, (start, end), nxt in zip(got, spans, [spans[1][0], len(pcm) / 32000], strict=True):
        assert start <= f.audio_start < f.audio_end <= nxt
        assert f.audio_end <= end + 0.35  # speech end plus the endpointing pause
        assert f.words is not None and [w.word for w in f.words] == f.text.split()
        assert all(start <= w.start < w.end <= end for w in f.words)
    partials = [e for e in evs if isinstance(e, RecognitionEvent) and not e.is_final]
    assert partials and all(LINES[p.utterance].startswith(p.text) for p in partials)
    assert rx.finalized_until == got[-1].audio_end
    assert rx.finish() == []  # nothing held after the speech_finals


def test_silence_says_nothing_and_keepalive_is_quiet() -> None:
    emu = NovaEmulator(query=NovaOptions().query_string())
    assert stream(emu, pcm16(silence(3.0)).pcm) == []
    assert emu.on_text(KEEP_ALIVE) == []


def test_finalize_mid_speech_gives_a_from_finalize_final() -> None:
    script = ["the first line has quite a few words", "second line"]
    emu = NovaEmulator(query=NovaOptions().query_string(), script=script)
    rx = NovaReceiver()
    speech = utterance("0870").samples  # 7 s of speech without a pause
    evs: list[StreamEvent] = []
    for m in stream(emu, speech[: 16000 * 2].tobytes()):
        evs += rx.feed(m)
    assert finals(evs) == []
    flushed = emu.on_text(FINALIZE)
    assert emu.finalizes == 1
    (msg,) = check(flushed)
    assert msg["is_final"] and msg["from_finalize"] and not msg["speech_final"]
    rest = msg["channel"]["alternatives"][0]["transcript"]  # what was not final yet
    assert rest and script[0].endswith(" " + rest)
    for m in flushed + emu.on_text(FINALIZE):  # then nothing new: an empty from_finalize result
        evs += rx.feed(m)
    (first,) = finals(evs)
    assert first.text == script[0] and first.event == "finalize" and first.utterance == 0
    assert first.audio_end <= 2.0 + 1e-6
    # the speech goes on: the next utterance takes the next line, after the finalised audio
    rest = speech[16000 * 2 :].tobytes() + pcm16(silence(1.0)).pcm
    later = stream(emu, rest)
    check(later)
    for m in later:
        evs += rx.feed(m)
    _, second = finals(evs)
    assert second.text == "second line" and second.event == "speech_final"
    assert second.utterance == 1 and second.audio_start >= first.audio_end


def test_finalize_in_silence_answers_with_an_empty_result() -> None:
    emu = NovaEmulator(query=NovaOptions().query_string())
    stream(emu, pcm16(silence(1.0)).pcm)
    (msg,) = check(emu.on_text(FINALIZE))
    assert msg["from_finalize"] and msg["channel"]["alternatives"][0]["transcript"] == ""
    assert NovaReceiver().feed(json.dumps(msg)) == []


def test_close_stream_flushes_then_metadata_and_closes() -> None:
    emu = NovaEmulator(query=NovaOptions().query_string(), script=["only line here"])
    rx = NovaReceiver()
    speech = utterance("0870").samples[: 16000 * 2].tobytes()
    evs = [e for m in stream(emu, speech) for e in rx.feed(m)]
    closing = emu.on_text(CLOSE_STREAM)
    flush, meta = check(closing)
    assert [flush["type"], meta["type"]] == ["Results", "Metadata"]
    assert flush["is_final"] and not flush["speech_final"] and not flush["from_finalize"]
    assert meta["request_id"] == emu.request_id and meta["duration"] == 2.0
    assert emu.closed
    assert emu.on_audio(speech) == [] and emu.on_text(FINALIZE) == []
    for m in closing:
        evs += rx.feed(m)
    assert finals(evs) == []  # held: a segment that is neither speech_final nor from_finalize
    assert rx.request_id == emu.request_id
    (final,) = finals(rx.finish())
    assert final.text == "only line here" and final.utterance == 0
    assert rx.finish() == []


def test_without_endpointing_utterance_end_closes_the_utterance() -> None:
    opts = NovaOptions(endpointing_ms=None, utterance_end_ms=1000)
    assert "endpointing" not in opts.query_string()  # None: Deepgram's own default applies
    emu = NovaEmulator(query=opts.query_string() + "&endpointing=false", script=LINES)
    assert emu.endpointing_ms is None and emu.utterance_end_ms == 1000
    pcm, _ = two_utterances()
    messages = stream(emu, pcm)
    parsed = check(messages)
    assert not any(m.get("speech_final") for m in parsed)
    rx = NovaReceiver()
    got = finals([e for m in messages for e in rx.feed(m)])
    assert [(f.text, f.event) for f in got] == [(line, "utterance_end") for line in LINES]


def test_bad_messages_and_configure() -> None:
    emu = NovaEmulator(query=NovaOptions(keyterms=("a",)).query_string())
    (bad,) = check(emu.on_text("{nope"))
    assert bad["type"] == "Error" and bad["variant"] == "SchemaError"
    (unknown,) = check(emu.on_text(json.dumps({"type": "Shout"})))
    assert unknown["type"] == "Error" and "Shout" in unknown["description"]
    (err,) = NovaReceiver().feed(json.dumps(bad))
    assert isinstance(err, RecognitionError) and err.code == "backend_error"
    (ok,) = check(emu.on_text(NovaOptions(keyterms=("b", "c")).configure_message()))
    assert ok["type"] == "ConfigureSuccess" and ok["keyterms"] == ["b", "c"] == emu.keyterms
    old = NovaEmulator(query=NovaOptions(model="nova-2", keyterms=("x",)).query_string())
    assert old.keyterms == ["x"]
    (refused,) = check(old.on_text(NovaOptions(keyterms=("y",)).configure_message()))
    assert refused["type"] == "ConfigureFailure"
    (rx_err,) = NovaReceiver().feed(json.dumps(refused))
    assert isinstance(rx_err, RecognitionError) and rx_err.code == "configure_failed"
