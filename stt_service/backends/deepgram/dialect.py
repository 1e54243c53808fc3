"""What one Deepgram API (Flux, Nova) supplies to the stream they share (:mod:`.backend`): its
:class:`Dialect` (path, control messages, options) and a :class:`Receiver` that reads its
messages into stream events; and the :class:`Timeline` that maps one connection's audio, replayed
audio and injected keep-alive silence included, back to session time."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Protocol

from ..base import StreamEvent, StreamParams

RATE = 16000


class Receiver(Protocol):
    """Reads one session's model messages (across reconnects) into stream events."""

    finalized_until: float  # session seconds; audio before this need not be resent

    @property
    def turn_open(self) -> bool:
        """Whether the model has an unfinished turn (words heard, no final yet)."""
        ...

    def rebase(self, to_session: Callable[[float], float]) -> None:
        """A new connection: its model times map to session seconds through ``to_session``."""

    def feed(self, text: str | bytes) -> list[StreamEvent]: ...

    def finish(self) -> list[StreamEvent]:
        """The stream ended: anything held becomes a final."""
        ...


class Options(Protocol):
    def query_string(self, sample_rate: int = 16000) -> str: ...


class Dialect(Protocol):
    """One Deepgram API: its path, control messages, options and message reader."""

    name: str  # "Flux", "Nova"
    path: str
    force_end: str  # end the current turn now (``finalize``)
    close_stream: str
    keep_alive: str | None  # a keep-alive message, or None: only silence keeps the stream open
    stall_s: float  # the watchdog's default: how long an answer to speech may take at most

    def options(self, params: StreamParams) -> Options: ...

    def configure_message(self, options: Options) -> str | None:
        """The message that applies ``options`` mid-stream; None: the API cannot."""
        ...

    def receiver(self) -> Receiver: ...

    def describe(self) -> str: ...


class Timeline:
    """Maps positions in one connection's audio to session positions.

    A connection carries session audio (perhaps starting mid-session, when replaying) and
    injected keep-alive silence, which is nobody's speech: a time inside it maps to the session
    position where the silence was inserted.
    """

    def __init__(self, session_pos: int = 0) -> None:
        """``session_pos``: where in the session this connection starts (silence sent before
        any audio maps there)."""
        self._model_starts: list[int] = []
        self._segments: list[tuple[int, int, bool]] = []  # model start, session start, silent
        self.model_samples = 0
        self._session_end = session_pos

    def audio(self, session_pos: int, n: int) -> None:
        last = self._segments[-1] if self._segments else None
        if last is None or last[2] or self._session_end != session_pos:
            self._add(session_pos, silent=False)
        self.model_samples += n
        self._session_end = session_pos + n

    def silence(self, n: int) -> None:
        if not self._segments or not self._segments[-1][2]:
            self._add(self._session_end, silent=True)
        self.model_samples += n

    def _add(self, session_pos: int, *, silent: bool) -> None:
        self._model_starts.append(self.model_samples)
        self._segments.append((self.model_samples, session_pos, silent))

    def to_session(self, model_seconds: float) -> float:
        m = round(model_seconds * RATE)
        i = bisect.bisect_right(self._model_starts, m) - 1
        if i < 0:
            return (self._segments[0][1] if self._segments else self._session_end) / RATE
        model_start, session_start, silent = self._segments[i]
        return (session_start + (0 if silent else m - model_start)) / RATE
