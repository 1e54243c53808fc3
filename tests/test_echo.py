"""Echo cancellation in the session core (no I/O): the agent's playback as the reference.

Recorded speech through simulated echo paths (``bench/echo_paths.py``), WebRTC's AEC3 for real:
the echo alone never interrupts with the reference (and does without it), the user over the echo
still does and the interrupt says the echo was cancelled, a reference at another rate works, a
reference sent before the microphone or far ahead of it is placed or resynchronised, and bad
``playback`` messages get clear errors.
"""

from __future__ import annotations

import base64

import msgpack
import numpy as np
import pytest
import soxr

from bench.echo_paths import EchoPath, mix, scaled_to
from stt_service.protocol import Code, ProtocolError, parse_inbound
from stt_service.session import SendAudio, Session, SessionConfig
from stt_service.session.actions import Action

from .recordings import prompt
from .speech import silence, speech_bounds, utterance
from .test_session import T0, chunk, msg, published

CHUNK = 1600
PATH = EchoPath(delay_ms=120, erl_db=6, rt60_s=0.2, clip=3)


def agent_speech() -> np.ndarray:
    """About 20 s of the LibriVox reader: what the agent says."""
    parts = [utterance(n).samples for n in ("0870", "0890", "0920", "0930")]
    return np.concatenate([p for x in parts for p in (x, silence(0.4))])


def room(n: int) -> np.ndarray:
    return (np.random.default_rng(7).standard_normal(n) * 30).astype(np.int16)


def responding() -> Session:
    s = Session("echo-1", SessionConfig(), T0)
    s.handle(msg({"type": "start", "state": "responding"}), T0)
    return s


def play(
    s: Session,
    mic: np.ndarray,
    playback: np.ndarray | None,
    now: float = T0,
    rate: int = 16000,
) -> tuple[list[Action], list[float]]:
    """Stream ``mic`` in 100 ms chunks, each after the 100 ms of ``playback`` (at ``rate``) that
    played meanwhile, as a client sends them; returns the actions and, for every interrupt, where
    in the audio it came (seconds). After an interrupt the agent goes on: ``responding`` again."""
    actions: list[Action] = []
    at: list[float] = []
    step = rate // 10
    for k, i in enumerate(range(0, mic.size, CHUNK)):
        if playback is not None and k * step < playback.size:
            piece = playback[k * step : (k + 1) * step].tobytes()
            actions += s.handle(msg({"type": "playback", "audio": piece, "sample_rate": rate}), now)
        now += 0.1
        out = s.handle(chunk(mic[i : i + CHUNK].tobytes()), now)
        actions += out
        if published(out, "interrupt"):
            at.append((i + CHUNK) / 16000)
            s.handle(msg({"type": "state_change", "state": "responding"}), now)
    return actions, at


def test_the_echo_alone_interrupts_without_the_reference_and_never_with_it() -> None:
    agent = agent_speech()
    mic = mix(PATH.apply(agent), room(agent.size))
    _, without = play(responding(), mic, None)
    assert len(without) >= 3  # today: the agent's own voice barges in, again and again

    s = responding()
    actions, with_ref = play(s, mic, agent)
    assert with_ref == []
    assert not [a for a in actions if isinstance(a, SendAudio)]  # nothing for the recognizer
    assert not published(actions, "error")
    echo = s.intake.echo
    assert echo is not None and echo.suppressed_frames > 100  # the detector heard the echo
    assert abs(echo.reference.received_s - agent.size / 16000) < 0.01


def test_the_user_over_the_echo_interrupts_and_the_interrupt_says_the_echo_was_cancelled() -> None:
    agent = agent_speech()
    lead = 5 * 16000
    user = prompt("vm-intro")
    echo = PATH.apply(agent)[: lead + user.size + 16000]
    said = np.concatenate([np.zeros(lead, np.int16), scaled_to(user, echo[lead:], 0.0)])
    mic = mix(echo, said, room(echo.size))
    onset = lead / 16000 + speech_bounds(user)[0]
    s = responding()
    actions, at = play(s, mic, agent)
    assert at and onset < at[0] < onset + 0.6, (at, onset)
    (first,) = published(actions, "interrupt")[:1]
    assert first["echo_cancelled"] is True
    # the user's words go to the recognizer: the utterance starts at the user's speech
    sent = [a for a in actions if isinstance(a, SendAudio)]
    assert sent and sum(a.samples.size for a in sent) > user.size // 2

    # a session without a reference publishes the interrupt as before: no new field
    plain = responding()
    out, _ = play(plain, np.concatenate([silence(1.0), user, silence(1.0)]), None)
    interrupts = published(out, "interrupt")  # (the prompt's pauses may re-arm it)
    assert interrupts and all(
        set(irq) == {"session_id", "type", "timestamp", "speaker_id"} for irq in interrupts
    )


