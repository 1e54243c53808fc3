"""Barge-in in stages inside the session core, on real speech (no I/O): the recognizer's events
are given by hand, so each path is exact."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stt_service.backends.base import RecognitionEvent
from stt_service.session import Measure, Session, SessionConfig
from tests.speech import silence, speech_bounds, utterance
from tests.test_session import T0, feed, msg, published

SPEECH = np.concatenate([silence(1.0), utterance("0880").samples, silence(1.2)])
_on = int(speech_bounds(utterance("0880").samples)[0] * 16000)
# a short sound: the first 0.6 s of the sentence's voice (a cough or an "uh" is as long)
SHORT = np.concatenate([silence(1.0), utterance("0880").samples[_on : _on + 9600], silence(1.2)])


def responding(config: SessionConfig | None = None) -> Session:
    s = Session("barge-1", config or SessionConfig(hangover_s=0.8), T0)
    s.handle(msg({"type": "start", "state": "responding", "speaker_id": "ann"}), T0)
    return s


def final(text: str, utterance: int = 0, start: float = 1.0, end: float = 3.8) -> RecognitionEvent:
    return RecognitionEvent(utterance, text, True, start, end)


def test_a_final_with_words_lets_the_interrupt_stand() -> None:
    s = responding()
    actions, now = feed(s, SPEECH, T0)
    assert [m["type"] for m in published(actions)] == ["interrupt"]
    out = s.on_event(final("He was not an ill-disposed young man."), now)
    assert [m["type"] for m in published(out)] == ["transcript"]
    assert s.state == "listening" and s.cancelled_interrupts == 0


def test_a_final_without_words_takes_it_back_and_responding_resumes() -> None:
    s = responding()
    _, now = feed(s, SHORT, T0)
    assert s.state == "listening"
    out = s.on_event(final(""), now)
    (cancel,) = published(out)
    assert cancel == {
        "session_id": "barge-1",
        "type": "interrupt_cancelled",
        "timestamp": now,
        "speaker_id": "ann",
        "reason": "no_words",
    }
    assert s.state == "responding" and s.cancelled_interrupts == 1
    # barge-in is armed again: the next speech interrupts anew
    more, _ = feed(s, SPEECH, now)
    assert [m["type"] for m in published(more)] == ["interrupt"]


def test_a_sentence_the_recognizer_reads_no_word_in_still_interrupts() -> None:
    """Seconds of voice with an empty final: a language the model does not know, or a bad
    line; not a cough."""
    s = responding()
    _, now = feed(s, SPEECH, T0)
    assert s.state == "listening"
    assert published(s.on_event(final(""), now)) == []
    assert s.state == "listening" and s.cancelled_interrupts == 0


def test_a_backchannel_is_taken_back_and_still_transcribed() -> None:
    s = responding()
    _, now = feed(s, SPEECH, T0)
    out = s.on_event(final("Mm-hmm."), now)
    assert [m["type"] for m in published(out)] == ["interrupt_cancelled", "transcript"]
    cancel, text = published(out)
    assert cancel["reason"] == "backchannel"
    assert text["transcript"] == "Mm-hmm." and text["state"] == "responding"


def test_a_take_back_too_long_after_the_speech_is_not_sent() -> None:
    s = responding(SessionConfig(hangover_s=0.8, false_interrupt_timeout=0.5))
    _, now = feed(s, SPEECH, T0)  # the utterance ended 0.8 s into the trailing silence
    assert not s.in_utterance
    out = s.on_event(final(""), now + 1.0)
    assert published(out) == [] and s.state == "listening"


def test_a_state_change_from_the_client_settles_it() -> None:
    s = responding()
    _, now = feed(s, SPEECH, T0)
    s.handle(msg({"type": "state_change", "state": "listening"}), now)
    assert published(s.on_event(final(""), now)) == []
    assert s.state == "listening"


def test_with_min_words_the_interrupt_waits_for_the_words() -> None:
    s = responding(SessionConfig(hangover_s=0.8, interrupt_min_words=2))
    actions, now = feed(s, SPEECH, T0)
    assert published(actions) == [] and s.state == "responding"  # voice alone: nothing yet
    one = s.on_event(RecognitionEvent(0, "He", False, 1.0, 1.6), now)
    assert [m["type"] for m in published(one)] == ["transcript"]
    two = s.on_event(RecognitionEvent(0, "He was not", False, 1.0, 2.0), now + 0.5)
    assert [m["type"] for m in published(two)] == ["interrupt", "transcript"]
    assert published(two)[1]["state"] == "listening"
    # its latency counts from the speech's onset, not from the words
    (measure,) = [a for a in two if isinstance(a, Measure)]
    assert measure.name == "interrupt" and measure.seconds > 1.0


def test_with_min_words_words_before_the_voice_detector_count() -> None:
    """The first partial can decode the pre-roll before the detector has decided: its words are
    what the interrupt waits for."""
    s = responding(SessionConfig(hangover_s=0.8, interrupt_min_words=2))
    _, now = feed(s, SPEECH[: 16000 + 1600], T0)  # 100 ms of speech: no verdict yet
    out = s.on_event(RecognitionEvent(0, "He was", False, 0.7, 1.1), now)
    assert [m["type"] for m in published(out)] == ["interrupt", "transcript"]


def test_flux_turns_take_an_interrupt_back_too() -> None:
    """Where the backend finds turns: StartOfTurn interrupts, an empty EndOfTurn takes it back."""
    s = responding(replace(SessionConfig(), service_endpointing=False))
    sot = RecognitionEvent(0, "", False, 2.0, 2.1, event="start_of_turn", started_speaking=True)
    out = s.on_event(sot, T0 + 2.2)
    assert [m["type"] for m in published(out)] == ["interrupt"]
    eot = RecognitionEvent(0, "", True, 2.0, 2.6, event="end_of_turn", turn_index=0)
    out = s.on_event(eot, T0 + 3.2)
    assert [(m["type"], m.get("reason")) for m in published(out)] == [
        ("interrupt_cancelled", "no_words")
    ]
    assert s.state == "responding"
