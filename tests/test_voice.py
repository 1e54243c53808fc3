"""The voice detector on recorded noise, music and speech, in the session core (no I/O).

A session that starts ``responding`` hears each bed: noise, music and hum must neither interrupt
nor become an utterance (audio sent to the recognizer); speech, clean and in noise, must do both.
``STT_VAD=webrtc`` (the detector before Silero) fails the beds: that is what the tests guard.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stt_service.session import Action, Session, SessionConfig
from stt_service.speech.vad import SileroDetector, resolve_all
from tests.recordings import alsa_noise, at_dbfs, looped, mains_hum, music, prompt, synth
from tests.speech import silence, utterance, utterances
from tests.test_session import T0, feed, msg, published, sends

SILERO = SessionConfig()
WEBRTC = replace(SessionConfig(), vad="webrtc")


def responding(config: SessionConfig) -> Session:
    s = Session("voice-1", config, T0)
    s.handle(msg({"type": "start", "state": "responding"}), T0)
    return s


BEDS = {
    "alsa-noise-as-recorded": lambda: looped(alsa_noise(), 8.0),
    "alsa-noise-10dBFS": lambda: at_dbfs(looped(alsa_noise(), 8.0), -10),
    "music-robot-dity-20dBFS": lambda: at_dbfs(music("macroform-robot_dity"), -20),
    "music-robot-dity-10dBFS": lambda: at_dbfs(music("macroform-robot_dity"), -10),
    "music-simplicity-10dBFS": lambda: at_dbfs(music("macroform-the_simplicity"), -10),
    "music-coffee-10dBFS": lambda: at_dbfs(music("manolo_camp-morning_coffee"), -10),
    "pink-20dBFS": lambda: at_dbfs(synth("pinknoise"), -20),
    "pink-10dBFS": lambda: at_dbfs(synth("pinknoise"), -10),
    "brown-10dBFS": lambda: at_dbfs(synth("brownnoise"), -10),
    "hum-20dBFS": lambda: at_dbfs(mains_hum(), -20),
    "hum-10dBFS": lambda: at_dbfs(mains_hum(), -10),
}


@pytest.mark.parametrize("bed", list(BEDS))
def test_recorded_noise_music_and_hum_neither_interrupt_nor_become_utterances(bed: str) -> None:
    s = responding(SILERO)
    actions, _ = feed(s, BEDS[bed](), T0)
    assert published(actions) == []
    assert s.state == "responding"
    assert sends(actions) == []  # nothing for the recognizer to turn into words


def test_the_detector_before_silero_interrupted_on_alsa_noise() -> None:
    """The report that started this: speaker-test's noise looped three times interrupted."""
    s = responding(WEBRTC)
    actions, _ = feed(s, looped(alsa_noise(), 3 * 1.41), T0)
    assert published(actions, "interrupt")  # webrtcvad + pitch test: a false barge-in
    s = responding(SILERO)
    actions, _ = feed(s, looped(alsa_noise(), 3 * 1.41), T0)
    assert published(actions) == []


def test_the_detector_before_silero_fails_most_beds() -> None:
    failed = []
    for name, make in BEDS.items():
        s = responding(WEBRTC)
        actions, _ = feed(s, make(), T0)
        if published(actions, "interrupt") or sends(actions):
            failed.append(name)
    assert len(failed) >= len(BEDS) // 2, failed


def speech_in(bed: np.ndarray | None, speech: np.ndarray, snr_db: float | None) -> np.ndarray:
    """2 s of the bed, then the speech over it at ``snr_db`` (of the speech's level), then 1 s."""
    lead, tail = 32000, 16000
    x = np.zeros(lead + speech.size + tail)
    x[lead : lead + speech.size] = speech
    if bed is not None and snr_db is not None:
        b = np.resize(bed, x.size).astype(np.float64)
        level = np.sqrt(np.mean(speech.astype(np.float64) ** 2))
        b *= level / np.sqrt(np.mean(b**2)) / 10 ** (snr_db / 20)
        x += b
    return np.clip(x, -32768, 32767).astype(np.int16)


SPEECH = {
    **{f"librivox-{u.name[-4:]}": (lambda u=u: u.samples) for u in utterances()},
    "prompt-goodbye": lambda: prompt("goodbye"),
    "prompt-please-try-again": lambda: prompt("please-try-again"),
    "prompt-one-moment-please": lambda: prompt("one-moment-please"),
}


