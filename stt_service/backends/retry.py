"""Reconnecting a streaming recognizer after a fault, shared by every streaming backend.

Deepgram's streams (:mod:`.deepgram`) and the realtime ASR servers' (:mod:`.realtime`) fail the
same ways over the same transports. A failure is a :class:`~.transports.base.TransportError`
that says whether trying again can help; :class:`Outage` decides, for one session's stream, how
long to wait before the next attempt or that it is time to give up and tell the session
(jittered exponential backoff, a count and a wall-clock budget per outage, never under a
server's ``Retry-After``; a connection that lived :data:`STABLE_S` ends the outage).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ..config import StreamingSettings
from .transports.base import TransportError

STABLE_S = 5.0  # a connection that lived this long ends an outage: the retry count starts again
RATE = 16000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``DEEPGRAM_*`` retry settings (they apply to every streaming backend): attempts, backoff
    and a wall-clock budget per outage, and how much unfinished audio is kept to resend."""

    max_retries: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    budget_s: float = 30.0
    replay_buffer_bytes: int = 60 * RATE * 2

    @classmethod
    def from_settings(cls, s: StreamingSettings) -> RetryPolicy:
        return cls(
            max_retries=s.deepgram_max_retries,
            initial_backoff_s=s.deepgram_initial_backoff,
            max_backoff_s=s.deepgram_max_backoff,
            budget_s=s.deepgram_retry_budget,
            replay_buffer_bytes=s.deepgram_replay_buffer_bytes,
        )

    def backoff(self, failures: int, retry_after: float | None = None) -> float:
        """Equal jitter: half the exponential step plus a random half, never under Retry-After."""
        step = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** max(0, failures - 1))
        delay = step / 2 + random.uniform(0, step / 2)
        return max(delay, retry_after or 0.0)


class Outage:
    """One stream's run of failed attempts. Call :meth:`failed` after each failure: it gives the
    wait before the next attempt, or None when the session must be told (see :meth:`give_up`)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.since: float | None = None
        self.spent = 0.0

    def failed(
        self,
        err: TransportError,
        attempt_at: float,
        connected: bool = False,
        closed_at: float | None = None,
        close_wait_s: float = 10.0,
    ) -> float | None:
        """``attempt_at``: when the failed attempt began (monotonic), ``connected``: whether it
        opened a stream before failing; ``closed_at``: when the
        session asked to close, if it has (a closing session waits at most ``close_wait_s`` for
        its last final). None: terminal, or the retries or the budget are spent."""
        now = time.monotonic()
        if connected and now - attempt_at >= STABLE_S:
            self.failures, self.since = 0, None  # it worked for a while: a new outage
        if not err.retryable:
            return None
        self.since = self.since or attempt_at
        self.failures += 1
        delay = self.policy.backoff(self.failures, err.retry_after)
        self.spent = now - self.since
        closing_late = closed_at is not None and now + delay - closed_at > close_wait_s
        if (
            self.failures > self.policy.max_retries
            or self.spent + delay > self.policy.budget_s
            or closing_late
        ):
            return None
        return delay

    def give_up(self, name: str, where: str, err: TransportError) -> str:
        """What the session is told when :meth:`failed` says stop."""
        if not err.retryable:
            return f"{name} on {where} refused the stream: {err}"
        n = self.failures
        return (
            f"{name} on {where} is unavailable: {err} ({err.cause}); gave up after "
            f"{n} failed attempt{'s' if n > 1 else ''} in {self.spent:.1f} s "
            f"(DEEPGRAM_MAX_RETRIES={self.policy.max_retries}, "
            f"DEEPGRAM_RETRY_BUDGET={self.policy.budget_s:g} s)"
        )
