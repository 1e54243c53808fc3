"""Barge-in end to end: a real nats-server, the worker, the real model, recorded audio.

A false interruption is taken back (``interrupt_cancelled``) and the session returns to
``responding``; a real one is not; ``STT_INTERRUPT_MIN_WORDS`` waits for words; Flux's turns take
an interrupt back the same way.
"""

from __future__ import annotations

import numpy as np
import pytest

from stt_service.commands.client import SessionResults
from stt_service.emulator.sagemaker import SageMakerEmulator

from .recordings import alsa_noise, looped, prompt
from .speech import pcm16, silence, utterance
from .test_flux_service import flux_settings

pytestmark = pytest.mark.slow


def after_a_pause(x: np.ndarray, lead: float = 1.5, tail: float = 2.5) -> np.ndarray:
    return np.concatenate([silence(lead), x, silence(tail)])


def kinds(res: SessionResults) -> list[str]:
    """What the client saw, in order: interrupts, take-backs and finals (partials left out)."""
    out = []
    for m in res.messages:
        if m["type"] == "transcript":
            if m["is_final"]:
                out.append(f"final:{m['state']}")
        else:
            out.append(m["type"])
    return out


def right() -> np.ndarray:
    """A woman saying "right" on a telephone line (cut from Asterisk's "right bracket")."""
    return prompt("letters/ascii93")[: int(0.505 * 16000)]


async def test_a_backchannel_takes_the_interrupt_back(service) -> None:
    """ "Right." while the assistant speaks: interrupt, then taken back as a backchannel; its
    final still comes, with the state back at ``responding``."""
    async with service() as h:
        res = await h.stream(
            "bc-1",
            pcm16(after_a_pause(right())),
            speed=1.0,
            state="responding",
            speaker_id="ann",
        )
    assert kinds(res) == ["interrupt", "interrupt_cancelled", "final:responding"], res.messages
    (cancel,) = res.cancelled_interrupts
    assert cancel["reason"] == "backchannel" and cancel["speaker_id"] == "ann"
    assert set(cancel) == {"session_id", "type", "timestamp", "speaker_id", "reason"}
    (irq,) = res.interrupts
    # taken back within STT_FALSE_INTERRUPT_TIMEOUT (2 s) of the end of "right" (1.5 s in)
    assert cancel["timestamp"] > irq["timestamp"]


async def test_noise_that_interrupts_holds_no_words_and_is_taken_back(service) -> None:
    """The old detector (STT_VAD=webrtc) calls ALSA's speaker-test noise speech and interrupts;
    Whisper hears no words in it, so the interrupt is taken back: the safety net behind any
    detector. (With Silero the same noise interrupts nothing: tests/test_voice.py.)"""
    noise = looped(alsa_noise(), 3 * 1.41)
    async with service(stt_vad="webrtc") as h:
        res = await h.stream("noise-1", pcm16(after_a_pause(noise)), speed=1.0, state="responding")
    assert res.interrupts, "the old detector no longer interrupts on this noise: pick another"
    assert [m["reason"] for m in res.cancelled_interrupts] == ["no_words"] * len(res.interrupts)
    assert not res.finals


async def test_alsa_noise_looped_three_times_does_not_interrupt(service) -> None:
    """The report that started the work: speaker-test's pink noise to a responding session."""
    async with service() as h:
        res = await h.stream(
            "fan-1", pcm16(looped(alsa_noise(), 3 * 1.41)), speed=2.0, state="responding"
        )
    assert res.messages == []


async def test_a_real_barge_in_is_never_taken_back(service) -> None:
    async with service() as h:
        res = await h.stream(
            "real-1",
            pcm16(after_a_pause(utterance("0880").samples)),
            speed=1.0,
            state="responding",
        )
    assert kinds(res) == ["interrupt", "final:listening"]
    assert "young man" in res.finals[0]["transcript"].lower()


async def test_min_words_waits_for_words_and_ignores_a_backchannel(service) -> None:
    async with service(stt_interrupt_min_words=2) as h:
        real = await h.stream(
            "words-1",
            pcm16(after_a_pause(utterance("0880").samples)),
            speed=1.0,
            state="responding",
        )
        yes = await h.stream(
            "words-2", pcm16(after_a_pause(right())), speed=1.0, state="responding"
        )
    assert kinds(yes) == ["final:responding"]  # "Right." was heard, and interrupted nothing
    assert kinds(real)[0] == "interrupt" and not real.cancelled_interrupts
    # it went out with the first transcript that holds two words, not on the voice alone
    i = real.messages.index(real.interrupts[0])
    before = [m["transcript"] for m in real.messages[:i] if m["type"] == "transcript"]
    assert all(len(t.split()) < 2 for t in before), before
    assert len(real.messages[i + 1]["transcript"].split()) >= 2


async def test_a_flux_turn_without_words_takes_its_interrupt_back(service) -> None:
    """Flux's StartOfTurn interrupts; a turn that ends with an empty transcript (the emulator's
    script gives this turn no words, as the model does for a cough) takes it back."""
    async with SageMakerEmulator(script=[""]) as emu, service(**flux_settings(emu)) as h:
        res = await h.stream(
            "flux-cough",
            pcm16(after_a_pause(utterance("0930").samples[:9600])),
            speed=1.0,
            state="responding",
        )
    assert res.interrupts
    assert [m["reason"] for m in res.cancelled_interrupts] == ["no_words"]
    assert not res.finals
