"""One row's calls: attempts under the limits and the budget, retries, and what each call cost.

:class:`RowCaller` turns a rendered request into an :class:`~batchgen.plan.Outcome` (its
result rows, or its failure record) and reports each call that returned usage as a
:class:`Billed` entry as soon as it returns, so the ledger is in the journal even when the row
goes on retrying, or the run is killed before the row ends.

Each call is billed at the service tier that served it (the server says; else the tier asked
for). A Flex row refused for lack of capacity for ``retry.flex_fallback_seconds`` goes on at the
standard tier (:class:`FlexFallback`): Flex never falls back by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from batchgen.answers import Answer, AnswerError, parse_response, structured_value
from batchgen.budget import Budget
from batchgen.client import ApiError, GeminiClient
from batchgen.job import RetrySpec
from batchgen.limits import RateLimits
from batchgen.output import error_row
from batchgen.plan import Outcome, Plan, Work
from batchgen.request import standard_body
from batchgen.retry import RetryPolicy

CAPACITY_STATUS = frozenset({429, 503})  # how Flex says it is short of capacity


@dataclass(frozen=True)
class Billed:
    """One call that returned usage: a row of the usage ledger (USAGE_SCHEMA)."""

    run_id: str
    job: str
    row_id: str
    attempt: int
    model: str
    answer: Answer
    outcome: str  # "ok", or the answer's failure category
    at: datetime
    tier: str = "standard"  # the service tier that served the call

    def to_row(self) -> dict[str, Any]:
        usage = self.answer.usage
        return {
            "run_id": self.run_id,
            "job": self.job,
            "row_id": self.row_id,
            "attempt": self.attempt,
            "model": self.model,
            "model_version": self.answer.model_version,
            "prompt_tokens": usage.prompt,
            "output_tokens": usage.output,
            "thinking_tokens": usage.thinking,
            "cached_tokens": usage.cached,
            "total_tokens": usage.total,
            "http_status": 200,
            "outcome": self.outcome,
            "finish_reason": self.answer.finish_reason,
            "at": self.at,
            "tier": self.tier,
        }


class FlexFallback:
    """One row's tier: Flex until its capacity refusals have lasted ``flex_fallback_seconds``
    (counted from the first), then standard for the row's remaining attempts."""

    def __init__(self, tier: str, spec: RetrySpec, clock: Callable[[], datetime]) -> None:
        self.tier = tier
        self._after = spec.flex_fallback_seconds
        self._clock = clock
        self._since: datetime | None = None

    def refused(self, exc: ApiError) -> None:
        """Note a failed call; switch to standard once Flex has refused long enough."""
        if self.tier != "flex" or self._after is None or exc.status not in CAPACITY_STATUS:
            return
        now = self._clock()
        self._since = self._since or now
        if (now - self._since).total_seconds() >= self._after:
            self.tier = "standard"


class CallEvents(Protocol):
    """What the caller tells the run as calls happen."""

    def requested(self) -> None: ...

    async def billed(self, entry: Billed) -> None: ...

    def server_delay(self, delay: float, asked: float | None) -> None: ...


class RowCaller:
    """Calls the API for one row at a time, retrying as the job's [retry] section says."""

    def __init__(
        self,
        plan: Plan,
        client: GeminiClient,
        limits: RateLimits,
        budget: Budget,
        run_id: str,
        events: CallEvents,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry: RetryPolicy | None = None,
    ) -> None:
        self.plan = plan
        self.job = plan.job
        self.client = client
        self.limits = limits
        self.budget = budget
        self.run_id = run_id
        self.events = events
        self.now = clock
        self.retry = retry or RetryPolicy(plan.job.retry)

    async def call(self, work: Work) -> Outcome:
        """One row through its retry loop; what still fails becomes a failure record."""
        attempt = 0
        fallback = FlexFallback(self.job.model.tier, self.job.retry, self.now)
        try:
            async for retrying in self.retry.for_row():
                with retrying:
                    attempt = retrying.retry_state.attempt_number
                    try:
                        return await self._attempt(work, attempt, fallback.tier)
                    except ApiError as exc:
                        fallback.refused(exc)
                        raise
        except ApiError as exc:
            return self._failure(work, exc.category, exc.message, attempt, status=exc.status)
        except AnswerError as exc:
            return self._failure(work, exc.category, exc.message, attempt, text=exc.text)
        raise AssertionError("the retry loop ended without an outcome")  # pragma: no cover

    async def _attempt(self, work: Work, attempt: int, tier: str) -> Outcome:
        charged = self.limits.estimate(work.tokens)
        held = await self.budget.reserve(charged, tier)
        answer: Answer | None = None
        served = tier  # when the server does not say
        body = work.body if tier == self.job.model.tier else standard_body(work.body)
        try:
            await self.limits.acquire(charged)
            self.events.requested()
            reply = await self.client.reply(body)
            served = reply.tier or tier
            answer = parse_response(reply.payload)
        except ApiError as exc:
            self._delayed(exc)
            raise
        finally:  # also when the call fails, is cancelled or stops the run
            self.budget.settle(held, answer.usage if answer is not None else None, served)
        await self.limits.settle(work.tokens, charged, answer.usage.prompt)
        try:
            value = structured_value(answer, self.plan.validator)
        except AnswerError as exc:
            await self._bill(work, attempt, answer, exc.category, served)
            raise
        await self._bill(work, attempt, answer, "ok", served)
        row = work.row
        ids = {"row_id": row.row_id, **{c: row.values[c] for c in self.job.input.carry}}
        meta = self._meta(answer, reply.latency_ms, attempt, work.hash)
        return Outcome(self.plan.layout.rows(ids, value, meta), failed=False)

    def _delayed(self, exc: ApiError) -> None:
        if exc.status == 429:
            self.limits.rejected(exc.retry_delay, exc.quota)
        if exc.retry_delay is not None:
            self.events.server_delay(exc.retry_delay, exc.asked_delay)

    async def _bill(
        self, work: Work, attempt: int, answer: Answer, outcome: str, tier: str
    ) -> None:
        entry = Billed(
            self.run_id, self.job.name, work.row.row_id, attempt, self.job.model.name, answer,
            outcome, self.now(), tier,
        )  # fmt: skip
        await self.events.billed(entry)

    def _failure(
        self,
        work: Work,
        category: str,
        message: str,
        attempts: int,
        *,
        status: int | None = None,
        text: str | None = None,
    ) -> Outcome:
        record = error_row(
            work.row.row_id, category, message, status=status, attempts=attempts, text=text,
            request_hash=work.hash, at=self.now(),
        )  # fmt: skip
        return Outcome([record], failed=True, category=category, message=message)

    def _meta(
        self, answer: Answer, latency_ms: float, attempts: int, request_hash: str
    ) -> dict[str, Any]:
        usage = answer.usage
        return {
            "prompt_tokens": usage.prompt,
            "output_tokens": usage.output,
            "thinking_tokens": usage.thinking,
            "cached_tokens": usage.cached,
            "total_tokens": usage.total,
            "model_version": answer.model_version,
            "response_id": answer.response_id,
            "finish_reason": answer.finish_reason,
            "latency_ms": round(latency_ms, 3),
            "attempts": attempts,
            "completed_at": self.now(),
            "request_hash": request_hash,
        }
