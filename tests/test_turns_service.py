"""Semantic end of turn end to end: a real nats-server, the worker, Whisper and Smart Turn on
recorded speech; and a missing or broken model file at start-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from stt_service.commands.cli import format_message
from stt_service.commands.client import normalize_text

from .speech import pcm16, silence, utterance
from .test_cli import CLI, _env
from .test_turns import paused

pytestmark = pytest.mark.slow


async def test_a_complete_turn_is_one_final_with_the_models_confidence(service) -> None:
    x = np.concatenate([silence(0.5), utterance("0920").samples, silence(2.5)])
    async with service() as h:
        res = await h.stream("turn-1", pcm16(x), speed=2.0)
    (final,) = res.finals
    assert "respectable" in final["transcript"]
    assert final["end_of_turn_confidence"] >= 0.5  # STT_TURN_THRESHOLD: it ended at the pause
    assert all("end_of_turn_confidence" not in m for m in res.partials)
    shown = format_message(final)  # what `stt-service tail` prints
    assert f"done {100 * final['end_of_turn_confidence']:.0f}%" in shown, shown


async def test_a_pause_in_mid_sentence_does_not_split_the_turn(service) -> None:
    """ "Had he married a more amiable [1.2 s] woman, he might have been made still more
    respectable than he was.": one final with the whole sentence. Silence alone
    (STT_TURN_MODEL=off, STT_CHUNK_TIMEOUT 0.8 s) publishes the first half as a final."""
    x, _ = paused("0920", "amiable", 1.2)
    async with service() as h:
        res = await h.stream("turn-2", pcm16(x), speed=2.0)
    (final,) = res.finals
    text = normalize_text(final["transcript"])
    assert "amiable" in text and "respectable" in text, text
    async with service(stt_turn_model="off") as h:
        res = await h.stream("turn-3", pcm16(x), speed=2.0)
    assert len(res.finals) == 2, res.finals
    assert "amiable" in normalize_text(res.finals[0]["transcript"])


async def test_an_eager_end_of_turn_comes_before_the_final_with_the_same_words(service) -> None:
    x = np.concatenate([silence(0.5), utterance("0920").samples, silence(2.5)])
    async with service() as h:
        res = await h.stream(
            "eager-1", pcm16(x), speed=2.0, extra_start={"eager_eot_threshold": 0.3}
        )
    events = [m.get("event") for m in res.messages if m.get("event")]
    assert events == ["eager_end_of_turn", "end_of_turn"], events
    (eager,) = [m for m in res.messages if m.get("event") == "eager_end_of_turn"]
    (final,) = res.finals
    assert not eager["is_final"] and eager["end_of_turn_confidence"] >= 0.3
    assert normalize_text(eager["transcript"]) == normalize_text(final["transcript"])
    assert "eager_end_of_turn, done" in format_message(eager)  # what `stt-service tail` shows


async def test_an_eager_end_taken_back_when_the_user_goes_on(service) -> None:
    """Two sentences, 1.2 s apart, with a session that ends turns only when the model is sure
    (``eot_threshold`` 0.99, ``eot_timeout_ms`` 3000) and announces them early (0.05): the
    first sentence's end is announced, the second's speech takes it back, and the one final holds
    both, as ``end_of_turn``. Without ``eager_eot_threshold`` neither eager message is sent."""
    first, second = utterance("0920").samples, utterance("0930").samples
    x = np.concatenate([silence(0.5), first, silence(1.2), second, silence(4.0)])
    params = {"eager_eot_threshold": 0.05, "eot_threshold": 0.99, "eot_timeout_ms": 3000}
    async with service() as h:
        res = await h.stream("eager-2", pcm16(x), speed=2.0, extra_start=params)
        plain = await h.stream("eager-3", pcm16(x), speed=2.0, extra_start={"eot_threshold": 0.99})
    events = [m.get("event") for m in res.messages if m.get("event")]
    assert events[:2] == ["eager_end_of_turn", "turn_resumed"], events
    assert events[-1] == "end_of_turn" and events.count("end_of_turn") == 1, events
    (final,) = res.finals
    text = normalize_text(final["transcript"])
    assert "respectable" in text and "amiable himself" in text, text
    assert not [m for m in plain.messages if m.get("event")]


def test_a_missing_model_file_stops_start_up_with_one_line() -> None:
    out = subprocess.run(
        [*CLI, "serve"],
        env=_env("nats://127.0.0.1:9", STT_TURN_MODEL_PATH="/nowhere/smart-turn.onnx"),
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "STT_TURN_MODEL_PATH" in lines[0], out.stderr


def test_a_broken_model_file_stops_start_up_with_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "smart-turn.onnx"
    broken.write_bytes(Path(__file__).read_bytes())  # not a network
    out = subprocess.run(
        [*CLI, "serve"],
        env=_env("nats://127.0.0.1:9", STT_TURN_MODEL_PATH=str(broken)),
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("stt-service:")]
    assert "cannot load the end-of-turn model" in line and str(broken) in line
