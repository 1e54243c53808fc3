"""A client of the service's NATS protocol: stream audio for a session, collect what comes back.

Used by ``stt-service demo`` and ``send``, by the tests and by the benchmark, so they all speak the
protocol the same way a real client does.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..audio import WavAudio

DEFAULT_INPUT = "ai.voice.stream"
DEFAULT_OUTPUT = "ai.voice.transcription"


@dataclass
class SessionResults:
    """Everything published for one session, with arrival times (``time.monotonic()``)."""

    session_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type", "transcript") == kind]

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.of_type("transcript") if m.get("is_final")]

    @property
    def partials(self) -> list[dict[str, Any]]:
        return [m for m in self.of_type("transcript") if m.get("is_partial")]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.of_type("error")

    @property
    def interrupts(self) -> list[dict[str, Any]]:
        return self.of_type("interrupt")

    @property
    def cancelled_interrupts(self) -> list[dict[str, Any]]:
        return self.of_type("interrupt_cancelled")

    @property
    def text(self) -> str:
        return " ".join(m["transcript"] for m in self.finals)


class ResultCollector:
    """Subscribes to ``{output}.*`` and files each message under its session."""

    def __init__(
        self,
        nc: NATS,
        output_subject: str = DEFAULT_OUTPUT,
        on_message: Callable[[SessionResults, dict[str, Any]], None] | None = None,
    ) -> None:
        self.nc = nc
        self.output_subject = output_subject
        self.sessions: dict[str, SessionResults] = {}
        self.on_message = on_message
        self._sub: Subscription | None = None

    async def start(self, session: str = "*") -> ResultCollector:
        self._sub = await self.nc.subscribe(f"{self.output_subject}.{session}", cb=self._cb)
        await self.nc.flush()
        return self

    def results(self, session_id: str) -> SessionResults:
        if session_id not in self.sessions:
            self.sessions[session_id] = SessionResults(session_id)
        return self.sessions[session_id]

    async def _cb(self, msg: Msg) -> None:
        sid = msg.subject.rsplit(".", 1)[-1]
        try:
            data = msgpack.unpackb(msg.data, raw=False)
        except Exception:
            data = {"type": "undecodable", "raw": msg.data[:64]}
        res = self.results(sid)
        res.messages.append(data)
        res.arrivals.append(time.monotonic())
        if self.on_message is not None:
            self.on_message(res, data)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


@dataclass
class StreamTiming:
    """When each part of the audio was published (to measure latency from an audio position)."""

    started: float = 0.0
    sent_seconds: list[tuple[float, float]] = field(default_factory=list)  # (audio_end_s, t)

    def sent_at(self, audio_s: float) -> float | None:
        for end, t in self.sent_seconds:
            if end >= audio_s - 1e-6:
                return t
        return None


async def stream_audio(
    nc: NATS,
    session_id: str,
    audio: WavAudio,
    *,
    input_subject: str = DEFAULT_INPUT,
    chunk_ms: int = 100,
    speed: float = 1.0,
    state: str = "listening",
    speaker_id: str | None = None,
    raw: bool = True,
    send_start: bool = True,
    send_end: bool = True,
    loop: bool = False,
    duration: float | None = None,
    progress: Callable[[float], None] | None = None,
    extra_start: dict[str, Any] | None = None,
    timing: StreamTiming | None = None,
    playback: WavAudio | None = None,
) -> StreamTiming:
    """Publish ``start``, the audio in ``chunk_ms`` chunks at ``speed`` x real time, then ``end``.

    ``speed=0`` sends as fast as possible. ``loop`` repeats the audio; ``duration`` stops after
    that many seconds of audio (the file's length by default, or forever with ``loop``).
    ``playback`` (mono): what the agent plays meanwhile, from the first chunk on, sent as the
    echo reference: each ``chunk_ms`` of it as a ``playback`` just before the microphone chunk
    recorded while it played (as a client sends it when it starts playing it).
    """
    subject = f"{input_subject}.{session_id}"
    timing = timing or StreamTiming()
    timing.started = time.monotonic()
    if send_start:
        start: dict[str, Any] = {
            "type": "start",
            "session_id": session_id,
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
            "state": state,
        }
        if speaker_id:
            start["speaker_id"] = speaker_id
        start.update(extra_start or {})
        await nc.publish(subject, msgpack.packb(start))
    bytes_per_s = 2 * audio.channels * audio.sample_rate
    step = max(
        2 * audio.channels,
        bytes_per_s * chunk_ms // 1000 // (2 * audio.channels) * 2 * audio.channels,
    )
    sent_s = 0.0
    t0 = time.monotonic()
    limit = duration if duration else (None if loop else audio.duration)
    i = 0
    while limit is None or sent_s < limit - 1e-9:
        if i >= len(audio.pcm):
            if not loop:
                break
            i = 0
        piece = audio.pcm[i : i + step]
        if limit is not None:  # do not overshoot the duration
            room = round((limit - sent_s) * bytes_per_s)
            piece = piece[: max(2 * audio.channels, room - room % (2 * audio.channels))]
        if playback is not None:
            await _send_playback(nc, subject, playback, sent_s, len(piece) / bytes_per_s, raw)
        i += len(piece)
        msg: dict[str, Any] = {"type": "chunk", "timestamp": time.time()}
        if raw:
            msg["audio"] = piece
        else:
            msg["audio_b64"] = base64.b64encode(piece).decode()
        await nc.publish(subject, msgpack.packb(msg, use_bin_type=True))
        sent_s += len(piece) / bytes_per_s
        timing.sent_seconds.append((sent_s, time.monotonic()))
        if progress is not None:
            progress(sent_s)
        if speed > 0:
            delay = t0 + sent_s / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    if send_end:
        await nc.publish(subject, msgpack.packb({"type": "end"}))
    await nc.flush()
    return timing


async def _send_playback(
    nc: NATS, subject: str, playback: WavAudio, at_s: float, seconds: float, raw: bool
) -> None:
    """The agent's playback from ``at_s`` for ``seconds`` (nothing once it has ended)."""
    rate = playback.sample_rate
    lo, hi = round(at_s * rate) * 2, round((at_s + seconds) * rate) * 2
    piece = playback.pcm[lo:hi]
    if not piece:
        return
    msg: dict[str, Any] = {"type": "playback", "sample_rate": rate}
    if raw:
        msg["audio"] = piece
    else:
        msg["audio_b64"] = base64.b64encode(piece).decode()
    await nc.publish(subject, msgpack.packb(msg, use_bin_type=True))


_MR = re.compile(r"\bmr\b")
_MRS = re.compile(r"\bmrs\b")
_PUNCT = re.compile(r"[^a-z0-9' ]+")


def normalize_text(text: str) -> str:
    """Lower-case words without punctuation, for word error rates (``Mr.`` -> ``mister``)."""
    t = text.lower().replace("-", " ")
    t = _PUNCT.sub(" ", t)
    t = _MR.sub("mister", _MRS.sub("missus", t))
    return " ".join(t.replace("'", "").split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length, after :func:`normalize_text`."""
    ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


def format_message(m: dict[str, Any], latency_ms: float | None = None) -> str:
    """One readable line for a published message (the Flux load tester's style)."""
    kind = m.get("type", "transcript")
    if kind == "transcript":
        text = m.get("transcript", "")
        if m.get("is_final"):
            info = [f"#{m.get('sequence')}"]
            if m.get("confidence") is not None:
                info.append(f"{100 * m['confidence']:.1f}%")
            if m.get("audio_start") is not None:
                info.append(f"{m['audio_start']:.2f}-{m.get('audio_end', 0):.2f} s")
            if m.get("end_of_turn_confidence") is not None:
                info.append(f"done {100 * m['end_of_turn_confidence']:.0f}%")
            if latency_ms is not None:
                info.append(f"+{latency_ms:.0f} ms")
            if m.get("speaker_id"):
                info.append(f"speaker {m['speaker_id']}")
            return f"✓ {text}  [{', '.join(info)}]"
        if m.get("event") == "eager_end_of_turn" and m.get("end_of_turn_confidence") is not None:
            return f"… {text} [eager_end_of_turn, done {100 * m['end_of_turn_confidence']:.0f}%]"
        event = f" [{m['event']}]" if m.get("event") else ""
        return f"… {text}{event}"
    if kind == "interrupt":
        who = f" (speaker {m['speaker_id']})" if m.get("speaker_id") else ""
        over = " over the agent's playback (echo cancelled)" if m.get("echo_cancelled") else ""
        return f"⚡ interrupt{who}: user barged in{over}, state -> listening"
    if kind == "interrupt_cancelled":
        who = f" (speaker {m['speaker_id']})" if m.get("speaker_id") else ""
        why = {
            "no_words": "the speech held no words",
            "backchannel": "only a backchannel",
        }.get(str(m.get("reason")), str(m.get("reason")))
        return f"↩ interrupt taken back{who}: {why}, state -> responding"
    if kind == "error":
        return f"✗ error {m.get('code')}: {m.get('message')}"
    return f"? {m}"
