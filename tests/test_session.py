"""The sans-I/O session core on real speech: utterances, barge-in, flushes, clocks, results."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import msgpack
import numpy as np
import pytest

from stt_service.audio import rms_dbfs
from stt_service.backends.base import (
    EndpointHint,
    RecognitionError,
    RecognitionEvent,
    StreamParams,
)
from stt_service.protocol import Chunk, Inbound, ProtocolError, parse_inbound
from stt_service.session import (
    Action,
    Close,
    EndUtterance,
    Measure,
    Publish,
    Reconfigure,
    SendAudio,
    Session,
    SessionConfig,
    Speculate,
    reads_finished,
)
from tests.speech import (
    clicks,
    joined,
    silence,
    sox_convert,
    speech_bounds,
    utterance,
    utterances,
    white_noise,
)

SID = "call-7"
MAX_CHUNK = 512 * 1024
T0 = 1_700_000_000.0
CHUNK = 1600  # 100 ms of 16 kHz mono


def msg(obj: dict[str, Any]) -> Inbound:
    """An inbound message through the real parser, as the worker would hand it to the session."""
    parsed = parse_inbound(msgpack.packb(obj, use_bin_type=True), SID, MAX_CHUNK)
    assert not isinstance(parsed, ProtocolError), parsed
    return parsed


def chunk(pcm: bytes) -> Chunk:
    parsed = msg({"type": "chunk", "audio": pcm})
    assert isinstance(parsed, Chunk)
    return parsed


def new_session(config: SessionConfig | None = None, now: float = T0) -> Session:
    return Session(SID, config or SessionConfig(), now)


def feed(
    session: Session,
    samples: np.ndarray,
    now: float,
    chunk_samples: int = CHUNK,
    realtime: bool = True,
) -> tuple[list[Action], float]:
    """Stream 16 kHz mono samples in chunks; the clock advances in real time unless told not to.
    Returns the actions and the clock after the last chunk."""
    actions: list[Action] = []
    for i in range(0, samples.size, chunk_samples):
        part = samples[i : i + chunk_samples]
        actions += session.handle(chunk(part.tobytes()), now)
        if realtime:
            now += part.size / 16000
    return actions, now


def feed_bytes(session: Session, pcm: bytes, now: float, sizes: list[int]) -> list[Action]:
    actions: list[Action] = []
    i = k = 0
    while i < len(pcm):
        n = sizes[k % len(sizes)]
        actions += session.handle(chunk(pcm[i : i + n]), now)
        i += n
        k += 1
    return actions


def sends(actions: list[Action]) -> list[SendAudio]:
    return [a for a in actions if isinstance(a, SendAudio)]


def ends(actions: list[Action]) -> list[EndUtterance]:
    return [a for a in actions if isinstance(a, EndUtterance)]


def published(actions: list[Action], mtype: str | None = None) -> list[dict[str, Any]]:
    out = [a.message for a in actions if isinstance(a, Publish)]
    return [m for m in out if mtype is None or m["type"] == mtype]


def outline(actions: list[Action]) -> list[tuple[str, int]]:
    """("audio", utterance) for each run of SendAudio, ("end", utterance) for each EndUtterance."""
    out: list[tuple[str, int]] = []
    for a in actions:
        if isinstance(a, SendAudio):
            if not out or out[-1] != ("audio", a.utterance):
                out.append(("audio", a.utterance))
        elif isinstance(a, EndUtterance):
            out.append(("end", a.utterance))
    return out


def speech_only(samples: np.ndarray) -> np.ndarray:
    """``samples`` from the first to the last 30 ms frame of speech."""
    start, end = speech_bounds(samples)
    return samples[round(start * 16000) : round(end * 16000)]


def span(actions: list[Action], utt: int) -> tuple[int, int]:
    """First and one-past-last session sample sent for an utterance; asserts it is contiguous."""
    parts = sorted(
        (a.offset, a.offset + a.samples.size) for a in sends(actions) if a.utterance == utt
    )
    assert parts, f"no audio for utterance {utt}"
    for (_, end), (start, _) in itertools.pairwise(parts):
        assert start == end, f"gap or overlap in utterance {utt} at {end}"
    return parts[0][0], parts[-1][1]


def assert_sent_audio_is_the_input(actions: list[Action], audio: np.ndarray) -> None:
    for a in sends(actions):
        assert a.samples.dtype == np.int16
        assert np.array_equal(a.samples, audio[a.offset : a.offset + a.samples.size])


# --- (1) utterances ------------------------------------------------------------------------------
def test_two_utterances_separated_by_silence() -> None:
    first, second = utterance("0880"), utterance("0930")
    audio = np.frombuffer(joined([first, second], gap_s=1.5).pcm, dtype=np.int16)
    s = new_session()
    actions, _ = feed(s, audio, T0)

    assert outline(actions) == [("audio", 0), ("end", 0), ("audio", 1), ("end", 1)]
    assert [e.until for e in ends(actions)] == [None, None]
    assert not s.in_utterance
    assert_sent_audio_is_the_input(actions, audio)

    # each utterance is its speech, give or take pre-roll (300 ms) and trailing silence (300 ms)
    slack = 16000 * 3 // 10 + 480
    a_start = 8000
    a_end = a_start + first.samples.size
    b_start = a_end + 24000
    b_end = b_start + second.samples.size
    for utt, (lo, hi), n in [
        (0, (a_start, a_end), first.samples.size),
        (1, (b_start, b_end), second.samples.size),
    ]:
        start, end = span(actions, utt)
        assert lo - slack <= start and end <= hi + slack, (utt, start, end, lo, hi)
        assert end - start >= 0.8 * n


def test_utterances_depend_on_audio_time_not_on_the_clock() -> None:
    """A client streaming far faster than real time gets the same utterances."""
    audio = np.frombuffer(joined(list(utterances()[1:3]), gap_s=1.2).pcm, dtype=np.int16)
    realtime, _ = feed(new_session(), audio, T0)
    burst, _ = feed(new_session(), audio, T0, chunk_samples=4800, realtime=False)
    key = [
        (type(a).__name__, getattr(a, "offset", None), a.utterance)
        for a in realtime
        if isinstance(a, SendAudio | EndUtterance)
    ]
    assert key == [
        (type(a).__name__, getattr(a, "offset", None), a.utterance)
        for a in burst
        if isinstance(a, SendAudio | EndUtterance)
    ]
    assert outline(realtime) == [("audio", 0), ("end", 0), ("audio", 1), ("end", 1)]


@pytest.mark.parametrize(
    "noise",
    [silence(5.0), np.random.default_rng(0).normal(0, 20, 80000).astype(np.int16)],
    ids=["digital-silence", "quiet-hiss"],
)
def test_silence_sends_no_audio(noise: np.ndarray) -> None:
    s = new_session()
    actions, now = feed(s, noise, T0)
    actions += s.handle(msg({"type": "end"}), now)
    assert sends(actions) == []
    assert ends(actions) == []
    assert isinstance(actions[-1], Close)


@pytest.mark.parametrize("rms", [1500.0, 3000.0, 10000.0])
def test_white_noise_makes_no_utterance(rms: float) -> None:
    s = new_session()
    actions, now = feed(s, white_noise(5.0, rms=rms, seed=int(rms)), T0)
    assert not s.in_utterance
    actions += s.handle(msg({"type": "end"}), now)
    assert sends(actions) == []
    assert ends(actions) == []


def test_speech_after_noise_is_still_found() -> None:
    speech = utterance("0880").samples
    audio = np.concatenate([white_noise(2.0, rms=2000.0), silence(0.5), speech, silence(1.5)])
    actions, _ = feed(new_session(), audio, T0)
    assert outline(actions) == [("audio", 0), ("end", 0)]
    start, _ = span(actions, 0)
    assert start >= 16000 * 2  # none of the noise before it


# --- (2) barge-in ---------------------------------------------------------------------------------
def start_responding(s: Session, config_speaker: str = "alice") -> list[Action]:
    return s.handle(msg({"type": "start", "state": "responding", "speaker_id": config_speaker}), T0)


def test_speech_while_responding_interrupts_once() -> None:
    s = new_session()
    start_responding(s)
    state_before: str = s.state
    assert state_before == "responding"
    audio = np.concatenate(
        [
            silence(0.5),
            utterance("0880").samples,
            silence(1.0),
            utterance("0930").samples,
            silence(1.0),
        ]
    )
    actions, _ = feed(s, audio, T0)

    interrupts = published(actions, "interrupt")
    assert len(interrupts) == 1
    assert published(actions) == interrupts
    assert interrupts[0] == {
        "session_id": SID,
        "type": "interrupt",
        "timestamp": interrupts[0]["timestamp"],
        "speaker_id": "alice",
    }
    # it fires promptly: within 1.5 s of the speech starting (0.5 s in)
    assert T0 + 0.5 < interrupts[0]["timestamp"] <= T0 + 2.0
    assert s.state == "listening"
    assert s.interrupts == 1
    # the barge-in speech itself is still transcribed
    assert outline(actions) == [("audio", 0), ("end", 0), ("audio", 1), ("end", 1)]


def test_state_change_to_responding_then_speech_interrupts() -> None:
    s = new_session()
    _, now = feed(s, silence(1.0), T0)
    assert s.handle(msg({"type": "state_change", "state": "responding"}), now) == []
    more, now = feed(s, utterance("0930").samples, now)
    assert len(published(more, "interrupt")) == 1
    assert published(more, "interrupt")[0]["speaker_id"] is None
    assert s.state == "listening"


def brown(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kernel = 0.995 ** np.arange(2800)
    y = np.convolve(rng.normal(0, 1, int(16000 * seconds)), kernel)[: int(16000 * seconds)]
    return (y / y.std() * 3000).astype(np.int16)


@pytest.mark.parametrize(
    "noise",
    [
        white_noise(4.0, rms=2000.0),
        white_noise(4.0, rms=9000.0, seed=3),
        clicks(4.0),
        clicks(4.0, every_s=0.1, seed=2),
        brown(4.0, seed=0),
        brown(4.0, seed=2),
    ],
    ids=["white", "loud-white", "clicks", "fast-clicks", "brown", "brown-2"],
)
def test_noise_while_responding_does_not_interrupt(noise: np.ndarray) -> None:
    s = new_session()
    start_responding(s)
    actions, _ = feed(s, noise, T0)
    assert published(actions) == []
    assert s.state == "responding"
    assert sends(actions) == []  # and it is not sent to the recognizer either


def test_speech_while_listening_does_not_interrupt() -> None:
    s = new_session()
    s.handle(msg({"type": "start", "speaker_id": "alice"}), T0)
    actions, _ = feed(s, utterance("0880").samples, T0)
    assert published(actions) == []
    assert sends(actions)  # it was heard, just no barge-in


def test_interrupt_detection_can_be_turned_off() -> None:
    s = new_session(SessionConfig(interrupt_enabled=False))
    start_responding(s)
    actions, _ = feed(s, utterance("0880").samples, T0)
    assert published(actions) == []
    assert s.state == "responding"
    assert sends(actions)


# --- (3) finalize and end -------------------------------------------------------------------------
def test_finalize_mid_utterance_ends_it_and_keeps_the_session() -> None:
    speech = utterance("0870").samples  # 7 s of continuous reading
    s = new_session()
    _, now = feed(s, speech[: 16000 * 2], T0)
    assert s.in_utterance
    flushed = s.handle(msg({"type": "finalize"}), now)
    assert ends(flushed) == [EndUtterance(0)]
    assert not any(isinstance(a, Close) for a in flushed)
    assert not s.closed
    assert not s.in_utterance

    rest, now = feed(s, speech[16000 * 2 :], now)
    assert {a.utterance for a in sends(rest)} == {1}  # the rest is a new utterance
    assert s.handle(msg({"type": "finalize"}), now)[-1] == EndUtterance(1)


def test_finalize_on_a_backend_stream_sends_every_sample_before_the_end() -> None:
    speech = utterance("0870").samples[: 16000 * 2 + 123]  # not a whole number of VAD frames
    s = new_session(SessionConfig(service_endpointing=False))
    actions, now = feed(s, speech, T0)
    actions += s.handle(msg({"type": "finalize"}), now)
    assert isinstance(actions[-1], EndUtterance)
    sent = sends(actions)
    assert sum(a.samples.size for a in sent) == speech.size
    assert all(a.offset == b.offset + b.samples.size for b, a in itertools.pairwise(sent))


def test_finalize_without_speech_does_nothing() -> None:
    s = new_session()
    _, now = feed(s, silence(1.0), T0)
    assert s.handle(msg({"type": "finalize"}), now) == []


def test_end_flushes_pending_speech_then_closes() -> None:
    speech = utterance("0870").samples
    s = new_session()
    actions, now = feed(s, speech[: 16000 * 2 + 123], T0)
    assert s.in_utterance
    final = s.handle(msg({"type": "end"}), now)
    assert ends(final) == [EndUtterance(0)]
    assert final[-1] == Close("end")
    assert final.index(EndUtterance(0)) < len(final) - 1
    assert s.closed
    # the tail of the stream, zero-padded to a frame, is sent before the final
    sent = sends(actions + final)
    assert sent[-1].offset + sent[-1].samples.size >= 16000 * 2 + 123

    assert s.handle(chunk(speech[:1600].tobytes()), now + 1) == []
    assert s.handle(msg({"type": "start"}), now + 1) == []
    assert s.handle(msg({"type": "end"}), now + 1) == []
    assert s.tick(now + 1000) == []


def test_end_without_speech_only_closes() -> None:
    s = new_session()
    _, now = feed(s, silence(1.0), T0)
    assert s.handle(msg({"type": "end"}), now) == [Close("end")]


# --- (4) clocks -----------------------------------------------------------------------------------
def test_chunks_stopping_mid_speech_end_the_utterance_after_the_chunk_timeout() -> None:
    speech = utterance("0870").samples
    s = new_session()
    _, now = feed(s, speech[: 16000 * 3], T0)
    assert s.in_utterance
    assert s.tick(now + 0.5) == []
    assert s.in_utterance
    timed_out = s.tick(now + 0.81)
    assert ends(timed_out) == [EndUtterance(0)]
    assert not s.in_utterance
    assert not s.closed
    assert s.tick(now + 1.0) == []  # once


def test_large_chunks_at_real_time_pace_are_not_cut_by_the_clock() -> None:
    # one-second chunks arrive a second apart: between them the clock runs past the 0.8 s
    # timeout, but the audio already delivered has not finished playing until the next arrives
    speech = utterance("0870").samples[: 16000 * 6]  # mid-sentence: no pause long enough to end
    s = new_session()
    now = T0
    actions: list[Action] = []
    for i in range(0, speech.size, 16000):
        actions += s.handle(chunk(speech[i : i + 16000].tobytes()), now)
        actions += s.tick(now + 0.9)
        now += 1.0
    assert ends(actions) == []
    assert s.in_utterance
    assert ends(s.tick(now + 0.85)) == [EndUtterance(0)]


def test_idle_session_is_closed_with_an_error() -> None:
    s = new_session(SessionConfig(idle_timeout_s=10.0))
    _, now = feed(s, silence(1.0), T0)
    assert s.tick(now + 9.0) == []
    # any message keeps the session alive
    assert s.handle(msg({"type": "state_change", "state": "responding"}), now + 9.0) == []
    assert s.tick(now + 18.0) == []
    actions = s.tick(now + 19.0)
    assert len(actions) == 2
    assert isinstance(actions[0], Publish)
    err = actions[0].message
    assert err["type"] == "error"
    assert err["code"] == "session_idle_timeout"
    assert err["session_id"] == SID
    assert err["timestamp"] == now + 19.0
    assert "10" in err["message"]
    assert actions[1] == Close("idle")
    assert s.closed
    assert s.tick(now + 100.0) == []


def test_idle_timeout_mid_speech_flushes_the_utterance_before_closing() -> None:
    s = new_session(SessionConfig(idle_timeout_s=5.0))
    _, now = feed(s, utterance("0870").samples[: 16000 * 2], T0)
    actions = s.tick(now + 5.0)
    assert published(actions, "error")[0]["code"] == "session_idle_timeout"
    assert isinstance(actions[0], Publish)
    assert EndUtterance(0) in actions
    assert actions[-1] == Close("idle")


# --- (5) recognizer results -----------------------------------------------------------------------
def session_with_speech() -> tuple[Session, float]:
    s = new_session()
    s.handle(msg({"type": "start", "speaker_id": "alice"}), T0)
    audio = np.concatenate([utterance("0880").samples, silence(1.5)])
    actions, now = feed(s, audio, T0)
    assert outline(actions) == [("audio", 0), ("end", 0)]
    return s, now


def test_results_become_transcripts_in_sequence() -> None:
    s, now = session_with_speech()
    events = [
        RecognitionEvent(0, "he was", False, 0.31, 0.9),
        RecognitionEvent(0, " he was not an ill ", False, 0.31, 1.8, confidence=0.8),
        RecognitionEvent(
            0, "he was not an ill disposed young man", True, 0.3123, 2.9871, confidence=0.91
        ),
    ]
    messages = []
    measures: list[Measure] = []
    for k, ev in enumerate(events):
        actions = s.on_event(ev, now + k)
        assert len([a for a in actions if isinstance(a, Publish)]) == 1
        messages += published(actions, "transcript")
        measures += [a for a in actions if isinstance(a, Measure)]
    # the metrics: start of speech to the first partial, end of speech to the final (published
    # 2 s after the 1.5 s of silence fed after the recording, which ends in a little silence of
    # its own: 3.5 s and a few hundred ms)
    assert [(m.name, m.utterance) for m in measures] == [("first_partial", 0), ("final", 0)]
    assert 3.5 <= measures[1].seconds < 4.2
    assert measures[0].seconds > 1.5
    assert [m["sequence"] for m in messages] == [0, 1, 2]
    assert [m["is_final"] for m in messages] == [False, False, True]
    assert [m["is_partial"] for m in messages] == [True, True, False]
    assert [m["transcript"] for m in messages] == [
        "he was",
        "he was not an ill",
        "he was not an ill disposed young man",
    ]
    for k, m in enumerate(messages):
        assert m["session_id"] == SID
        assert m["speaker_id"] == "alice"
        assert m["state"] == "listening"
        assert m["has_voice_activity"] is True
        assert m["timestamp"] == now + k
        assert m["turn_index"] == 0
    assert (messages[2]["audio_start"], messages[2]["audio_end"]) == (0.312, 2.987)
    assert messages[2]["confidence"] == 0.91


def test_transcript_carries_the_state_at_publish_time() -> None:
    s, now = session_with_speech()
    s.handle(msg({"type": "state_change", "state": "responding"}), now)
    [m] = published(s.on_event(RecognitionEvent(0, "he was", True, 0.3, 2.9), now))
    assert m["state"] == "responding"


def test_late_partial_and_repeated_final_are_not_published() -> None:
    s, now = session_with_speech()
    assert published(s.on_event(RecognitionEvent(0, "he was not", True, 0.3, 2.9), now))
    assert s.on_event(RecognitionEvent(0, "he was not an", False, 0.3, 2.9), now + 1) == []
    assert s.on_event(RecognitionEvent(0, "he was not", True, 0.3, 2.9), now + 1) == []
    # the next utterance goes on with the next sequence number
    [m] = published(s.on_event(RecognitionEvent(1, "next", False, 5.0, 5.5), now + 2))
    assert m["sequence"] == 1


def test_empty_final_publishes_nothing_and_takes_no_sequence_number() -> None:
    s, now = session_with_speech()
    assert s.on_event(RecognitionEvent(0, "", True, 0.3, 2.9), now) == []
    assert s.on_event(RecognitionEvent(1, "  ", True, 3.0, 4.0), now) == []
    [m] = published(s.on_event(RecognitionEvent(2, "he was", True, 5.0, 6.0), now))
    assert m["sequence"] == 0


def test_recognition_error_becomes_an_error_message() -> None:
    s, now = session_with_speech()
    actions = s.on_event(
        RecognitionError("backend_overloaded", "queue full, audio dropped", 0), now
    )
    assert actions == [
        Publish(
            {
                "session_id": SID,
                "type": "error",
                "code": "backend_overloaded",
                "message": "queue full, audio dropped",
                "timestamp": now,
            }
        )
    ]
    assert not s.closed


def test_has_voice_activity_is_false_for_an_utterance_without_voice() -> None:
    s = new_session(SessionConfig(vad_enabled=False))
    actions, now = feed(s, silence(1.0), T0)
    assert len(sends(actions)) == 16000 // s.config.frame_samples  # without VAD every frame
    assert s.handle(msg({"type": "finalize"}), now) == [EndUtterance(0)]
    [m] = published(s.on_event(RecognitionEvent(0, "you", True, 0.0, 1.0), now))
    assert m["has_voice_activity"] is False


def test_results_after_end_are_still_published() -> None:
    """End publishes finals for pending speech: results arriving after Close must get out."""
    s = new_session()
    _, now = feed(s, utterance("0870").samples[: 16000 * 2], T0)
    s.handle(msg({"type": "end"}), now)
    [m] = published(s.on_event(RecognitionEvent(0, "and mister john", True, 0.0, 2.0), now + 1))
    assert m["is_final"] is True


# --- (6) maximum utterance length -----------------------------------------------------------------
def test_long_continuous_speech_is_cut_at_quiet_frames_without_losing_audio() -> None:
    # ~23 s without a pause: each recording trimmed to its speech, so none ends the utterance
    audio = np.concatenate([speech_only(u.samples) for u in utterances()])
    limit = 16000 * 3
    s = new_session(SessionConfig(max_utterance_samples=limit))
    rng = np.random.default_rng(5)
    sizes = [int(n) for n in rng.integers(101, 6001, size=200)]  # odd byte counts included
    actions = feed_bytes(s, audio.tobytes(), T0, sizes)
    actions += s.handle(msg({"type": "end"}), T0 + 30)

    cuts = [e.until for e in ends(actions) if e.until is not None]
    assert len(cuts) >= audio.size // limit - 1
    assert ends(actions)[-1].until is None  # the last one ends with the stream

    start = span(actions, 0)[0]
    assert start <= 16000 * 3 // 10
    fs = s.config.frame_samples
    for cut in cuts:
        assert 0 < cut - start <= limit
        assert (cut - start) % fs == 0  # on a frame boundary
        frame_db = [rms_dbfs(audio[o - fs : o]) for o in range(start + fs, cut + 1, fs)]
        cut_db = rms_dbfs(audio[cut - fs : cut])
        assert cut_db <= float(np.median(frame_db)), (cut, cut_db, np.median(frame_db))
        start = cut
    assert [e.utterance for e in ends(actions)] == list(range(len(ends(actions))))

    # every sample sent exactly once, with no gap, and it is the input
    sent = sends(actions)
    coverage = np.zeros(audio.size + fs, dtype=int)
    for a in sent:
        coverage[a.offset : a.offset + a.samples.size] += 1
    first = min(a.offset for a in sent)
    last = max(a.offset + a.samples.size for a in sent)
    assert coverage.max() == 1
    assert coverage[first:last].min() == 1
    assert last >= audio.size - 16000  # up to the last words
    assert_sent_audio_is_the_input(actions, np.concatenate([audio, np.zeros(fs, np.int16)]))


# --- (7) start ------------------------------------------------------------------------------------
def test_start_after_audio_is_refused_and_the_session_goes_on() -> None:
    s = new_session()
    _, now = feed(s, utterance("0880").samples[:16000], T0)
    actions = s.handle(msg({"type": "start", "sample_rate": 48000}), now)
    assert len(actions) == 1
    [err] = published(actions, "error")
    assert err["code"] == "session_already_started"
    assert err["session_id"] == SID
    assert not s.closed
    more, _ = feed(s, utterance("0880").samples[16000:], now)
    assert sends(more)  # still 16 kHz mono, still heard


def test_start_sets_stream_params_and_configure_updates_them() -> None:
    s = new_session()
    actions = s.handle(
        msg({"type": "start", "language": "en", "keyterms": ["Dashwood"], "eot_threshold": 0.7}), T0
    )
    assert actions == [
        Reconfigure(
            StreamParams(session_id=SID, language="en", keyterms=("Dashwood",), eot_threshold=0.7)
        )
    ]
    actions = s.handle(msg({"type": "configure", "eot_timeout_ms": 3000}), T0 + 1)
    assert actions == [
        Reconfigure(
            StreamParams(
                session_id=SID,
                language="en",
                keyterms=("Dashwood",),
                eot_threshold=0.7,
                eot_timeout_ms=3000,
            )
        )
    ]


def test_start_at_48k_stereo_is_accepted_and_heard() -> None:
    mono = joined([utterance("0880"), utterance("0930")], gap_s=1.5)
    mono_samples = np.frombuffer(mono.pcm, dtype=np.int16)
    stereo48 = sox_convert(mono, 48000, 2)

    s = new_session()
    assert not published(s.handle(msg({"type": "start", "sample_rate": 48000, "channels": 2}), T0))
    rng = np.random.default_rng(48)
    actions = feed_bytes(s, stereo48.pcm, T0, [int(n) for n in rng.integers(1, 40_000, size=100)])
    actions += s.handle(msg({"type": "end"}), T0 + 20)
    assert published(actions) == []
    assert outline(actions) == [("audio", 0), ("end", 0), ("audio", 1), ("end", 1)]
    assert abs(s.samples_heard - mono_samples.size) <= 480

    # the same utterances as the 16 kHz mono original, to within a few frames
    reference, _ = feed(new_session(), mono_samples, T0)
    for utt in (0, 1):
        got, want = span(actions, utt), span(reference, utt)
        assert abs(got[0] - want[0]) <= 3 * 480 and abs(got[1] - want[1]) <= 3 * 480, (got, want)
    # and the audio sent is the speech, resampled back to 16 kHz
    sent = np.concatenate([a.samples for a in sends(actions) if a.utterance == 0])
    start = span(actions, 0)[0]
    assert np.corrcoef(sent, mono_samples[start : start + sent.size])[0, 1] > 0.99


# --- eager endpointing: a pause is decoded, a finished sentence ends the utterance -------------
EAGER = SessionConfig(hangover_s=0.8, eager_s=0.25)


def speech_then_pause(pause_s: float) -> tuple[Session, list[Action], float]:
    s = new_session(EAGER)
    audio = np.concatenate([silence(0.5), utterance("0880").samples, silence(pause_s)])
    actions, now = feed(s, audio, T0, chunk_samples=480)
    return s, actions, now


def test_a_pause_is_decoded_once_with_the_audio_the_final_would_have() -> None:
    s, actions, _ = speech_then_pause(0.5)
    specs = [i for i, a in enumerate(actions) if isinstance(a, Speculate)]
    # one per pause of at least 0.25 s: this utterance has breaths inside it, and ends with one
    assert specs and all(actions[i] == Speculate(0) for i in specs)
    assert not ends(actions) and s.in_utterance  # 0.5 s < the 0.8 s hangover
    sent_before = span(actions[: specs[-1]], 0)
    assert span(actions, 0) == sent_before  # nothing sent after the last speculation...
    # ...and what was sent runs about 0.25 s past the last voiced frame (its trailing silence)
    assert sent_before[1] - 16000 * (0.5 + utterance("0880").audio.duration) < 0.3 * 16000


def test_a_finished_sentence_at_a_pause_ends_the_utterance_at_once() -> None:
    s, _, now = speech_then_pause(0.4)
    out = s.on_event(EndpointHint(0, "He was not an ill-disposed young man."), now)
    assert ends(out) == [EndUtterance(0)] and not sends(out)
    assert not s.in_utterance


def test_an_unfinished_sentence_waits_for_the_full_silence() -> None:
    s, _, now = speech_then_pause(0.4)
    assert s.on_event(EndpointHint(0, "He was not an ill..."), now) == []
    assert s.on_event(EndpointHint(0, "He was not an"), now) == []
    assert s.in_utterance
    more, _ = feed(s, silence(0.5), now, chunk_samples=480)
    assert ends(more) == [EndUtterance(0)]
    assert not sends(more)  # the decoded pause stays exactly the final's audio


def test_a_hint_after_speech_resumed_is_ignored() -> None:
    s, _, now = speech_then_pause(0.4)
    resumed, now = feed(s, utterance("0930").samples[:8000], now, chunk_samples=480)
    assert sends(resumed)
    assert s.on_event(EndpointHint(0, "He was not an ill-disposed young man."), now) == []
    assert s.in_utterance


def test_a_finished_reading_inside_a_fricative_waits_for_quiet() -> None:
    """ "...rather selfish is to be...": the webrtc detector's voicing test calls the "sh" a
    pause, and a decode there reads "...rather selfish." The utterance must not end inside the
    "sh" (the second half would be decoded alone and misheard); a quiet pause ends it."""
    s = new_session(replace(EAGER, vad="webrtc"))
    selfish = utterance("0890").samples  # "unless to be rather cold hearted and rather selfish..."
    actions, now = feed(s, np.concatenate([silence(0.5), selfish[: int(3.45 * 16000)]]), T0, 480)
    assert Speculate(0) in actions[-10:]  # a pause by the voicing test, 0.33 s into the "sh"
    hint = EndpointHint(0, "Unless to be rather cold-hearted and rather selfish.")
    assert s.on_event(hint, now) == []
    rest, now = feed(s, selfish[int(3.45 * 16000) : int(3.9 * 16000)], now, 480)
    assert not ends(rest) and sends(rest)  # the fricative ran on into "is": one utterance
    assert s.in_utterance


def test_silero_hears_the_fricative_as_speech() -> None:
    """The same "sh" is speech to Silero: no pause is decoded inside "...selfish is to be..."."""
    s = new_session(EAGER)
    selfish = utterance("0890").samples
    actions, _ = feed(s, np.concatenate([silence(0.5), selfish[: int(3.9 * 16000)]]), T0, 512)
    # where each decoded pause was: the end of the audio sent before it
    paused_at = [
        max(a.offset + a.samples.size for a in sends(actions[:i]))
        for i, a in enumerate(actions)
        if isinstance(a, Speculate)
    ]
    assert all(p < (0.5 + 3.1) * 16000 for p in paused_at), paused_at  # none from the "sh" on
    assert not ends(actions) and s.in_utterance


def test_a_finished_sentence_before_a_quiet_pause_ends_once_the_pause_is_quiet() -> None:
    """A finished reading that arrives while the pause is still loud (breath noise 10 dB below
    the voice) is kept: the utterance ends after 150 ms of quiet, with no second decode."""
    s = new_session(EAGER)
    noise = np.random.default_rng(1).normal(0, 1500, 16000 * 3 // 10).astype(np.int16)
    audio = np.concatenate([silence(0.5), utterance("0880").samples, noise])
    actions, now = feed(s, audio, T0, 480)
    assert Speculate(0) in actions  # unvoiced noise: a pause for the voicing test
    assert s.on_event(EndpointHint(0, "He was not an ill-disposed young man."), now) == []
    quiet, _ = feed(s, silence(0.3), now, 480)
    assert ends(quiet) == [EndUtterance(0)] and not sends(quiet)
    end_at = next(i for i, a in enumerate(quiet) if isinstance(a, EndUtterance))
    assert end_at <= 150 // 30  # within the first 150 ms of quiet


def test_a_faint_voiced_frame_in_a_pause_does_not_resume_speech() -> None:
    """0870 ends "...to do for them" and, 0.3 s later, one periodic frame 33 dB below the loudest
    (a breath): that is not the speaker going on, so the decoded pause stays the final's audio
    and a finished sentence ends the utterance."""
    s = new_session(EAGER)
    audio = np.concatenate([silence(0.5), utterance("0870").samples])
    actions, now = feed(s, audio, T0, 480)
    specs = [i for i, a in enumerate(actions) if isinstance(a, Speculate)]
    assert specs and not sends(actions[specs[-1] :])  # nothing sent after the last pause
    hint = EndpointHint(
        0,
        "And Mr. John Dashwood had then leisure to consider how much there "
        "might be prudently in his power to do for them.",
    )
    assert ends(s.on_event(hint, now)) == [EndUtterance(0)]


def test_eager_endpointing_off_sends_no_speculation() -> None:
    s = new_session(SessionConfig(hangover_s=0.8))
    audio = np.concatenate([silence(0.5), utterance("0880").samples, silence(1.0)])
    actions, _ = feed(s, audio, T0, chunk_samples=480)
    assert not [a for a in actions if isinstance(a, Speculate)]
    assert ends(actions) == [EndUtterance(0)]


@pytest.mark.parametrize(
    ("text", "finished"),
    [
        ("He was not an ill-disposed young man.", True),
        ("Is that so?", True),
        ('He said "stop!"', True),
        ("He was not an ill...", False),
        ("because…", False),
        ("and then", False),
        ("", False),
    ],
)
def test_reads_finished(text: str, finished: bool) -> None:
    assert reads_finished(text) is finished
