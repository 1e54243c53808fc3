"""The service end to end: real nats-server, real worker, real tiny.en model, real speech."""

from __future__ import annotations

import asyncio

import jiwer
import msgpack
import numpy as np
import pytest

from stt_service.commands.client import normalize_text

from .speech import clicks, joined, pcm16, silence, sox_convert, utterance, utterances, white_noise

pytestmark = pytest.mark.slow

TRANSCRIPT_FIELDS = {
    "type": str,
    "session_id": str,
    "transcript": str,
    "sequence": int,
    "is_partial": bool,
    "is_final": bool,
    "timestamp": float,
    "has_voice_activity": bool,
    "state": str,
}


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize_text(reference), normalize_text(hypothesis)))


async def test_transcript_interrupt_and_error_fields(service) -> None:
    u = utterance("0880")
    async with service() as h:
        audio = pcm16(np.concatenate([silence(0.3), u.samples, silence(1.0)]))
        res = await h.stream("contract-1", audio, state="responding", speaker_id="spk-7")
        await h.publish("contract-1", {"type": "nonsense"})
        await h.wait_for(lambda: len(res.errors) == 1)

    transcripts = res.of_type("transcript")
    assert transcripts and transcripts[-1]["is_final"]
    for m in transcripts:
        for name, kind in TRANSCRIPT_FIELDS.items():
            assert isinstance(m[name], kind), (name, m)
        assert m["type"] == "transcript" and m["session_id"] == "contract-1"
        assert m["speaker_id"] == "spk-7"
        assert m["is_partial"] is (not m["is_final"])
        assert m["state"] in ("listening", "responding")
        assert 0 <= m["audio_start"] < m["audio_end"] <= audio.duration + 0.05
        assert 0 < m["confidence"] <= 1
    final = transcripts[-1]
    assert final["has_voice_activity"] is True
    assert final["state"] == "listening"  # the interrupt switched it

    (interrupt,) = res.interrupts
    assert set(interrupt) == {"session_id", "type", "timestamp", "speaker_id"}
    assert interrupt["session_id"] == "contract-1" and interrupt["speaker_id"] == "spk-7"
    assert isinstance(interrupt["timestamp"], float)

    (error,) = res.errors
    assert set(error) == {"session_id", "type", "code", "message", "timestamp"}
    assert error["code"] == "unknown_type" and "nonsense" in error["message"]


async def test_real_speech_separate_finals_in_order_with_low_wer(service) -> None:
    parts = list(utterances())
    async with service() as h:
        res = await h.stream("wer-1", joined(parts, gap_s=1.6), speed=2.0)

    finals = res.finals
    assert len(finals) == len(parts), [f["transcript"] for f in finals]
    for final, part in zip(finals, parts, strict=True):
        assert wer(part.reference, final["transcript"]) <= 0.25, (part.reference, final)
    total = wer(" ".join(p.reference for p in parts), res.text)
    print(f"streaming WER over {len(parts)} LibriVox utterances: {100 * total:.1f}%")
    assert total <= 0.10

    transcripts = res.of_type("transcript")
    sequences = [m["sequence"] for m in transcripts]
    assert sequences == list(range(len(transcripts)))
    # each final comes after partials of its own utterance, and partials never follow their final
    turn_of_final = {f["turn_index"] for f in finals}
    assert len(turn_of_final) == len(finals)
    seen_final: set[int] = set()
    partial_turns: set[int] = set()
    for m in transcripts:
        assert m["turn_index"] not in seen_final
        (seen_final if m["is_final"] else partial_turns).add(m["turn_index"])
    assert partial_turns == seen_final
    # audio_start/audio_end place each final on the session's audio timeline
    speech_start = 0.5
    for final, part in zip(finals, parts, strict=True):
        speech_end = speech_start + part.audio.duration
        assert speech_start - 0.4 <= final["audio_start"] <= speech_start + 0.8, final
        assert speech_end - 1.0 <= final["audio_end"] <= speech_end + 0.5, final
        speech_start = speech_end + 1.6


