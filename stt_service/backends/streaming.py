"""What every streaming backend shares: its connector's life and one session's reconnect loop.

Deepgram's streams (:mod:`.deepgram`) and the realtime servers' (:mod:`.realtime`) differ in what
they send and read; they open their connections, retry them and give up the same way.
:class:`StreamingBackend` owns the one :class:`~.transports.base.Connector` all sessions use
(SageMaker's shared SDK client, or WebSocket settings); :func:`reconnecting` runs a session's
connections one after another, with the :mod:`.retry` policy between them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ..config import SageMakerSettings, StreamingSettings
from ..protocol import Code
from .retry import Outage, RetryPolicy
from .transports.base import Connector, Duplex, TransportError
from .watchdog import StallCount

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 10.0  # the SDK and awscrt have no connect timeout of their own here
CLOSE_WAIT_S = 10.0  # after the session closes, how long its last finals may take


class StreamingBackend:
    """The connector's life, shared by every streaming :class:`~.base.Recognizer`: made at
    :meth:`start` by :meth:`make_connector`, released at :meth:`aclose`."""

    def __init__(self, settings: StreamingSettings) -> None:
        self.settings = settings
        self.policy = RetryPolicy.from_settings(settings)
        self.stall_count = StallCount()  # streams replaced by the watchdog (stt.backend.stalls)
        self._connector: Connector | None = None

    @property
    def stalls(self) -> int:
        return self.stall_count.stalls

    def stall_s(self, model_default: float) -> float | None:
        """The watchdog's time for this backend's streams: ``STT_STALL_TIMEOUT_S``, else the
        model's own; None: no watchdog."""
        chosen = self.settings.stt_stall_timeout_s
        return (model_default if chosen is None else chosen) or None

    async def make_connector(self) -> Connector:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def where(self) -> str:
        return self._connector.describe() if self._connector else "(not connected)"

    async def start(self) -> None:
        if self._connector is None:
            self._connector = await self.make_connector()
        log.info("%s", self.describe())

    def ready(self) -> bool:
        return self._connector is not None

    @property
    def connector(self) -> Connector:
        if self._connector is None:
            raise RuntimeError("the backend has not been started")
        return self._connector

    async def aclose(self) -> None:
        if self._connector is not None:
            await self._connector.aclose()
        self._connector = None


async def sagemaker_connector(settings: SageMakerSettings) -> Connector:
    """The SageMaker endpoint ``SAGEMAKER_ENDPOINT_NAME`` through one AWS SDK client."""
    try:
        from .transports.sagemaker import SageMakerConnector
    except ImportError as exc:
        raise RuntimeError(
            f"SageMaker streaming needs the AWS SDK: install stt-service[sagemaker] ({exc})"
        ) from None
    return await SageMakerConnector.create(
        settings.sagemaker_endpoint_name,
        settings.aws_region,
        endpoint_uri=settings.aws_endpoint_url_sagemaker_runtime_http2 or None,
        ca_bundle=settings.aws_ca_bundle or None,
    )


async def reconnecting(
    *,
    name: str,
    session: str,
    connector: Connector,
    policy: RetryPolicy,
    target: Callable[[], tuple[str, str]],
    go_on: Callable[[], Awaitable[bool]],
    run: Callable[[Duplex], Awaitable[TransportError | None]],
    closed_at: Callable[[], float | None],
    report: Callable[[str, str], None],
) -> bool:
    """One session's connections, until it needs no more: True when done, False after giving up.

    Before each attempt ``go_on()`` says whether one is needed (it may wait for work); ``target()``
    gives the path and query to open; ``run(duplex)`` serves an open connection and returns None
    when the session is done or the failure that ended it. A failure is retried with the policy's
    backoff; a terminal one, or one past the retries or the budget, is reported as
    ``report(code, message)``: ``backend_error`` when trying again cannot help, else
    ``backend_unavailable``."""
    outage = Outage(policy)
    where = connector.describe()
    while True:
        if not await go_on():
            return True
        attempt_at = time.monotonic()
        connected = False
        err: TransportError | None
        path, query = target()
        log.debug("session %s: opening a %s stream", session, name)
        try:
            duplex = await asyncio.wait_for(connector.open(path, query), CONNECT_WAIT_S)
        except TimeoutError:
            err = TransportError(
                f"no connection within {CONNECT_WAIT_S:g} s",
                retryable=True,
                cause="connect timeout",
            )
        except TransportError as exc:
            err = exc
        else:
            connected = True
            err = await run(duplex)
            if err is None:
                return True
        delay = outage.failed(err, attempt_at, connected, closed_at(), CLOSE_WAIT_S)
        if delay is None:
            code = Code.BACKEND_UNAVAILABLE if err.retryable else Code.BACKEND_ERROR
            report(code, outage.give_up(name, where, err))
            return False
        log.warning(
            "session %s: %s stream failed (%s: %s); retry %d in %.2f s",
            session,
            name,
            err.cause,
            err,
            outage.failures,
            delay,
        )
        await asyncio.sleep(delay)