def test_a_reference_at_another_rate_is_resampled() -> None:
    """An agent speaking at 8 kHz (a telephone voice): the loudspeaker plays the 8 kHz audio,
    the client sends it as it is, and the service resamples it beside the 16 kHz microphone."""
    at8k = np.asarray(soxr.resample(agent_speech()[: 10 * 16000].astype(np.float32), 16000, 8000))
    reference = np.clip(np.round(at8k), -32768, 32767).astype(np.int16)
    played = np.asarray(soxr.resample(reference.astype(np.float32), 8000, 16000))
    agent = np.clip(np.round(played), -32768, 32767).astype(np.int16)
    mic = mix(PATH.apply(agent), room(agent.size))
    s = responding()
    _, at = play(s, mic, reference, rate=8000)
    assert at == []
    assert s.intake.echo is not None
    assert abs(s.intake.echo.reference.received_s - 10.0) < 0.05


def test_playback_before_start_counts_from_when_it_arrived() -> None:
    """The agent greets before the microphone streams: what has been played by the first chunk
    is no reference for it (2 s here); the rest lines up, and ``start`` is still accepted."""
    agent = agent_speech()[: 12 * 16000]
    s = Session("echo-1", SessionConfig(), T0)
    for k in range(0, 20):  # 2 s of playback, sent at once, as it began playing
        piece = agent[k * CHUNK : (k + 1) * CHUNK].tobytes()
        assert not published(s.handle(msg({"type": "playback", "audio": piece}), T0))
    assert not published(s.handle(msg({"type": "start", "state": "responding"}), T0), "error")
    mic = mix(PATH.apply(agent)[2 * 16000 :], room(10 * 16000))
    _, at = play(s, mic, agent[2 * 16000 :], now=T0 + 2.0)
    assert s.intake.echo is not None
    assert abs(s.intake.echo.reference.dropped_s - 2.0) < 0.01
    assert at == []


def test_a_reference_far_ahead_of_the_microphone_is_resynchronised_and_nothing_is_dropped() -> None:
    agent = agent_speech()
    s = responding()
    errors = []
    for k in range(0, 120):  # 12 s of playback with no microphone: the client's mic stalled
        piece = agent[k * CHUNK : (k + 1) * CHUNK].tobytes()
        errors += published(s.handle(msg({"type": "playback", "audio": piece}), T0), "error")
    (error,) = errors
    assert error["code"] == Code.PLAYBACK_RESYNC and "ahead" in error["message"]
    mic = mix(PATH.apply(agent[12 * 16000 :]), room(agent.size - 12 * 16000))
    s.handle(msg({"type": "playback", "audio": agent[12 * 16000 :][:CHUNK].tobytes()}), T0)
    play(s, mic, agent[12 * 16000 + CHUNK :], now=T0)
    s.close(T0 + 100, "end")
    assert s.samples_heard >= mic.size  # every microphone sample was heard


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ({"type": "playback"}, Code.INVALID_FIELD, "exactly one of"),
        ({"type": "playback", "audio": b"\0\0", "audio_b64": "AAA="}, Code.INVALID_FIELD, "one of"),
        ({"type": "playback", "audio_b64": "not base64!"}, Code.INVALID_AUDIO, "base64"),
        ({"type": "playback", "audio": b"\0\0", "sample_rate": "16k"}, Code.INVALID_FIELD, "rate"),
        ({"type": "playback", "audio": b"\0\0", "sample_rate": 4000}, Code.INVALID_FIELD, "8000"),
        ({"type": "playback", "audio": b"\0" * 2_000_000}, Code.CHUNK_TOO_LARGE, "playback"),
    ],
)
def test_a_bad_playback_gets_a_clear_error(
    message: dict[str, object], code: str, words: str
) -> None:
    parsed = parse_inbound(msgpack.packb(message, use_bin_type=True), "echo-1", 1_000_000)
    assert isinstance(parsed, ProtocolError)
    assert parsed.code == code and words in parsed.message, parsed


def test_an_odd_length_playback_keeps_its_byte_for_the_next() -> None:
    agent = agent_speech()[: CHUNK * 10]
    raw = agent.tobytes()
    s = responding()
    for i in range(0, len(raw), 3201):  # odd-length pieces: a sample split across two
        piece = base64.b64encode(raw[i : i + 3201]).decode()
        assert not published(s.handle(msg({"type": "playback", "audio_b64": piece}), T0))
    assert s.intake.echo is not None
    assert s.intake.echo.reference.received_s == pytest.approx(10 * CHUNK / 16000, abs=1e-3)


def test_the_cli_says_when_an_interrupt_came_over_the_agents_playback() -> None:
    from stt_service.commands.client import format_message

    m = {"type": "interrupt", "speaker_id": None, "echo_cancelled": True}
    assert "over the agent's playback (echo cancelled)" in format_message(m)
    assert "echo" not in format_message({"type": "interrupt", "speaker_id": None})
