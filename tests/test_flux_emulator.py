"""The Flux emulator speaks Deepgram's exact messages and is driven by the audio it hears."""

from __future__ import annotations

import json

import numpy as np
from deepgram.listen.v2.types import (
    ListenV2ConfigureFailure,
    ListenV2ConfigureSuccess,
    ListenV2Connected,
    ListenV2TurnInfo,
)

from stt_service.backends.base import RecognitionEvent, StreamParams
from stt_service.backends.deepgram.flux_protocol import (
    CLOSE_STREAM,
    FORCE_END_TURN,
    FluxOptions,
    FluxReceiver,
)
from stt_service.emulator.flux import FluxEmulator

from .speech import joined, pcm16, silence, utterance

MODELS = {
    "Connected": ListenV2Connected,
    "TurnInfo": ListenV2TurnInfo,
    "ConfigureSuccess": ListenV2ConfigureSuccess,
    "ConfigureFailure": ListenV2ConfigureFailure,
}


def stream(emu: FluxEmulator, pcm: bytes, chunk: int = 2560) -> list[str]:
    out: list[str] = []
    for i in range(0, len(pcm), chunk):
        out += emu.on_audio(pcm[i : i + chunk])
    return out


def check(messages: list[str]) -> list[dict]:
    """Every message validates against the SDK's model; sequence ids count up from 0."""
    parsed = [json.loads(m) for m in messages]
    for m in parsed:
        MODELS[m["type"]].model_validate(m)
    return parsed


def test_turns_follow_the_speech_and_reveal_the_script() -> None:
    opts = FluxOptions(eager_eot_threshold=0.5, eot_threshold=0.7)
    emu = FluxEmulator(query=opts.query_string(), script=["he was not", "he might even"])
    audio = joined([utterance("0880"), utterance("0930")], gap_s=1.5)
    messages = check(emu.connected() + stream(emu, audio.pcm))
    assert [m["sequence_id"] for m in messages] == list(range(len(messages)))
    turns = [m for m in messages if m["type"] == "TurnInfo"]
    ends = [m for m in turns if m["event"] == "EndOfTurn"]
    assert [e["transcript"] for e in ends[:1]] == ["he was not"]
    assert ends[-1]["transcript"] in ("he was not", "he might even")
    assert {m["event"] for m in turns} >= {"StartOfTurn", "Update", "EagerEndOfTurn", "EndOfTurn"}
    # the first turn starts within the first utterance's audio and ends before the second's
    assert 0.4 <= ends[0]["audio_window_start"] < 1.0
    assert ends[0]["audio_window_end"] <= 0.5 + utterance("0880").audio.duration + 0.05


def test_no_turn_for_silence_and_close_stream_ends_an_open_turn() -> None:
    emu = FluxEmulator(script=["only line"])
    assert stream(emu, pcm16(silence(2.0)).pcm) == []
    speech = utterance("0870").samples[: 16000 * 2]  # mid-sentence
    opened = check(stream(emu, speech.tobytes()))
    assert opened[0]["event"] == "StartOfTurn"
    (end,) = check(emu.on_text(CLOSE_STREAM))
    assert end["event"] == "EndOfTurn" and end["trigger"] == "manual"
    assert emu.closed and emu.on_audio(speech.tobytes()) == []


def test_force_end_turn_and_configure() -> None:
    emu = FluxEmulator(script=["a b c"])
    stream(emu, utterance("0870").samples[:16000].tobytes())
    (end,) = check(emu.on_text(FORCE_END_TURN))
    assert end["event"] == "EndOfTurn" and end["transcript"] == "a b c"
    ok = FluxOptions(eot_threshold=0.8, eager_eot_threshold=0.4, keyterms=("Flux",))
    (success,) = check(emu.on_text(ok.configure_message()))
    assert success["type"] == "ConfigureSuccess" and success["keyterms"] == ["Flux"]
    bad = FluxOptions(eot_threshold=0.5, eager_eot_threshold=0.9)
    (failure,) = check(emu.on_text(bad.configure_message()))
    assert failure["type"] == "ConfigureFailure"


def test_emulator_and_receiver_agree() -> None:
    emu = FluxEmulator(
        query=FluxOptions().for_session(StreamParams("s")).query_string(),
        script=["first", "second"],
    )
    rx = FluxReceiver()
    audio = joined([utterance("0880"), utterance("0930")], gap_s=1.5)
    events = [e for m in emu.connected() + stream(emu, audio.pcm) for e in rx.feed(m)]
    finals = [e for e in events if isinstance(e, RecognitionEvent) and e.is_final]
    assert rx.connected
    assert [f.turn_index for f in finals] == list(range(len(finals)))
    assert finals[0].text == "first"
    assert all(f.audio_end > f.audio_start for f in finals)
    assert np.all(np.diff([f.audio_start for f in finals]) > 0)
