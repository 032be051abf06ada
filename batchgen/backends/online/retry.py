"""How one row is retried, with tenacity driving the loop.

Transient HTTP failures (429, 5xx, timeouts, dropped connections) are retried until the row's
``attempts``; answer failures (blocked, SAFETY, invalid JSON, schema) until ``answer_attempts``
of them. The wait is the server's RetryInfo (or Retry-After) delay when it gave one, at most
``max_server_delay_seconds``, else tenacity's capped exponential backoff with jitter. No retry
starts after the row's deadline. Everything else (a 400, a bad key, a used-up daily quota, a
redirect) is raised at once.

Almost every row succeeds at its first call, so the caller makes that call itself and enters
tenacity's loop only when it fails: :meth:`RetryPolicy.for_row` takes the first failure and
replays it as the loop's first attempt, so the policy (attempts, waits, the deadline counted
from the first call) is tenacity's either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from batchgen.gemini.answers import AnswerError
from batchgen.gemini.client import ApiError
from batchgen.job.spec import RetrySpec

Sleep = Callable[[float], Awaitable[Any]]


class RetryPolicy:
    """Builds the retry loop for each row from the job's ``[retry]`` section."""

    def __init__(self, spec: RetrySpec, sleep: Sleep = asyncio.sleep) -> None:
        self.spec = spec
        self._sleep = sleep
        self._backoff = wait_exponential(
            multiplier=spec.backoff_initial_seconds, max=spec.backoff_max_seconds
        ) + wait_random(0, spec.backoff_initial_seconds)

    def for_row(
        self, spared: Callable[[], int] = lambda: 0, started: float | None = None
    ) -> AsyncRetrying:
        """A fresh retry loop; use as ``async for attempt in policy.for_row(): with attempt:``.

        ``spared`` counts the row's calls that spend no attempt (failed while the breaker was
        open: the outage's, not the row's). ``started`` (``time.monotonic()``) is when the row's
        first call began, when it was made before the loop; the deadline counts from it.
        """
        answer_failures = 0

        def should_retry(state: RetryCallState) -> bool:
            nonlocal answer_failures
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, ApiError):
                return exc.retryable
            if isinstance(exc, AnswerError):
                answer_failures += 1
                return answer_failures < self.spec.answer_attempts
            return False

        return AsyncRetrying(
            stop=_OutOfAttempts(self.spec.attempts, spared)
            | _PastDeadline(self.spec.row_deadline_seconds, started),
            wait=self._wait,
            retry=should_retry,
            sleep=self._sleep,
            reraise=True,
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ApiError) and exc.retry_delay is not None:
            # the client caps it too; capping here keeps the job's value even for a client
            # built with the default cap
            return min(exc.retry_delay, self.spec.max_server_delay_seconds)
        return float(self._backoff(state))


class _OutOfAttempts(stop_base):
    """Stop after ``attempts`` calls that spent an attempt (tenacity's count, minus the spared)."""

    def __init__(self, attempts: int, spared: Callable[[], int]) -> None:
        self.attempts = attempts
        self.spared = spared

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.attempt_number - self.spared() >= self.attempts


class _PastDeadline(stop_base):
    """Stop once ``seconds`` have passed since the row's first call (tenacity's
    ``stop_after_delay``, counted from ``started`` when the first call preceded the loop)."""

    def __init__(self, seconds: float, started: float | None) -> None:
        self.seconds = seconds
        self.started = started

    def __call__(self, retry_state: RetryCallState) -> bool:
        started = retry_state.start_time if self.started is None else self.started
        return time.monotonic() - started >= self.seconds
