"""Deepgram Nova (``/v1/listen``), sans-I/O: what to send, and what the server's messages mean.

The Nova counterpart of :mod:`.flux_protocol`, written once for every transport. Nova does not
speak in turns: it streams ``Results`` messages. Interim results (``is_final: false``) revise the
words since the last finalised segment; ``is_final: true`` results fix a segment for good, and an
utterance ends with a result whose ``speech_final`` is true (the model's endpointing), one with
``from_finalize: true`` (the answer to the client's ``Finalize``) or an ``UtteranceEnd`` message.
:class:`NovaReceiver` joins the finalised segments of an utterance into one final event.

Message shapes follow Deepgram's own SDK (deepgram-sdk v7 ``listen.v1`` models): ``Results``
(``channel_index``, ``duration``, ``start``, ``is_final``, ``speech_final``, ``from_finalize``,
``channel.alternatives[].transcript/confidence/languages/words[]``, ``metadata``), ``Metadata``,
``SpeechStarted``, ``UtteranceEnd`` (``channel``, ``last_word_end``), ``Error`` (``variant``,
``description``, ``message``) and ``Configure``/``ConfigureSuccess``/``ConfigureFailure``
(mid-stream keyterms, Nova-3 only).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from ...protocol import Code, Word
from ..base import RecognitionError, RecognitionEvent, StreamEvent, StreamParams

log = logging.getLogger(__name__)

PATH = "v1/listen"
KEEP_ALIVE = json.dumps({"type": "KeepAlive"})
FINALIZE = json.dumps({"type": "Finalize"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})


@dataclass(frozen=True, slots=True)
class NovaOptions:
    """Connection options: the service's Nova defaults, overridden per session by ``start``."""

    model: str = "nova-3"
    language: str | None = None
    endpointing_ms: int | None = 300  # None: not sent, Deepgram's default applies
    utterance_end_ms: int | None = None
    smart_format: bool = True
    keyterms: tuple[str, ...] = ()

    def for_session(self, params: StreamParams) -> NovaOptions:
        return replace(
            self,
            language=params.language if params.language is not None else self.language,
            keyterms=params.keyterms or self.keyterms,
        )

    @property
    def keyterm_prompting(self) -> bool:
        """Nova-3 takes ``keyterm``; Nova-2 and older take ``keywords``."""
        return self.model.startswith("nova-3")

    def query_string(self, sample_rate: int = 16000) -> str:
        pairs: list[tuple[str, str]] = [
            ("model", self.model),
            ("encoding", "linear16"),
            ("sample_rate", str(sample_rate)),
            ("channels", "1"),
            ("interim_results", "true"),
            ("punctuate", "true"),
            ("smart_format", "true" if self.smart_format else "false"),
        ]
        if self.endpointing_ms is not None:
            pairs.append(("endpointing", str(self.endpointing_ms)))
        if self.utterance_end_ms is not None:
            pairs.append(("utterance_end_ms", str(self.utterance_end_ms)))
        pairs.append(("vad_events", "true"))
        if self.language is not None:
            pairs.append(("language", self.language))
        name = "keyterm" if self.keyterm_prompting else "keywords"
        pairs += [(name, term) for term in self.keyterms]
        return urlencode(pairs)

    def configure_message(self) -> str:
        """The ``Configure`` message that replaces a live Nova-3 stream's keyterms (older models
        answer it with ``ConfigureFailure`` ``CONFIGURE_KEYTERMS_NOT_SUPPORTED``)."""
        return json.dumps({"type": "Configure", "keyterms": list(self.keyterms)})


def _identity(t: float) -> float:
    return t


@dataclass(slots=True)
class _Segment:
    """One ``Results`` message's first alternative, times in session seconds."""

    transcript: str
    confidence: float
    start: float
    end: float
    words: list[Word]
    language: str | None


