"""Deepgram Flux (``/v2/listen``), sans-I/O: what to send, and what the server's messages mean.

Written once for every transport (SageMaker HTTP/2 bidirectional streaming, Deepgram's WebSocket):
a transport moves bytes and text; this module builds the query string and control messages and
turns the server's JSON into the session core's :class:`~.base.RecognitionEvent` values.

Message shapes follow Deepgram's own SDK (deepgram-sdk v7 ``listen.v2`` models), which differ from
the Flux load tester's summary in two places: ``Configure`` nests the thresholds
(``{"type": "Configure", "thresholds": {...}, "keyterms": [...]}``), and the force-end-of-turn
message is ``ForceEndTurn`` (the summary calls it ``Finalize``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from ...protocol import Code, Word
from ..base import RecognitionError, RecognitionEvent, StreamEvent, StreamParams

log = logging.getLogger(__name__)

PATH = "v2/listen"
FORCE_END_TURN = json.dumps({"type": "ForceEndTurn"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})

_EVENTS = {
    "StartOfTurn": "start_of_turn",
    "Update": "update",
    "EagerEndOfTurn": "eager_end_of_turn",
    "TurnResumed": "turn_resumed",
    "EndOfTurn": "end_of_turn",
}


@dataclass(frozen=True, slots=True)
class FluxOptions:
    """Connection options: the ``FLUX_*`` defaults, overridden per session by ``start``."""

    model: str = "flux-general-en"
    eot_threshold: float | None = None
    eager_eot_threshold: float | None = None
    eot_timeout_ms: int | None = None
    keyterms: tuple[str, ...] = ()

    def for_session(self, params: StreamParams) -> FluxOptions:
        return replace(
            self,
            eot_threshold=_pick(params.eot_threshold, self.eot_threshold),
            eager_eot_threshold=_pick(params.eager_eot_threshold, self.eager_eot_threshold),
            eot_timeout_ms=_pick(params.eot_timeout_ms, self.eot_timeout_ms),
            keyterms=params.keyterms or self.keyterms,
        )

    def query_string(self, sample_rate: int = 16000) -> str:
        """``model``, ``encoding=linear16``, ``sample_rate``, thresholds, one ``keyterm`` each."""
        pairs: list[tuple[str, str]] = [
            ("model", self.model),
            ("encoding", "linear16"),
            ("sample_rate", str(sample_rate)),
        ]
        for name in ("eot_threshold", "eager_eot_threshold", "eot_timeout_ms"):
            value = getattr(self, name)
            if value is not None:
                pairs.append((name, str(value)))
        pairs += [("keyterm", term) for term in self.keyterms]
        return urlencode(pairs)

    def configure_message(self) -> str:
        """The ``Configure`` message that moves a live stream to these thresholds and keyterms."""
        thresholds = {
            name: getattr(self, name)
            for name in ("eot_threshold", "eager_eot_threshold", "eot_timeout_ms")
            if getattr(self, name) is not None
        }
        msg: dict[str, Any] = {"type": "Configure"}
        if thresholds:
            msg["thresholds"] = thresholds
        if self.keyterms:
            msg["keyterms"] = list(self.keyterms)
        return json.dumps(msg)


def _pick[T](override: T | None, default: T | None) -> T | None:
    return override if override is not None else default


class FluxReceiver:
    """Turns one session's server messages, across reconnects, into stream events.

    Times and turn indices are session-relative: after a reconnect the server starts again from
    0, so :meth:`rebase` maps its times through the new connection's timeline and shifts its turn
    numbers. A final is never produced twice for the same turn.
    """

    def __init__(self) -> None:
        self.connected = False
        self.request_id: str | None = None
        self.finalized_until = 0.0  # session seconds: the end of the last finished turn
        self._to_session: Callable[[float], float] = _identity
        self._turn_offset = 0
        self._last_final_turn = -1
        self._open = False  # a turn started and not finished

    def rebase(self, to_session: Callable[[float], float]) -> None:
        """A new connection starts; its times map to session seconds through ``to_session``.
        Its turn 0 is the session's next unfinished turn: the resent audio of an unfinished
        turn keeps that turn's index, and later turns follow it."""
        self.connected = False
        self._to_session = to_session
        self._turn_offset = self._last_final_turn + 1

    @property
    def turn_open(self) -> bool:
        return self._open

    def finish(self) -> list[StreamEvent]:
        return []  # Flux holds nothing back: every final came as an EndOfTurn

    def feed(self, text: str | bytes) -> list[StreamEvent]:
        try:
            msg = json.loads(text)
            kind = msg["type"]
        except (ValueError, TypeError, KeyError):
            shown = text[:80] if isinstance(text, str) else repr(text[:80])
            return [
                RecognitionError(Code.BACKEND_ERROR, f"Flux sent an unreadable message: {shown}")
            ]
        if kind == "Connected":
            self.connected = True
            self.request_id = msg.get("request_id")
            return []
        if kind == "TurnInfo":
            return self._turn_info(msg)
        if kind == "ConfigureFailure":
            detail = msg.get("description") or msg.get("code") or "rejected"
            return [
                RecognitionError(Code.CONFIGURE_FAILED, f"Flux refused the configuration: {detail}")
            ]
        if kind == "Error":
            return [
                RecognitionError(
                    Code.BACKEND_ERROR,
                    f"Flux error {msg.get('code', '?')}: {msg.get('description', '')}".strip(),
                )
            ]
        if kind == "Warning":
            log.warning("Flux warning %s: %s", msg.get("code"), msg.get("description"))
        return []  # ConfigureSuccess and anything newer need no action

    def _turn_info(self, msg: dict[str, Any]) -> list[StreamEvent]:
        event = _EVENTS.get(msg.get("event", ""))
        if event is None:
            log.debug("ignoring Flux TurnInfo event %r", msg.get("event"))
            return []
        turn = int(msg.get("turn_index", 0)) + self._turn_offset
        final = event == "end_of_turn"
        if turn <= self._last_final_turn:
            return []  # a turn already finalised (replayed after a reconnect): never twice
        self._open = not final
        if final:
            self._last_final_turn = turn
        at = self._to_session
        words = [
            Word(
                word=str(w.get("word", "")),
                start=round(at(float(w.get("start") or 0.0)), 3),
                end=round(at(float(w.get("end") or 0.0)), 3),
                confidence=float(w.get("confidence", 0.0)),
            )
            for w in msg.get("words") or []
        ]
        audio_start = round(at(float(msg.get("audio_window_start", 0.0))), 3)
        audio_end = round(at(float(msg.get("audio_window_end", 0.0))), 3)
        if final:
            self.finalized_until = max(self.finalized_until, audio_end)
        confidence = (
            sum(w.confidence for w in words) / len(words)
            if words
            else msg.get("end_of_turn_confidence")
        )
        return [
            RecognitionEvent(
                utterance=turn,
                text=str(msg.get("transcript", "")),
                is_final=final,
                audio_start=audio_start,
                audio_end=audio_end,
                confidence=None if confidence is None else round(float(confidence), 4),
                words=words,
                event=event,
                turn_index=turn,
                started_speaking=event == "start_of_turn",
                end_of_turn_confidence=(
                    float(msg["end_of_turn_confidence"])
                    if final and isinstance(msg.get("end_of_turn_confidence"), int | float)
                    else None
                ),
            )
        ]


def _identity(t: float) -> float:
    return t
