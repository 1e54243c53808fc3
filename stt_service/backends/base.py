"""The one small interface between the session core and every recognizer.

A :class:`Recognizer` is shared by all sessions (one model, one HTTP pool, one SageMaker client);
it opens one :class:`RecognizerStream` per session. Stream calls that carry audio are synchronous
and never block: a backend queues internally and reports overload as a :class:`RecognitionError`
event. Results come back in order from :meth:`RecognizerStream.events`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..audio import Int16Array
from ..protocol import Word


@dataclass(frozen=True, slots=True)
class StreamParams:
    session_id: str
    language: str | None = None
    keyterms: tuple[str, ...] = ()
    eot_threshold: float | None = None
    eager_eot_threshold: float | None = None
    eot_timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class RecognitionEvent:
    """A partial or final hypothesis for utterance ``utterance`` of the session."""

    utterance: int
    text: str
    is_final: bool
    audio_start: float  # seconds from session start
    audio_end: float
    confidence: float | None = None
    words: list[Word] | None = None
    language: str | None = None
    event: str | None = None
    turn_index: int | None = None
    started_speaking: bool = False  # backend-native barge-in signal (Flux StartOfTurn)
    end_of_turn_confidence: float | None = None  # the backend's own end-of-turn model (Flux)


@dataclass(frozen=True, slots=True)
class RecognitionError:
    code: str
    message: str
    utterance: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EndpointHint:
    """What the utterance so far says, decoded at a pause (:meth:`RecognizerStream.speculate`):
    the session core ends the utterance early when the text reads as a finished sentence.
    ``None``: the decode failed or the server has no words yet, so the words cannot help and the
    end-of-turn model decides alone."""

    utterance: int
    text: str | None


StreamEvent = RecognitionEvent | RecognitionError | EndpointHint


class RecognizerStream(Protocol):
    def send_audio(self, samples: Int16Array, offset: int, utterance: int) -> None:
        """Audio of ``utterance`` (16 kHz mono); ``offset``: its first sample's session index."""

    def flush(self, utterance: int, until: int | None = None) -> None:
        """End ``utterance`` and produce its final. With ``until``, only audio before that session
        sample belongs to it; audio after it already sent is carried into ``utterance + 1``."""

    def speculate(self, utterance: int) -> None:
        """The speaker paused: decode ``utterance`` as sent so far now, answer with an
        :class:`EndpointHint`, and if no more audio comes before :meth:`flush`, use that decode as
        the final. Backends that find turns themselves ignore it."""

    def configure(self, params: StreamParams) -> None:
        """Apply new per-session options mid-stream (keyterms, thresholds)."""

    def backlog(self) -> int:
        """Samples (16 kHz) this stream holds because the recognizer has not caught up: ended
        utterances waiting for their final, or audio waiting to be sent. What
        ``STT_MAX_BUFFERED_AUDIO_BYTES`` bounds."""

    async def aclose(self) -> None:
        """Deliver every pending final, then end :meth:`events`."""

    def events(self) -> AsyncIterator[StreamEvent]: ...


class Recognizer(Protocol):
    name: str
    # who decides where utterances end: the service's VAD ("service") or the model ("backend")
    endpointing: Literal["service", "backend"]

    async def start(self) -> None:
        """Load the model or connect; raise with a clear message if that is impossible."""

    def open_stream(self, params: StreamParams) -> RecognizerStream: ...

    def ready(self) -> bool: ...

    async def aclose(self) -> None: ...