class NovaReceiver:
    """Turns one stream's server messages into stream events.

    Times and utterance numbers are session-relative: :meth:`rebase` maps a new connection's
    model times to session seconds, and the held ``is_final`` text of an unfinished utterance and
    the utterance counter carry over. A final is never empty and never produced twice.
    """

    def __init__(self) -> None:
        self.request_id: str | None = None
        self.finalized_until = 0.0
        self._to_session: Callable[[float], float] = _identity
        self._utterance = 0
        # the current utterance: is_final segments held (times already in session seconds)
        self._held: list[_Segment] = []
        self._last_partial = ""

    @property
    def turn_open(self) -> bool:
        """Words heard in an utterance not yet finalised (held segments or an interim)."""
        return bool(self._held or self._last_partial)

    def rebase(self, to_session: Callable[[float], float]) -> None:
        """A new connection starts; its model times map to session seconds via ``to_session``."""
        self._to_session = to_session

    def feed(self, text: str | bytes) -> list[StreamEvent]:
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict):
                raise TypeError("not an object")
        except (ValueError, TypeError):
            return [self._unreadable(text)]
        kind = msg.get("type")
        if kind is None and ("err_code" in msg or "err_msg" in msg):
            detail = f"{msg.get('err_code', '?')}: {msg.get('err_msg', '')}".strip()
            return [RecognitionError(Code.BACKEND_ERROR, f"Nova error {detail}")]
        if kind == "Results":
            try:
                seg, is_final, speech_final, from_finalize = self._parse_results(msg)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                return [self._unreadable(text)]
            return self._results(seg, is_final, speech_final, from_finalize)
        if kind == "UtteranceEnd":
            return self._publish("utterance_end")
        if kind == "Metadata":
            self.request_id = msg.get("request_id") or self.request_id
            return []
        if kind in ("SpeechStarted", "ConfigureSuccess"):
            return []
        if kind == "ConfigureFailure":
            detail = msg.get("description") or msg.get("code") or "rejected"
            return [
                RecognitionError(Code.CONFIGURE_FAILED, f"Nova refused the configuration: {detail}")
            ]
        if kind == "Error":
            label = msg.get("variant") or msg.get("code") or "?"
            detail = msg.get("description") or msg.get("message") or ""
            return [RecognitionError(Code.BACKEND_ERROR, f"Nova error {label}: {detail}".strip())]
        if isinstance(kind, str):
            log.debug("ignoring Nova message of type %r", kind)
            return []
        return [self._unreadable(text)]

    def finish(self) -> list[StreamEvent]:
        """The stream ended cleanly (after ``CloseStream``): held ``is_final`` text is final."""
        return self._publish("close_stream")

    # --- internals ------------------------------------------------------------------------------
    @staticmethod
    def _unreadable(text: str | bytes) -> RecognitionError:
        shown = text[:80] if isinstance(text, str) else repr(text)[:80]
        return RecognitionError(Code.BACKEND_ERROR, f"Nova sent an unreadable message: {shown}")

    def _parse_results(self, msg: dict[str, Any]) -> tuple[_Segment, bool, bool, bool]:
        alt = msg["channel"]["alternatives"][0]
        start = float(msg["start"])
        end = start + float(msg["duration"])
        languages = alt.get("languages") or []
        words = [
            Word(
                word=str(w.get("punctuated_word") or w["word"]),
                start=round(self._to_session(float(w["start"])), 3),
                end=round(self._to_session(float(w["end"])), 3),
                confidence=float(w.get("confidence") or 0.0),
            )
            for w in alt.get("words") or []
        ]
        seg = _Segment(
            transcript=str(alt.get("transcript") or "").strip(),
            confidence=float(alt.get("confidence") or 0.0),
            start=round(self._to_session(start), 3),
            end=round(self._to_session(end), 3),
            words=words,
            language=str(languages[0]) if languages else None,
        )
        return (
            seg,
            bool(msg.get("is_final")),
            bool(msg.get("speech_final")),
            bool(msg.get("from_finalize")),
        )

    def _results(
        self, seg: _Segment, is_final: bool, speech_final: bool, from_finalize: bool
    ) -> list[StreamEvent]:
        if not is_final:
            return self._partial(seg)
        self.finalized_until = max(self.finalized_until, seg.end)
        if seg.transcript:
            self._held.append(seg)
        if from_finalize or speech_final:
            return self._publish("finalize" if from_finalize else "speech_final")
        return self._partial(None)

    def _text(self, interim: _Segment | None) -> str:
        parts = [s.transcript for s in self._held]
        if interim is not None and interim.transcript:
            parts.append(interim.transcript)
        return " ".join(parts).strip()

    def _partial(self, interim: _Segment | None) -> list[StreamEvent]:
        text = self._text(interim)
        if not text or text == self._last_partial:
            return []
        self._last_partial = text
        segs = self._held + ([interim] if interim is not None and interim.transcript else [])
        conf = interim.confidence if interim is not None and interim.transcript else None
        if conf is None:
            conf = _mean(s.confidence for s in self._held)
        return [self._event(segs, text, is_final=False, event="interim", confidence=conf)]

    def _publish(self, event: str) -> list[StreamEvent]:
        if not self._held:
            return []
        held, self._held = self._held, []
        text = " ".join(s.transcript for s in held).strip()
        out = self._event(
            held, text, is_final=True, event=event, confidence=_mean(s.confidence for s in held)
        )
        self._utterance += 1
        self._last_partial = ""
        return [out]

    def _event(
        self,
        segs: list[_Segment],
        text: str,
        *,
        is_final: bool,
        event: str,
        confidence: float | None,
    ) -> RecognitionEvent:
        language = next((s.language for s in reversed(segs) if s.language), None)
        return RecognitionEvent(
            utterance=self._utterance,
            text=text,
            is_final=is_final,
            audio_start=segs[0].start,
            audio_end=max(s.end for s in segs),
            confidence=None if confidence is None else round(confidence, 4),
            words=[w for s in segs for w in s.words],
            language=language,
            event=event,
            turn_index=self._utterance,
        )


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None
