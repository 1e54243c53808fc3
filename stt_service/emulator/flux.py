"""A Deepgram Flux (``/v2/listen``) stand-in, sans-I/O, for tests, benchmarks and offline demos.

It cannot recognise speech. It speaks Flux's exact JSON, driven by the audio it receives: energy
starts a turn (``StartOfTurn``), a scripted transcript is revealed word by word with ``Update``s
as the turn's audio grows, a pause gives ``EagerEndOfTurn`` (when an eager threshold is set) and
then ``EndOfTurn``; speech after an eager end gives ``TurnResumed``. ``Configure``,
``ForceEndTurn`` and ``CloseStream`` behave as the real service's do. Audio is 16-bit little-endian
mono at the query's ``sample_rate``; times are seconds of received audio.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from .energy import FRAME_S, LoudFrames

START_FRAMES = 3  # consecutive speech frames that start a turn
UPDATE_EVERY_S = 0.24
EAGER_SILENCE_S = 0.3
END_SILENCE_S = 0.6


@dataclass
class FluxEmulator:
    """One stream. Feed it what the client sends; it returns the JSON messages to send back."""

    query: str = ""
    script: Sequence[str] = ("hello world",)
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        q = {k: v for k, v in parse_qs(self.query).items()}
        self.options = q
        self.sample_rate = int(q.get("sample_rate", ["16000"])[0])
        self.eot_threshold = float(q.get("eot_threshold", ["0.7"])[0])
        eager = q.get("eager_eot_threshold")
        self.eager_eot_threshold = float(eager[0]) if eager else None
        self.eot_timeout_ms = int(q.get("eot_timeout_ms", ["5000"])[0])
        self.keyterms = q.get("keyterm", [])
        self.closed = False
        self._seq = 0
        self._loudness = LoudFrames(self.sample_rate)
        self._t = 0.0  # seconds of audio received
        self._turn = 0
        self._in_turn = False
        self._eager_sent = False
        self._loud_run = 0
        self._silence = 0.0
        self._turn_start = 0.0
        self._last_speech = 0.0
        self._last_update = 0.0
        self._revealed = 0
        self.received_bytes = 0
        self.configures = 0

    # --- client -> server -----------------------------------------------------------------------
    def connected(self) -> list[str]:
        return [self._msg({"type": "Connected", "request_id": self.request_id})]

    def on_audio(self, pcm: bytes) -> list[str]:
        if self.closed:
            return []
        self.received_bytes += len(pcm)
        out: list[str] = []
        for loud in self._loudness.feed(pcm):
            out += self._on_frame(loud)
        return out

    def on_text(self, text: str) -> list[str]:
        try:
            msg = json.loads(text)
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            return [
                self._msg(
                    {
                        "type": "Error",
                        "code": "INVALID_MESSAGE",
                        "description": f"could not parse {text[:60]!r}",
                    }
                )
            ]
        if kind == "Configure":
            return self._configure(msg)
        if kind == "ForceEndTurn":
            return self._end_turn("manual") if self._in_turn else []
        if kind == "CloseStream":
            out = self._end_turn("manual") if self._in_turn else []
            self.closed = True
            return out
        return [
            self._msg(
                {
                    "type": "Error",
                    "code": "UNKNOWN_MESSAGE_TYPE",
                    "description": f"unknown message type {kind!r}",
                }
            )
        ]

    # --- turn logic -----------------------------------------------------------------------------
    def _on_frame(self, loud: bool) -> list[str]:
        self._t += FRAME_S
        out: list[str] = []
        if loud:
            self._loud_run += 1
            self._silence = 0.0
            self._last_speech = self._t
        else:
            self._loud_run = 0
            self._silence += FRAME_S
        if not self._in_turn:
            if self._loud_run >= START_FRAMES:
                self._in_turn = True
                self._eager_sent = False
                self._revealed = 0
                self._turn_start = self._t - START_FRAMES * FRAME_S
                self._last_update = self._t
                out.append(self._turn_info("StartOfTurn"))
            return out
        if loud and self._eager_sent:
            self._eager_sent = False
            out.append(self._turn_info("TurnResumed"))
        if loud and self._t - self._last_update >= UPDATE_EVERY_S:
            self._last_update = self._t
            self._revealed += 1
            out.append(self._turn_info("Update"))
        if not loud:
            if (
                self.eager_eot_threshold is not None
                and not self._eager_sent
                and self._silence >= EAGER_SILENCE_S
            ):
                self._eager_sent = True
                out.append(self._turn_info("EagerEndOfTurn"))
            if self._silence >= min(END_SILENCE_S, self.eot_timeout_ms / 1000):
                out += self._end_turn("model")
        return out

    def _end_turn(self, trigger: str) -> list[str]:
        self._revealed = len(self._words())  # the final has the whole line
        msg = self._turn_info("EndOfTurn", trigger=trigger)
        self._in_turn = False
        self._eager_sent = False
        self._loud_run = 0  # a new turn needs speech of its own
        self._turn += 1
        return [msg]

    @property
    def turns_done(self) -> int:
        return self._turn

    def _words(self) -> list[str]:
        return self.script[self._turn % len(self.script)].split() if self.script else []

    def _turn_info(self, event: str, trigger: str | None = None) -> str:
        words = self._words()[: max(0, self._revealed)]
        end = self._last_speech if event == "EndOfTurn" else self._t
        span = max(end - self._turn_start, 0.01)
        items = [
            {
                "word": w,
                "confidence": 0.92,
                "start": round(self._turn_start + span * i / max(1, len(words)), 3),
                "end": round(self._turn_start + span * (i + 1) / max(1, len(words)), 3),
            }
            for i, w in enumerate(words)
        ]
        msg: dict[str, Any] = {
            "type": "TurnInfo",
            "request_id": self.request_id,
            "event": event,
            "turn_index": self._turn,
            "audio_window_start": round(self._turn_start, 3),
            "audio_window_end": round(end, 3),
            "transcript": " ".join(words),
            "words": items,
            "end_of_turn_confidence": 0.9 if event in ("EndOfTurn", "EagerEndOfTurn") else 0.1,
        }
        if trigger is not None:
            msg["trigger"] = trigger
        return self._msg(msg)

    def _configure(self, msg: dict[str, Any]) -> list[str]:
        self.configures += 1
        t = msg.get("thresholds") or {}
        eot = float(t.get("eot_threshold", self.eot_threshold))
        eager = t.get("eager_eot_threshold", self.eager_eot_threshold)
        if eager is not None and float(eager) > eot:
            return [
                self._msg(
                    {
                        "type": "ConfigureFailure",
                        "request_id": self.request_id,
                        "code": "INVALID_THRESHOLDS",
                        "description": "eager_eot_threshold must not exceed eot_threshold",
                    }
                )
            ]
        self.eot_threshold = eot
        self.eager_eot_threshold = None if eager is None else float(eager)
        self.eot_timeout_ms = int(t.get("eot_timeout_ms", self.eot_timeout_ms))
        if "keyterms" in msg:
            self.keyterms = list(msg["keyterms"])
        thresholds = {"eot_threshold": self.eot_threshold, "eot_timeout_ms": self.eot_timeout_ms}
        if self.eager_eot_threshold is not None:
            thresholds["eager_eot_threshold"] = self.eager_eot_threshold
        return [
            self._msg(
                {
                    "type": "ConfigureSuccess",
                    "request_id": self.request_id,
                    "thresholds": thresholds,
                    "keyterms": self.keyterms,
                }
            )
        ]

    def _msg(self, body: dict[str, Any]) -> str:
        body["sequence_id"] = self._seq
        self._seq += 1
        return json.dumps(body)
