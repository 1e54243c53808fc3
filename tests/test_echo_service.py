"""Echo-aware barge-in end to end: a real nats-server, the worker, local Whisper, AEC3.

The client streams its microphone and, as the echo reference, what the agent plays (``playback``,
each 100 ms just before the microphone chunk recorded while it played). The agent's own voice
through a loudspeaker neither interrupts nor becomes a transcript; the user talking over it does
both; a bad ``playback`` gets an error and the session goes on.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.echo_paths import EchoPath, mix, scaled_to
from stt_service.commands.client import word_error_rate

from .recordings import prompt
from .speech import pcm16, silence, speech_bounds, utterance

pytestmark = pytest.mark.slow

PATH = EchoPath(delay_ms=200, erl_db=0, rt60_s=0.4, clip=4, seed=3)
PROMPTS = ("vm-intro", "conf-getpin", "vm-options", "auth-thankyou")


def agent_speech() -> np.ndarray:
    """Asterisk's telephone voice reading its prompts (about 17 s): what the agent says."""
    return np.concatenate([p for n in PROMPTS for p in (prompt(n), silence(0.4))])


def room(n: int) -> np.ndarray:
    return (np.random.default_rng(3).standard_normal(n) * 30).astype(np.int16)


def words(messages: list[dict[str, object]]) -> str:
    return " ".join(str(m["transcript"]).strip() for m in messages).strip()


async def test_the_agents_own_voice_neither_interrupts_nor_is_transcribed(service) -> None:
    agent = agent_speech()
    mic = pcm16(mix(PATH.apply(agent), room(agent.size)))
    async with service() as h:
        without = await h.stream("echo-off", mic, speed=4.0, state="responding")
        with_ref = await h.stream(
            "echo-on", mic, speed=4.0, state="responding", playback=pcm16(agent)
        )
    # today's client: the echo barges in and the agent's words come back as the user's
    assert without.interrupts and words(without.finals), without.messages
    assert with_ref.interrupts == [] and words(with_ref.finals) == "", with_ref.messages
    assert with_ref.errors == []


async def test_the_user_talking_over_the_agent_interrupts_and_is_transcribed(service) -> None:
    """The user barges in at 0 dB over the agent, which stops playing half a second later, as an
    interrupted agent does (AEC3 takes much of a user's voice out while the agent talks on:
    docs/benchmarks.md#echo)."""
    user = utterance("0870")  # "And Mr. John Dashwood had then leisure to consider ..."
    lead = 5 * 16000
    n = lead + user.samples.size + 3 * 16000
    agent = np.concatenate([agent_speech()] * 2)[:n]
    loud = scaled_to(user.samples, PATH.apply(agent)[lead : lead + user.samples.size], 0.0)
    agent[lead + int((speech_bounds(loud)[0] + 0.5) * 16000) :] = 0
    echo = PATH.apply(agent)[:n]
    said = np.concatenate([silence(5.0), loud])
    mic = pcm16(mix(echo, said, room(echo.size)))
    async with service() as h:
        res = await h.stream("echo-dt", mic, speed=1.5, state="responding", playback=pcm16(agent))
    (irq,) = res.interrupts[:1]
    assert irq["echo_cancelled"] is True
    finals = [m for m in res.finals if str(m["transcript"]).strip()]
    assert finals and finals[0]["audio_start"] > 4.5, res.messages  # nothing of the echo before
    assert word_error_rate(user.reference, words(finals)) < 0.35, words(finals)


async def test_a_bad_playback_gets_an_error_and_the_session_goes_on(service) -> None:
    u = utterance("0880")
    async with service() as h:
        await h.publish("echo-bad", {"type": "start"})
        await h.publish("echo-bad", {"type": "playback", "audio_b64": "%%%"})
        await h.publish("echo-bad", {"type": "playback", "audio": b"\0\0", "sample_rate": 5})
        res = await h.stream(
            "echo-bad", pcm16(np.concatenate([silence(0.5), u.samples, silence(1.0)]))
        )
    assert [e["code"] for e in res.errors] == ["invalid_audio", "invalid_field"], res.errors
    assert word_error_rate(u.reference, words(res.finals)) < 0.3, res.finals