@pytest.mark.parametrize(
    ("rate", "channels"), [(8000, 1), (44100, 1), (48000, 1), (16000, 2), (48000, 2)]
)
async def test_other_rates_and_stereo_give_the_same_transcript(service, rate, channels) -> None:
    u = utterance("0920")
    base = pcm16(np.concatenate([silence(0.3), u.samples, silence(1.2)]))
    converted = sox_convert(base, rate, channels)
    async with service() as h:
        reference = await h.stream("rate-ref", base, speed=0)
        other = await h.stream("rate-x", converted, speed=0)
    assert len(other.finals) == 1 and len(reference.finals) == 1
    ref_text, got = normalize_text(reference.text), normalize_text(other.text)
    # 8 kHz telephone audio loses everything above 4 kHz; allow one word of difference there
    assert wer(ref_text, got) <= (0.1 if rate == 8000 else 0.0), (ref_text, got)
    assert other.finals[0]["audio_end"] == pytest.approx(reference.finals[0]["audio_end"], abs=0.05)


async def test_interrupt_fires_once_for_speech_while_responding(service) -> None:
    u = utterance("0930")
    audio = pcm16(np.concatenate([silence(1.0), u.samples, silence(1.0)]))
    async with service() as h:
        res = await h.stream("barge-1", audio, state="responding", speed=2.0)
    assert len(res.interrupts) == 1
    # it fired early in the utterance, before the final arrived
    messages = res.messages
    assert messages.index(res.interrupts[0]) < messages.index(res.finals[0])


@pytest.mark.parametrize(
    "noise",
    [
        pytest.param(lambda: white_noise(4.0, rms=3000), id="white-noise"),
        pytest.param(lambda: white_noise(4.0, rms=300, seed=3), id="quiet-noise"),
        pytest.param(lambda: clicks(4.0), id="clicks"),
    ],
)
async def test_no_interrupt_and_no_final_for_noise(service, noise) -> None:
    audio = pcm16(np.concatenate([silence(0.5), noise(), silence(1.0)]))
    async with service() as h:
        res = await h.stream("noise-1", audio, state="responding", speed=4.0)
    assert res.interrupts == []
    assert res.finals == [], res.finals


async def test_no_interrupt_for_speech_while_listening(service) -> None:
    u = utterance("0930")
    async with service() as h:
        res = await h.stream("listen-1", joined([u]), state="listening", speed=4.0)
    assert res.interrupts == []
    assert len(res.finals) == 1


async def test_state_change_to_responding_then_speech_interrupts(service) -> None:
    u = utterance("0880")
    async with service() as h:
        await h.publish("sc-1", {"type": "start"})
        await h.publish("sc-1", {"type": "state_change", "state": "responding"})
        res = await h.stream("sc-1", joined([u]), send_start=False, speed=4.0)
    assert len(res.interrupts) == 1
    assert res.finals and res.finals[-1]["state"] == "listening"


BAD_INPUTS = [
    ("bad-bytes", b"\xc1\xff not msgpack", "invalid_msgpack"),
    ("bad-list", msgpack.packb([1, 2, 3]), "invalid_message"),
    ("bad-notype", msgpack.packb({"audio_b64": "AAAA"}), "missing_type"),
    ("bad-type", msgpack.packb({"type": "shout"}), "unknown_type"),
    ("bad-b64", msgpack.packb({"type": "chunk", "audio_b64": "###not base64###"}), "invalid_audio"),
    ("bad-field", msgpack.packb({"type": "start", "sample_rate": "16000"}), "invalid_field"),
    ("bad-state", msgpack.packb({"type": "state_change", "state": 7}), "invalid_field"),
    (
        "bad-mismatch",
        msgpack.packb({"type": "start", "session_id": "other"}),
        "session_id_mismatch",
    ),
    ("bad$id", msgpack.packb({"type": "start"}), "invalid_session_id"),
    ("x" * 129, msgpack.packb({"type": "start"}), "invalid_session_id"),
    ("bad-huge", msgpack.packb({"type": "chunk", "audio": b"\0" * 600_000}), "chunk_too_large"),
    ("bad-end", msgpack.packb({"type": "end"}), "unknown_session"),
]


