"""The recognition half of a realtime emulator connection (:mod:`.realtime_session`): a
generation's state, the partial decodes whose agreed words go out as deltas while audio arrives,
and the final decode that ends the generation with each dialect's transcript events.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .transcriber import RATE, Transcriber

PARTIAL_EVERY_S = 0.6  # new audio between two partial decodes of a generation
PARTIAL_MIN_S = 2.5  # no delta before this much audio: Whisper guesses the first words on less
SETTLED_S = 1.0  # a partial decode's words that end later than this before the audio's end wait


@dataclass
class Generation:
    audio: bytearray = field(default_factory=bytearray)  # 16 kHz PCM16
    ended: bool = False  # the final commit came
    emitted: list[str] = field(default_factory=list)  # words sent as deltas
    last_words: list[str] = field(default_factory=list)  # the last partial decode's words
    decoded_at: int = 0  # audio bytes at the last partial decode
    partial: asyncio.Task[None] | None = None  # the partial decode running, if any

    @property
    def decoding(self) -> bool:
        return self.partial is not None and not self.partial.done()


class GenerationDecoding:
    """The decodes of a connection's generations, mixed into
    :class:`~.realtime_session.RealtimeEmulator`, which holds the state read here and sends."""

    dialect: str
    partials: bool
    closed: bool
    transcripts: list[str]
    _prompt: str
    _gen: Generation | None
    _pending: bytearray

    if TYPE_CHECKING:

        @property
        def transcriber(self) -> Transcriber: ...
        def _spawn(self, coro: Any) -> asyncio.Task[None]: ...
        def _send(self, msg: dict[str, Any]) -> None: ...
        def _event_id(self) -> str: ...

    def _maybe_partial(self, gen: Generation) -> None:
        if (
            not self.partials
            or self.dialect != "vllm"
            or gen.decoding
            or len(gen.audio) < PARTIAL_MIN_S * RATE * 2
            or len(gen.audio) - gen.decoded_at < PARTIAL_EVERY_S * RATE * 2
            or self.transcriber.busy >= self.transcriber.workers  # finals first
        ):
            return
        gen.decoded_at = len(gen.audio)
        gen.partial = self._spawn(self._partial(gen, bytes(gen.audio)))

    async def _partial(self, gen: Generation, audio: bytes) -> None:
        words = await asyncio.to_thread(
            self.transcriber.settled_words, audio, self._prompt, SETTLED_S
        )
        if gen.ended or gen is not self._gen:
            return
        agreed = 0
        limit = min(len(words), len(gen.last_words))
        while agreed < limit and _norm(words[agreed]) == _norm(gen.last_words[agreed]):
            agreed += 1
        gen.last_words = words
        if agreed > len(gen.emitted):
            new = words[len(gen.emitted) : agreed]
            gen.emitted += new
            self._send({"type": "transcription.delta", "delta": " " + " ".join(new)})

    async def _finish(self, gen: Generation, item: str | None = None) -> None:
        if gen.partial is not None:  # its deltas go out before the rest
            await asyncio.gather(gen.partial, return_exceptions=True)
        text = await asyncio.to_thread(self.transcriber.transcribe, bytes(gen.audio), self._prompt)
        if self.closed:
            return
        words = text.split()
        if item is not None:  # OpenAI: deltas, then the whole transcript
            for i, word in enumerate(words):
                delta = word if i == 0 else " " + word
                self._send(
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "event_id": self._event_id(),
                        "item_id": item,
                        "content_index": 0,
                        "delta": delta,
                    }
                )
            self.transcripts.append(text)
            self._send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "event_id": self._event_id(),
                    "item_id": item,
                    "content_index": 0,
                    "transcript": text,
                    "usage": {"type": "duration", "seconds": round(len(gen.audio) / 2 / RATE, 3)},
                }
            )
            return
        if gen is not self._gen:
            return  # failed meanwhile (an error event ended it)
        rest = words[len(gen.emitted) :]
        delta = " " + " ".join(rest) if rest else ""
        self._send({"type": "transcription.delta", "delta": delta})  # often empty, as vLLM's
        full = (" " + " ".join(gen.emitted) if gen.emitted else "") + delta  # = the deltas
        self.transcripts.append(full.strip())
        tokens = max(1, len(full.split()))
        self._send(
            {
                "type": "transcription.done",
                "text": full,
                "usage": {
                    "prompt_tokens": len(gen.audio) // 2560,  # about one per 80 ms of audio
                    "total_tokens": len(gen.audio) // 2560 + tokens,
                    "completion_tokens": tokens,
                    "prompt_tokens_details": None,
                },
            }
        )
        self._gen = None  # vLLM clears the queue after done: appends after it start afresh
        self._pending.clear()


def _norm(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum())
