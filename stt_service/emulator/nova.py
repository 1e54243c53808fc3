"""A Deepgram Nova (``/v1/listen``) stand-in, sans-I/O, for tests, benchmarks and offline demos.

It cannot recognise speech. It speaks Nova's exact JSON (deepgram-sdk v7 ``listen.v1`` models),
driven by the audio it receives: energy starts an utterance (``SpeechStarted`` when the query asks
for ``vad_events``), a scripted line is revealed word by word in interim ``Results`` as the speech
goes on, long speech is cut into ``is_final`` segments, and a pause of ``endpointing`` ms ends the
utterance with a ``speech_final`` result carrying the rest of the line. With ``utterance_end_ms``
an ``UtteranceEnd`` follows a long enough pause. ``KeepAlive``, ``Finalize``, ``CloseStream`` and
``Configure`` behave as the real service's do. Audio is 16-bit little-endian mono at the query's
``sample_rate``; times are seconds of received audio.
"""

from __future__ import annotations

import hashlib
import json
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from .energy import FRAME_S, LoudFrames

START_FRAMES = 3  # consecutive speech frames that start an utterance
INTERIM_EVERY_S = 0.5  # an interim result (and one more word) this often while speech goes on
SEGMENT_EVERY_S = 1.5  # continuous speech is finalised (is_final, not speech_final) this often
NO_ENDPOINTING_FLUSH_S = 1.0  # with endpointing=false: the pause that finalises what was said
DEFAULT_ENDPOINTING_MS = 300
WORD_CONFIDENCE = 0.92
CHANNEL = [0, 1]  # Deepgram's [channel index, channel count]