@pytest.mark.parametrize("name", list(SPEECH))
@pytest.mark.parametrize(
    ("bed", "snr"), [(None, None), ("pink", 10.0), ("music", 10.0)], ids=["clean", "pink", "music"]
)
def test_speech_interrupts_and_is_heard_clean_and_in_noise(
    name: str, bed: str | None, snr: float | None
) -> None:
    noise = {
        None: None,
        "pink": synth("pinknoise"),
        "music": music("manolo_camp-morning_coffee"),
    }[bed]
    speech = SPEECH[name]()
    s = responding(SILERO)
    actions, _ = feed(s, speech_in(noise, speech, snr), T0)
    interrupts = [a for a in actions if published([a], "interrupt")]
    assert len(interrupts) == 1
    # within 1 s of the speech (2 s in): the interrupt's time is the chunk that completed it
    (irq,) = published(actions, "interrupt")
    assert T0 + 2.0 < irq["timestamp"] < T0 + 3.0
    sent = sends(actions)
    assert sent and min(a.offset for a in sent) < 32000 + 16000 // 2  # the utterance begins
    voiced = {a.utterance for a in sent}
    assert len(voiced) <= 3  # one utterance, or a few at the speaker's pauses


def interleaved(
    sessions: list[Session], audios: list[np.ndarray], batched: bool
) -> list[list[Action]]:
    """Stream every session's audio in turns of 100 ms chunks; with ``batched``, run the network
    for all sessions at once after each turn (as the worker's batcher does)."""
    out: list[list[Action]] = [[] for _ in sessions]
    for s in sessions:
        s.batched = batched
    for i in range(0, max(a.size for a in audios), 1600):
        now = T0 + i / 16000
        for k, (s, a) in enumerate(zip(sessions, audios, strict=True)):
            if i < a.size:
                out[k] += s.handle(msg({"type": "chunk", "audio": a[i : i + 1600].tobytes()}), now)
        if batched:
            resolve_all([s.voice for s in sessions])
            for k, s in enumerate(sessions):
                out[k] += s.voice_ready(now)
    return out


def test_batched_and_one_by_one_decide_the_same() -> None:
    """The frames of several sessions in one network call give each session exactly what it
    would have got alone, messages queued behind waiting frames included."""
    audios = [
        np.concatenate([silence(0.7), utterance("0880").samples, silence(1.0)]),
        at_dbfs(music("macroform-robot_dity", seconds=4.0), -10),
        np.concatenate([silence(0.3), utterance("0930").samples, silence(1.2)]),
    ]

    def run(batched: bool) -> list[list[Action]]:
        sessions = [responding(SILERO) for _ in audios]
        actions = interleaved(sessions, audios, batched)
        for k, s in enumerate(sessions):  # a finalize behind whatever still waits
            actions[k] += s.handle(msg({"type": "finalize"}), T0 + 9)
            if batched:
                resolve_all([s.voice])
                actions[k] += s.voice_ready(T0 + 9)
        return actions

    one_by_one, batched = run(False), run(True)
    for a, b in zip(one_by_one, batched, strict=True):
        assert [type(x).__name__ for x in a] == [type(x).__name__ for x in b]
        assert [(x.offset, x.utterance) for x in sends(a)] == [
            (x.offset, x.utterance) for x in sends(b)
        ]
        assert [m["type"] for m in published(a)] == [m["type"] for m in published(b)]


def test_a_message_behind_waiting_frames_waits_for_them() -> None:
    """Batched, a finalize that arrives while its chunk's frames wait for the network is handled
    after them: the utterance it ends holds that chunk's audio."""
    s = responding(SILERO)
    s.batched = True
    speech = np.concatenate([silence(0.5), utterance("0880").samples[: 16000 * 2]])
    actions: list[Action] = []
    for i in range(0, speech.size, 1600):
        actions += s.handle(msg({"type": "chunk", "audio": speech[i : i + 1600].tobytes()}), T0)
    assert s.awaiting_voice and not sends(actions)  # nothing decided yet
    actions += s.handle(msg({"type": "finalize"}), T0)
    assert isinstance(s.voice, SileroDetector)
    while s.awaiting_voice:  # as the worker's batcher: until nothing waits
        resolve_all([s.voice])
        actions += s.voice_ready(T0 + 0.05)
    names = [type(a).__name__ for a in actions]
    assert "EndUtterance" in names and names.index("EndUtterance") > names.index("SendAudio")
    last_sent = max(a.offset + a.samples.size for a in sends(actions))
    assert last_sent > speech.size - 1600  # the last chunk went into the utterance first
