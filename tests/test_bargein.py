"""Barge-in in stages, without I/O: which transcripts confirm an interrupt, which take it back,
and the interrupt that waits for words."""

from __future__ import annotations

import pytest

from stt_service.session.bargein import Backchannels, BargeIn, Cancel, Interrupt, words

T = 1000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Uh-huh.", ["uh", "huh"]),
        ("Mm-hmm, yeah!", ["mm", "hmm", "yeah"]),
        ("(coughing) [laughs] *sigh* ♪", []),
        ("I'd like that.", ["i'd", "like", "that"]),
        ("‘Okay’, he said", ["okay", "he", "said"]),
    ],
)
def test_words(text: str, expected: list[str]) -> None:
    assert words(text) == expected


@pytest.mark.parametrize(
    ("text", "substantive", "reason"),
    [
        ("Uh-huh.", 0, "backchannel"),
        ("Mm-hmm.", 0, "backchannel"),
        ("Yeah. Okay, right.", 0, "backchannel"),
        ("I see.", 0, "backchannel"),
        ("Oh, all right.", 0, "backchannel"),
        ("", 0, "no_words"),
        ("(coughs)", 0, "no_words"),
        ("Ha ha ha.", 0, "no_words"),
        ("Um, uh...", 0, "no_words"),
        ("Mmm. Uhhh, hahahaha! Heh.", 0, "no_words"),
        ("He was", 2, None),  # "he" is a word, "hehe" is not
        ("Hehe, her hat", 2, None),
        ("Yeah, wait a second", 3, None),
        ("Oh no!", 1, None),
        ("Stop.", 1, None),
        ("Right now, please", 2, None),  # "right" is a backchannel, "now, please" is not
        ("Seeing is believing", 3, None),  # "i see" matches whole words only
    ],
)
def test_backchannels_are_told_from_words(text: str, substantive: int, reason: str | None) -> None:
    b = Backchannels()
    assert b.substantive(text) == substantive
    assert b.reason(text) == reason


def test_the_backchannel_list_is_configurable() -> None:
    b = Backchannels(["uh-huh", "sounds good"])
    assert b.substantive("Sounds good.") == 0
    assert b.substantive("Yeah.") == 1  # not in this list any more
    assert b.reason("Uh huh") == "backchannel"  # spelled without the hyphen


def test_an_interrupt_goes_out_at_once_and_the_final_s_words_confirm_it() -> None:
    b = BargeIn()
    assert b.voice(2.0, T, utterance=3) == Interrupt(2.0)
    assert b.pending
    # partials decide nothing: on a short sound they are guesses
    assert b.heard("Uh-fuh", final=False, audio_end=2.5, utterance=3, now=T + 0.4) is None
    assert b.pending
    assert b.heard("Wait, stop.", final=True, audio_end=3.0, utterance=3, now=T + 1) is None
    assert not b.pending  # real words: nothing more to decide
    assert b.heard("", final=True, audio_end=4.0, utterance=4, now=T + 1.5) is None


def test_a_misheard_partial_does_not_keep_a_backchannel_from_being_taken_back() -> None:
    b = BargeIn()
    b.voice(2.0, T, utterance=0)
    assert b.heard("Uh-fuh", final=False, audio_end=2.5, utterance=0, now=T + 0.4) is None
    assert b.heard("Uh-huh.", final=True, audio_end=2.6, utterance=0, now=T + 1.1) == Cancel(
        "backchannel"
    )


@pytest.mark.parametrize(
    ("final", "reason"), [("", "no_words"), ("Mm-hmm.", "backchannel"), ("(cough)", "no_words")]
)
def test_a_final_without_words_takes_the_interrupt_back(final: str, reason: str) -> None:
    b = BargeIn(false_timeout=2.0)
    assert b.voice(2.0, T, utterance=3) == Interrupt(2.0)
    # partials of backchannels neither confirm nor cancel
    assert b.heard("Mm", final=False, audio_end=2.4, utterance=3, now=T + 0.3) is None
    assert b.heard(final, final=True, audio_end=2.6, utterance=3, now=T + 1.2) == Cancel(reason)  # type: ignore[arg-type]
    assert not b.pending


def test_an_earlier_utterances_final_decides_nothing() -> None:
    b = BargeIn()
    b.voice(5.0, T, utterance=4)
    assert b.heard("", final=True, audio_end=4.0, utterance=3, now=T + 0.1) is None
    assert b.pending
    assert b.heard("", final=True, audio_end=6.0, utterance=4, now=T + 1.0) == Cancel("no_words")


def test_too_late_to_take_back() -> None:
    b = BargeIn(false_timeout=1.5)
    b.voice(2.0, T, utterance=0)
    b.ended(T + 0.5, utterance=0)
    assert b.heard("Uh-huh.", final=True, audio_end=3.0, utterance=0, now=T + 2.1) is None
    assert not b.pending