@dataclass
class NovaEmulator:
    """One stream. Feed it what the client sends; it returns the JSON messages to send back."""

    query: str = ""
    script: Sequence[str] = ("hello world",)
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        q = {k: v for k, v in parse_qs(self.query).items()}
        self.options = q
        self.model = q.get("model", ["nova-3"])[0]
        self.sample_rate = int(q.get("sample_rate", ["16000"])[0])
        endpointing = q.get("endpointing", [str(DEFAULT_ENDPOINTING_MS)])[0]
        if endpointing.lower() == "false":
            self.endpointing_ms: int | None = None
        else:
            try:
                self.endpointing_ms = int(endpointing)
            except ValueError:
                self.endpointing_ms = DEFAULT_ENDPOINTING_MS
        ue = q.get("utterance_end_ms")
        self.utterance_end_ms: int | None = int(ue[0]) if ue else None
        self.vad_events = q.get("vad_events", ["false"])[0].lower() == "true"
        self.keyterms: list[str] = q.get("keyterm", []) or q.get("keywords", [])
        self.model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"deepgram-emulator/{self.model}"))
        self.closed = False
        self.received_bytes = 0
        self.finalizes = 0
        self.keepalives = 0
        self.configures = 0
        self._sha = hashlib.sha256()
        self._loudness = LoudFrames(self.sample_rate)
        self._t = 0.0  # seconds of audio received (in whole frames)
        self._line = 0  # utterances ended so far: the script line in use
        self._in_utt = False
        self._loud_run = 0
        self._silence = 0.0
        self._last_speech = 0.0
        self._seg_start = 0.0  # where the audio not yet covered by an is_final result begins
        self._last_interim = 0.0
        self._revealed = 0  # words of the line shown so far
        self._finalised = 0  # words of the line already in is_final results
        self._utterance_end_due = False

    # --- client -> server -----------------------------------------------------------------------
    def connected(self) -> list[str]:
        return []  # Nova says nothing until it has something to say

    def on_audio(self, pcm: bytes) -> list[str]:
        if self.closed:
            return []
        self.received_bytes += len(pcm)
        self._sha.update(pcm)
        out: list[str] = []
        for loud in self._loudness.feed(pcm):
            out += self._on_frame(loud)
        return out

    def on_text(self, text: str) -> list[str]:
        if self.closed:
            return []
        try:
            msg = json.loads(text)
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            return [self._error(f"could not parse the message {text[:60]!r}", text)]
        if kind == "KeepAlive":
            self.keepalives += 1
            return []
        if kind == "Finalize":
            self.finalizes += 1
            if self._in_utt:
                return self._end_utterance(speech_final=False, from_finalize=True)
            # nothing spoken: Nova still answers, with an empty result for the audio since
            msg_out = self._results([], self._seg_start, self._t, is_final=True, from_finalize=True)
            self._seg_start = self._t
            return [msg_out]
        if kind == "CloseStream":
            out = self._end_utterance(speech_final=False) if self._in_utt else []
            out.append(self._metadata())
            self.closed = True
            return out
        if kind == "Configure":
            return [self._configure(msg)]
        return [self._error(f"unknown message type {kind!r}", text)]

    # --- utterance logic ------------------------------------------------------------------------
    def _on_frame(self, loud: bool) -> list[str]:
        self._t += FRAME_S
        t = self._t
        out: list[str] = []
        if loud:
            self._loud_run += 1
            self._silence = 0.0
            self._last_speech = t
        else:
            self._loud_run = 0
            self._silence += FRAME_S
        if not self._in_utt:
            if self._loud_run >= START_FRAMES:
                self._in_utt = True
                self._utterance_end_due = True
                self._revealed = self._finalised = 0
                self._seg_start = max(self._seg_start, t - START_FRAMES * FRAME_S)
                self._last_interim = t
                if self.vad_events:
                    out.append(
                        json.dumps(
                            {
                                "type": "SpeechStarted",
                                "channel": CHANNEL,
                                "timestamp": round(self._seg_start, 3),
                            }
                        )
                    )
            else:
                out += self._maybe_utterance_end()
            return out
        if loud:
            if t - self._last_interim >= INTERIM_EVERY_S - 1e-9:
                self._last_interim = t
                self._revealed = min(self._revealed + 1, len(self._words()))
                words = self._words()[self._finalised : self._revealed]
                out.append(self._results(words, self._seg_start, t, is_final=False))
            if t - self._seg_start >= SEGMENT_EVERY_S - 1e-9:
                words = self._words()[self._finalised : self._revealed]
                out.append(self._results(words, self._seg_start, t, is_final=True))
                self._finalised = self._revealed
                self._seg_start = t
            return out
        if self.endpointing_ms is not None:
            if self._silence >= self.endpointing_ms / 1000 - 1e-9:
                out += self._end_utterance(speech_final=True)
        elif self._silence >= NO_ENDPOINTING_FLUSH_S - 1e-9:
            out += self._end_utterance(speech_final=False)
        return out + self._maybe_utterance_end()

    def _maybe_utterance_end(self) -> list[str]:
        if (
            self.utterance_end_ms is None
            or not self._utterance_end_due
            or self._silence < self.utterance_end_ms / 1000 - 1e-9
        ):
            return []
        out = self._end_utterance(speech_final=False) if self._in_utt else []
        self._utterance_end_due = False
        out.append(
            json.dumps(
                {
                    "type": "UtteranceEnd",
                    "channel": CHANNEL,
                    "last_word_end": round(self._last_speech, 3),
                }
            )
        )
        return out

    def _end_utterance(self, *, speech_final: bool, from_finalize: bool = False) -> list[str]:
        """The rest of the line as one is_final result; the next utterance takes the next line."""
        words = self._words()[self._finalised :]
        msg = self._results(
            words,
            self._seg_start,
            self._t,
            is_final=True,
            speech_final=speech_final,
            from_finalize=from_finalize,
            words_end=max(self._last_speech, self._seg_start),
        )
        self._in_utt = False
        self._line += 1
        self._revealed = self._finalised = 0
        self._seg_start = self._t
        return [msg]

    @property
    def turns_done(self) -> int:
        return self._line

    def _words(self) -> list[str]:
        return self.script[self._line % len(self.script)].split() if self.script else []

    # --- messages -------------------------------------------------------------------------------
    def _results(
        self,
        words: list[str],
        start: float,
        end: float,
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
        words_end: float | None = None,
    ) -> str:
        w_end = end if words_end is None else words_end
        span = max(w_end - start, 0.01)
        n = max(1, len(words))
        items = [
            {
                "word": w.strip(string.punctuation).lower() or w,
                "start": round(start + span * i / n, 3),
                "end": round(start + span * (i + 1) / n, 3),
                "confidence": WORD_CONFIDENCE,
                "punctuated_word": w,
            }
            for i, w in enumerate(words)
        ]
        body: dict[str, Any] = {
            "type": "Results",
            "channel_index": CHANNEL,
            "duration": round(max(end - start, 0.0), 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {
                "alternatives": [
                    {
                        "transcript": " ".join(words),
                        "confidence": WORD_CONFIDENCE if words else 0.0,
                        "words": items,
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": self.model, "version": "emulated", "arch": self.model},
                "model_uuid": self.model_uuid,
            },
            "from_finalize": from_finalize,
        }
        return json.dumps(body)

    def _metadata(self) -> str:
        return json.dumps(
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": self.request_id,
                "sha256": self._sha.hexdigest(),
                "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "duration": round(self.received_bytes / (2 * self.sample_rate), 3),
                "channels": 1,
                "models": [self.model_uuid],
                "model_info": {
                    self.model_uuid: {"name": self.model, "version": "emulated", "arch": self.model}
                },
            }
        )

    def _configure(self, msg: dict[str, Any]) -> str:
        self.configures += 1
        keyterms = msg.get("keyterms")
        if keyterms is not None and not self.model.startswith("nova-3"):
            return json.dumps(
                {
                    "type": "ConfigureFailure",
                    "request_id": self.request_id,
                    "code": "CONFIGURE_KEYTERMS_NOT_SUPPORTED",
                    "description": f"model {self.model} does not support keyterm updates",
                }
            )
        body: dict[str, Any] = {"type": "ConfigureSuccess", "request_id": self.request_id}
        if keyterms is not None:
            self.keyterms = [str(k) for k in keyterms]
            body["keyterms"] = self.keyterms
        return json.dumps(body)

    @staticmethod
    def _error(description: str, original: str) -> str:
        return json.dumps(
            {
                "type": "Error",
                "variant": "SchemaError",
                "description": description,
                "message": original[:200],
            }
        )