async def test_bad_input_gets_errors_and_a_healthy_session_is_untouched(service) -> None:
    healthy = utterance("0870")
    async with service() as h:
        stream = asyncio.create_task(h.stream("healthy-1", joined([healthy]), speed=3.0))
        await asyncio.sleep(0.5)
        for sid, payload, _ in BAD_INPUTS:
            await h.nc.publish(f"ai.voice.stream.{sid}", payload)
            await asyncio.sleep(0.05)
        # bad messages inside the healthy session's own stream
        await h.publish("healthy-1", b"garbage")
        await h.publish("healthy-1", {"type": "chunk", "audio_b64": "%%%"})
        await h.publish("healthy-1", {"type": "chunk", "audio": 5})
        res = await stream
        await h.wait_for(lambda: all(h.results(sid).errors for sid, _, _ in BAD_INPUTS))

    for sid, _, code in BAD_INPUTS:
        errors = h.results(sid).errors
        assert [e["code"] for e in errors] == [code], (sid, errors)
        assert errors[0]["session_id"] == sid and errors[0]["message"]
    assert [e["code"] for e in res.errors] == ["invalid_msgpack", "invalid_audio", "invalid_field"]
    assert len(res.finals) == 1
    assert wer(healthy.reference, res.text) <= 0.1, res.text


async def test_base64_audio_and_bare_start(service) -> None:
    u = utterance("0880")
    async with service() as h:
        await h.publish("bare-1", {"type": "start"})
        res = await h.stream("bare-1", joined([u]), send_start=False, raw=False)
    assert not res.errors
    assert wer(u.reference, res.text) <= 0.3


async def test_chunks_without_start_open_a_session(service) -> None:
    u = utterance("0930")
    async with service() as h:
        res = await h.stream("nostart-1", joined([u]), send_start=False)
    assert not res.errors
    assert wer(u.reference, res.text) <= 0.1


async def test_end_flushes_the_pending_final(service) -> None:
    u = utterance("0920")
    async with service(stt_chunk_timeout=5.0) as h:
        # no trailing silence: only `end` can finish this utterance
        res = await h.stream("end-1", pcm16(np.concatenate([silence(0.3), u.samples])))
    assert len(res.finals) == 1
    assert wer(u.reference, res.text) <= 0.15


async def test_finalize_publishes_a_final_without_ending_the_session(service) -> None:
    first, second = utterance("0880"), utterance("0930")
    async with service(stt_chunk_timeout=5.0) as h:
        await h.stream("fin-1", pcm16(first.samples), send_end=False, wait=False)
        await h.publish("fin-1", {"type": "finalize"})
        res = h.results("fin-1")
        await h.wait_for(lambda: len(res.finals) == 1)
        assert "fin-1" in h.worker.sessions
        await h.stream("fin-1", pcm16(second.samples), send_start=False)
    assert len(res.finals) == 2
    # each final is its own utterance's words (tiny.en spells "ill-disposed" "old-s-posed": 3
    # of 8 words; accuracy itself is measured in bench/run.py)
    for u, final in zip([first, second], res.finals, strict=True):
        assert wer(u.reference, final["transcript"]) <= 0.4, (u.reference, final["transcript"])


async def test_chunks_stopping_mid_utterance_finalise_on_the_clock(service) -> None:
    u = utterance("0930")
    async with service(stt_chunk_timeout=0.6) as h:
        await h.stream("stall-1", pcm16(u.samples), send_end=False, wait=False, speed=0)
        res = h.results("stall-1")
        await h.wait_for(lambda: len(res.finals) == 1, timeout=10)
        assert "stall-1" in h.worker.sessions  # finalised, not closed
    assert wer(u.reference, res.text) <= 0.15


