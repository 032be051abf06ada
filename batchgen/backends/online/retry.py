"""How one row is retried, with tenacity driving the loop.

Transient HTTP failures (429, 5xx, timeouts, dropped connections) are retried until the row's
``attempts``; answer failures (blocked, SAFETY, invalid JSON, schema) until ``answer_attempts``
of them. The wait is the server's RetryInfo (or Retry-After) delay when it gave one, at most
``max_server_delay_seconds``, else tenacity's capped exponential backoff with jitter. No wait
runs past the row's deadline: a row whose next wait would end after it stops there, and when the
wait was the server's, it fails as a ``timeout`` that says what the server asked
(:class:`DeadlineError`). Everything else (a 400, a bad key, a used-up daily quota, a redirect)
is raised at once.

Almost every row succeeds at its first call, so the caller makes that call itself and enters
tenacity's loop only when it fails: :meth:`RetryPolicy.for_row` takes the first failure and
replays it as the loop's first attempt, so the policy (attempts, waits, the deadline counted
from the first call) is tenacity's either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

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


class DeadlineError(ApiError):
    """A row stopped because a wait would have ended past its deadline: never retried."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__("timeout", message, status)

    @property
    def retryable(self) -> bool:
        return False


@dataclass(frozen=True)
class RowDeadline:
    """When a row's time is up (``at``, on the run's clock): ``seconds`` after its first call."""

    at: float
    seconds: float  # retry.row_deadline_seconds

    def passed(self, why: str, now: float, wait: float | None = None) -> DeadlineError:
        """The error of a wait (``why``, of ``wait`` seconds when known) that would end past
        the deadline."""
        left = max(0.0, self.at - now)
        waited = "" if wait is None else f" {round(wait, 1):g} s"
        return DeadlineError(
            f"{why}{waited}; that passes retry.row_deadline_seconds = {self.seconds:g} "
            f"({left:.0f} s were left)"
        )


class RetryPolicy:
    """Builds the retry loop for each row from the job's ``[retry]`` section."""

    def __init__(
        self,
        spec: RetrySpec,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._sleep = sleep
        self.clock = clock
        self._backoff = wait_exponential(
            multiplier=spec.backoff_initial_seconds, max=spec.backoff_max_seconds
        ) + wait_random(0, spec.backoff_initial_seconds)

    def for_row(
        self, spared: Callable[[], int] = lambda: 0, started: float | None = None
    ) -> AsyncRetrying:
        """A fresh retry loop; use as ``async for attempt in policy.for_row(): with attempt:``.

        ``spared`` counts the row's calls that spend no attempt (failed while the breaker was
        open: the outage's, not the row's). ``started`` (on the policy's ``clock``) is when the
        row's first call began, when it was made before the loop; the deadline counts from it.
        """
        answer_failures = 0
        attempts = _OutOfAttempts(self.spec.attempts, spared)
        seconds = self.spec.row_deadline_seconds
        begun = self.clock() if started is None else started  # the loop begins at once
        deadline = _PastDeadline(RowDeadline(begun + seconds, seconds), self.clock)

        def should_retry(state: RetryCallState) -> bool:
            nonlocal answer_failures
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, ApiError):
                return exc.retryable
            if isinstance(exc, AnswerError):
                answer_failures += 1
                return answer_failures < self.spec.answer_attempts
            return False

        def gave_up(state: RetryCallState) -> NoReturn:
            exc = state.outcome.exception() if state.outcome else None
            assert exc is not None, "the retry loop stopped without a failure"
            if isinstance(exc, ApiError) and exc.retry_delay is not None and not attempts(state):
                # the deadline stopped it, and the wait was the server's: say what it asked
                asked = exc.asked_delay or exc.retry_delay or 0.0
                now = self.clock()
                passed = deadline.deadline.passed("the server asked to wait", now, asked)
                raise DeadlineError(f"{exc.message}; {passed.message}", exc.status) from None
            raise exc

        return AsyncRetrying(
            stop=attempts | deadline,
            wait=self._wait,
            retry=should_retry,
            sleep=self._sleep,
            retry_error_callback=gave_up,
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
    """Stop when the next wait would end at or past the row's deadline (tenacity's
    ``stop_before_delay``, counted from the row's first call, on the policy's clock)."""

    def __init__(self, deadline: RowDeadline, clock: Callable[[], float]) -> None:
        self.deadline = deadline
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() + retry_state.upcoming_sleep >= self.deadline.at
