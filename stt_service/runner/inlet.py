"""The ways in: how inbound messages reach the session runner, and its results go out.

The runner (:class:`.worker.Worker`) runs sessions and knows nothing of where their
messages come from. A way in (an :class:`Inlet`) delivers each message to
:meth:`Runner.handle` and sends what the runner publishes. Two exist:

- :class:`CoreInlet` (``STT_MODE=core``): one subscription to ``{STT_INPUT_SUBJECT}.*``; results
  are plain publishes.
- :class:`stt_service.jetstream.inlet.JetStreamInlet` (``STT_MODE=jetstream``): the partitions this
  replica leases, with checkpoints, replay after a failover, publishes held while a lease is in
  doubt, and hand-over on drain. Its per-session state rides in :attr:`Live.tag`.

:func:`stt_service.runner.serve.inlet_for` picks one from the settings.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ..backends.base import RecognizerStream
from ..config import Settings
from ..protocol import encode, session_id_from_subject
from ..session import Session, SessionConfig
from ..telemetry import SessionTrace, Telemetry
from .stats import WorkerStats

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Live:
    """A session as the runner holds it: its core, its recognizer stream, its trace."""

    session: Session
    stream: RecognizerStream
    trace: SessionTrace
    close_reason: str = ""
    pump: asyncio.Task[None] | None = None
    on_close: list[dict[str, Any]] = field(default_factory=list)  # published after the last final
    refusing: bool = False  # chunks are being refused: the recognizer is behind
    # client timestamps of chunks whose frames wait for the voice batcher: their lag is counted
    # when it has decided them
    voice_due: list[float] = field(default_factory=list)
    abandoned: bool = False  # another replica serves it now: nothing more is published or done
    tag: Any = None  # the way in's own state for this session (jetstream: its replay point)


class Runner(Protocol):
    """What a way in may use of the session runner."""

    settings: Settings
    config: SessionConfig
    tel: Telemetry
    stats: WorkerStats
    nc: NATS | None
    sessions: dict[str, Live]

    async def handle(self, data: bytes, sid: str, origin: object = None) -> None:
        """Handle one inbound message of session ``sid``; a session it opens is passed to
        :meth:`Inlet.opened` with ``origin`` before the message is handled."""
        ...

    def add(self, session: Session) -> Live:
        """Run ``session`` (new or restored): open its recognizer stream and its pump."""
        ...

    def closing_tasks(self, sid: str) -> list[asyncio.Task[None]]:
        """The task publishing the last results of session ``sid``, if it is closing."""
        ...


class Inlet(Protocol):
    """A way in: delivers inbound messages to the runner and sends what it publishes."""

    via: str  # said in the "listening on" log line
    hands_over: bool  # draining moves its sessions to another replica (nothing is closed)

    async def start(self, runner: Runner) -> None:
        """Begin delivering messages (the runner is connected to NATS)."""
        ...

    async def drain(self) -> None:
        """Stop taking messages; deliver those already on their way first."""
        ...

    async def stop(self) -> None:
        """Stop for good: sessions it does not want closed here it abandons."""
        ...

    def opened(self, live: Live, origin: object) -> None:
        """A message delivered with ``origin`` opened this session."""
        ...

    def replaying(self, live: Live) -> bool:
        """The message being handled was handled before (its errors were published then)."""
        ...

    async def send(self, subject: str, message: dict[str, Any], live: Live | None) -> bool:
        """Publish a result; False when it is not sent now (held, or not to be sent at all)."""
        ...

    def closing(self, live: Live) -> None:
        """The session closes: its last results are being published."""
        ...

    async def closed(self, live: Live, complete: bool) -> None:
        """Its last results are out (``complete``), or closing failed part-way."""
        ...


class CoreInlet:
    """``STT_MODE=core``: one subscription to ``{STT_INPUT_SUBJECT}.*``. nats-py runs its callback
    for one message at a time, so each session's messages reach the runner in order."""

    via = ""
    hands_over = False

    def __init__(self) -> None:
        self._sub: Subscription | None = None
        self._runner: Runner | None = None

    async def start(self, runner: Runner) -> None:
        assert runner.nc is not None
        self._runner = runner
        subject = f"{runner.settings.stt_input_subject}.*"
        # nats-py's default pending limits (512 Ki messages, 128 MiB) bound memory; past them
        # it reports a slow consumer through the error callback, which logs it
        self._sub = await runner.nc.subscribe(subject, cb=self._on_message)
        # the SUB is only buffered until here: a round trip makes the server route to us
        # before we say we are listening (a client publishing right after would be unheard)
        await runner.nc.flush()

    async def _on_message(self, msg: Msg) -> None:
        runner = self._runner
        assert runner is not None
        runner.stats.messages += 1
        sid = session_id_from_subject(msg.subject, runner.settings.stt_input_subject)
        await runner.handle(msg.data, sid)

    async def drain(self) -> None:
        # handle every message already on its way to us: audio the clients sent before the
        # signal is transcribed, not dropped
        if self._sub is None or self._runner is None:
            return
        try:
            drained = self._sub.drain()  # type: ignore[no-untyped-call]
            await asyncio.wait_for(drained, self._runner.settings.stt_drain_timeout / 2)
        except Exception as exc:
            log.warning("could not drain the subscription: %s", str(exc) or type(exc).__name__)

    async def stop(self) -> None:
        pass

    def opened(self, live: Live, origin: object) -> None:
        pass

    def replaying(self, live: Live) -> bool:
        return False

    async def send(self, subject: str, message: dict[str, Any], live: Live | None) -> bool:
        assert self._runner is not None and self._runner.nc is not None
        await self._runner.nc.publish(subject, encode(message))
        return True

    def closing(self, live: Live) -> None:
        pass

    async def closed(self, live: Live, complete: bool) -> None:
        pass