async def test_max_sessions_and_idle_timeout(service) -> None:
    async with service(stt_max_sessions=2, stt_session_idle_timeout=1.0) as h:
        for sid in ("cap-1", "cap-2", "cap-3"):
            await h.publish(sid, {"type": "start"})
        await h.wait_for(lambda: bool(h.results("cap-3").errors))
        assert h.results("cap-3").errors[0]["code"] == "too_many_sessions"
        assert set(h.worker.sessions) == {"cap-1", "cap-2"}
        await h.wait_for(lambda: not h.worker.sessions, timeout=5)
        await h.wait_for(lambda: bool(h.results("cap-1").errors and h.results("cap-2").errors))
        for sid in ("cap-1", "cap-2"):
            assert [e["code"] for e in h.results(sid).errors] == ["session_idle_timeout"]


async def test_eight_concurrent_sessions(service) -> None:
    parts = list(utterances()) + list(utterances())[:3]
    async with service() as h:
        results = await asyncio.gather(
            *(h.stream(f"multi-{i}", joined([u]), speed=1.5) for i, u in enumerate(parts))
        )
    for u, res in zip(parts, results, strict=True):
        assert not res.errors
        assert len(res.finals) == 1, res.finals
        assert wer(u.reference, res.text) <= 0.25, (u.reference, res.text)


async def test_vad_off_still_transcribes_and_flags_voice(service) -> None:
    u = utterance("0880")
    async with service(stt_enable_vad=False) as h:
        res = await h.stream("novad-1", joined([u]))
    assert len(res.finals) == 1
    assert res.finals[0]["has_voice_activity"] is True
    assert wer(u.reference, res.text) <= 0.3


async def test_audio_after_end_does_not_revive_the_session(service) -> None:
    u = utterance("0930")
    async with service() as h:
        res = await h.stream("ended-1", joined([u]), extra_start={"sample_rate": 16000})
        await h.publish("ended-1", {"type": "chunk", "audio": b"\0" * 3200})
        await h.wait_for(lambda: bool(res.errors))
        assert "ended-1" not in h.worker.sessions
        # a new start reopens the id, with a fresh sequence
        await h.stream("ended-1", joined([u]))
    assert [e["code"] for e in res.errors] == ["unknown_session"]
    finals = res.finals
    assert len(finals) == 2 and [f["sequence"] for f in finals] == [finals[0]["sequence"]] * 2


async def test_a_language_the_model_does_not_know_is_reported_not_fatal(service) -> None:
    u = utterance("0930")
    async with service() as h:
        res = await h.stream("lang-1", joined([u]), extra_start={"language": "de-DE"})
    (error,) = res.errors
    assert error["code"] == "invalid_field" and "de-DE" in error["message"]
    assert len(res.finals) == 1
    assert wer(u.reference, res.text) <= 0.1


async def test_a_reused_id_gets_the_earlier_sessions_finals_first(service) -> None:
    """'end' then a new 'start' under the same id, both at once: two decodes run side by side
    (WHISPER_WORKERS), and the second session's short utterance decodes faster than the first's
    long one. The client still gets the first session's finals first: it cannot tell the two
    sessions apart otherwise."""
    first, second = [utterance("0870"), utterance("0890")], utterance("0920")
    async with service(whisper_workers=2) as h:
        await h.stream("reuse-order", joined(first, gap_s=0.2), speed=0, wait=False)
        await h.stream("reuse-order", joined([second]), speed=0, wait=False)
        await h.wait_closed("reuse-order")
    finals = [m["transcript"] for m in h.results("reuse-order").finals]
    said = " ".join(u.reference for u in first)
    assert wer(said, " ".join(finals[:-1])) <= 0.15, finals
    assert wer(second.reference, finals[-1]) <= 0.15, finals