def test_the_time_to_take_back_runs_from_the_end_of_the_speech() -> None:
    """A laugh of three seconds: its final comes only after it ends, long after the interrupt,
    and is still in time."""
    b = BargeIn(false_timeout=1.5)
    b.voice(2.0, T, utterance=0)
    assert b.tick(T + 3.0, speaking=True, waits_for_final=True) is None
    b.ended(T + 3.0, utterance=0)
    assert b.tick(T + 3.5, speaking=False, waits_for_final=True) is None
    assert b.heard("", final=True, audio_end=5.0, utterance=0, now=T + 3.9) == Cancel("no_words")


def test_a_second_of_voice_read_as_nothing_is_speech_the_model_cannot_read() -> None:
    """French over a noisy line to an English model: its final is empty, but a cough is not a
    second of voice. The interrupt stands; a short sound read as nothing is still taken back,
    and so is a long backchannel."""
    b = BargeIn(false_timeout=2.0)
    b.voice(2.0, T, utterance=0)
    b.ended(T + 1.8, utterance=0, voiced_s=1.6)
    assert b.heard("", final=True, audio_end=4.0, utterance=0, now=T + 2.3) is None
    assert not b.pending
    b.voice(6.0, T + 5, utterance=1)
    b.ended(T + 5.5, utterance=1, voiced_s=0.4)
    assert b.heard("", final=True, audio_end=7.0, utterance=1, now=T + 6) == Cancel("no_words")
    b.voice(9.0, T + 8, utterance=2)
    b.ended(T + 9.5, utterance=2, voiced_s=1.3)
    assert b.heard("Yeah, yeah, yeah.", final=True, audio_end=11.0, utterance=2, now=T + 10) == (
        Cancel("backchannel")
    )


def test_no_timeout_means_never_taken_back() -> None:
    b = BargeIn(false_timeout=0.0)
    assert b.voice(2.0, T, utterance=0) == Interrupt(2.0)
    assert not b.pending
    assert b.heard("", final=True, audio_end=3.0, utterance=0, now=T + 0.5) is None


def test_with_min_words_the_interrupt_waits_for_them() -> None:
    b = BargeIn(min_words=2)
    assert b.voice(2.0, T, utterance=1) is None
    assert b.holding
    assert b.heard("Yeah, wait", final=False, audio_end=2.6, utterance=1, now=T + 0.5) is None
    decision = b.heard("Yeah, wait, stop", final=False, audio_end=3.0, utterance=1, now=T + 1)
    assert decision == Interrupt(2.0)  # from the speech's onset
    assert not b.pending


def test_with_min_words_a_backchannel_interrupts_nothing() -> None:
    b = BargeIn(min_words=1)
    assert b.voice(2.0, T, utterance=1) is None
    assert b.heard("Uh-huh.", final=True, audio_end=2.8, utterance=1, now=T + 1) is None
    assert not b.pending  # nothing went out, so nothing is taken back


def test_backend_turns_without_a_final_are_taken_back_on_the_clock() -> None:
    """Where the backend finds turns, noise may never become a final: once the voice has been
    gone a second with no word transcribed, the speech held no words."""
    b = BargeIn(false_timeout=2.0)
    b.voice(2.0, T, utterance=None)
    assert b.tick(T + 0.5, speaking=True, waits_for_final=False) is None
    assert b.tick(T + 1.0, speaking=False, waits_for_final=False) is None  # the voice stopped
    assert b.tick(T + 1.5, speaking=False, waits_for_final=False) is None
    assert b.tick(T + 2.0, speaking=False, waits_for_final=False) == Cancel("no_words")
    # a word in a partial: the final decides, and without one the interrupt stands
    b.voice(9.0, T + 5, utterance=None)
    b.heard("Wait", final=False, audio_end=9.5, utterance=None, now=T + 5.3)
    assert b.tick(T + 6.0, speaking=False, waits_for_final=False) is None
    assert b.tick(T + 8.1, speaking=False, waits_for_final=False) is None
    assert not b.pending
    # the service finds the utterances: only the final decides
    b.voice(12.0, T + 10, utterance=3)
    b.ended(T + 10.5, utterance=3)
    assert b.tick(T + 12.0, speaking=False, waits_for_final=True) is None
    assert b.pending
    assert b.tick(T + 12.6, speaking=False, waits_for_final=True) is None  # 2 s after: stands
    assert not b.pending


def test_a_state_change_from_the_client_ends_what_was_pending() -> None:
    b = BargeIn()
    b.voice(2.0, T, utterance=0)
    b.reset()
    assert b.heard("", final=True, audio_end=3.0, utterance=0, now=T + 0.5) is None
