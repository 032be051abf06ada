"""One row's calls: attempts under the limits and the budget, retries, and what each call cost.

:class:`RowCaller` turns a rendered request into an :class:`~batchgen.records.Outcome` (its
result rows, or its failure record) and reports each call that returned usage as a
:class:`Billed` entry as soon as it returns, so the ledger is in the journal even when the row
goes on retrying, or the run is killed before the row ends.

Each attempt passes the run's :class:`Pacing` before it is sent (the daily count, the rate
limiter, the breaker, its place in flight) and tells it how the call went after.

Each call is billed at the service tier that served it (the server says; else the tier asked
for). A Flex row refused for lack of capacity for ``retry.flex_fallback_seconds`` goes on at the
standard tier (:class:`FlexFallback`): Flex never falls back by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from batchgen.backends.media import MediaFailedError, MediaSender
from batchgen.backends.online.breaker import Breaker
from batchgen.backends.online.concurrency import ConcurrencyController
from batchgen.backends.online.daily import DailyQuota
from batchgen.backends.online.rate import RateLimits
from batchgen.backends.online.retry import DeadlineError, RetryPolicy, RowDeadline
from batchgen.backends.stopping import RefusalWatch, TransportWatch
from batchgen.errors import FatalApiError, InternalError
from batchgen.gemini.answers import AnswerError, parse_response
from batchgen.gemini.caches import CacheUse, cache_refusal
from batchgen.gemini.client import ApiError, GeminiClient, Reply
from batchgen.gemini.request import Body, standard_body
from batchgen.input.media import BadMediaError
from batchgen.job.spec import RetrySpec
from batchgen.plan import Plan
from batchgen.pricing.budget import Budget
from batchgen.records import Answer, Billed, Outcome, Work
from batchgen.store.output import error_row, result_meta

CAPACITY_STATUS = frozenset({429, 503})  # how Flex says it is short of capacity


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


@dataclass
class Pacing:
    """What every attempt passes before it is sent, and tells when it returns."""

    limits: RateLimits
    controller: ConcurrencyController
    breaker: Breaker
    day: DailyQuota
    watch: TransportWatch
    refusals: RefusalWatch | None = None  # the same 4xx on every call: a setting, not the rows

    async def before(self, slot: int, charged: int, deadline: RowDeadline | None = None) -> float:
        """Wait for the call's turn; return when it was sent (the limits' clock).

        Raises QuotaExhaustedError before the day's quota is exceeded, RunStoppedError once the
        breaker has been open for ``retry.outage_minutes``, and DeadlineError rather than wait
        out a pause of the limits that ends past the row's ``deadline``.
        """
        if not self.day.allows():
            raise self.day.exhausted()
        sent = await self.limits.acquire(charged, deadline)
        if await self._admit(deadline):  # it waited: the limiter's turn is stale
            sent = await self.limits.acquire(charged, deadline)
        if not self.day.allows():  # other calls went meanwhile; no await from here to send
            raise self.day.exhausted()
        self.day.spend()
        self.controller.sending(slot)
        return sent

    async def _admit(self, deadline: RowDeadline | None) -> bool:
        """The breaker's :meth:`~Breaker.admit`, given up (DeadlineError) at the row's deadline:
        a row does not wait out an outage past it."""
        if deadline is None or self.breaker.state == "closed":
            return await self.breaker.admit()
        clock, sleep = self.limits.clock, self.limits.sleep
        admitted = asyncio.ensure_future(self.breaker.admit())
        try:
            while not admitted.done():
                if (left := deadline.at - clock()) <= 0:
                    why = "the API fails every call (an outage: batchgen is waiting to probe it)"
                    raise deadline.passed(why, clock())
                timer = asyncio.ensure_future(sleep(left))
                try:
                    await asyncio.wait((admitted, timer), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    timer.cancel()
            return admitted.result()
        finally:
            admitted.cancel()  # a no-op once it is done

    def answered(self, sent: float, latency_s: float) -> None:
        """A call came back with an HTTP 200 (whatever its body says, the server is up)."""
        self.breaker.record(True, False, sent)
        self.watch.saw(None, None)
        if self.refusals is not None:
            self.refusals.answered()
        self.controller.observe(latency_s)

    def failed(self, exc: ApiError, sent: float, charged: int) -> bool:
        """A call failed; return whether it spends the row's attempt (not during an outage)."""
        self.watch.saw(exc.category, exc.message)
        if self.refusals is not None:
            self.refusals.saw(exc.status, exc.message)
        if exc.status == 429:
            self.limits.rejected(exc.retry_delay, exc.quota, sent, charged)
        if exc.category in ("connection", "open_files"):  # nothing answered: not the breaker's
            return True
        server_side = exc.category == "timeout" or (exc.status or 0) >= 500
        if server_side:
            self.breaker.note(exc.message)
        return self.breaker.record(False, server_side, sent)


class RowCaller:
    """Calls the API for one row at a time, retrying as the job's [retry] section says."""

    def __init__(
        self,
        plan: Plan,
        client: GeminiClient,
        pacing: Pacing,
        budget: Budget,
        run_id: str,
        events: CallEvents,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry: RetryPolicy | None = None,
        media: MediaSender | None = None,
        cache: CacheUse | None = None,
    ) -> None:
        self.plan = plan
        self.cache = cache
        self.job = plan.job
        self.client = client
        self.pacing = pacing
        self.limits = pacing.limits
        self.budget = budget
        self.run_id = run_id
        self.events = events
        self.now = clock
        self.retry = retry or RetryPolicy(plan.job.retry, clock=pacing.limits.clock)
        self.media = media

    async def call(self, work: Work, slot: int) -> Outcome:
        """One row through its retry loop (see :meth:`_call`); a row whose media cannot be sent
        (changed since the pre-scan) fails as input, with nothing sent."""
        try:
            return await self._call(work, slot)
        except MediaFailedError as exc:
            message = f"{self.plan.reader.path}: {exc}"
            return self._failure(work, "input", message, 0)

    async def _call(self, work: Work, slot: int) -> Outcome:
        """One row through its retry loop; what still fails becomes a failure record.

        ``slot`` is the row's place in flight
        (:class:`~batchgen.backends.online.concurrency.ConcurrencyController`). The first call is
        made before tenacity's loop, which is entered only if it fails (with that failure replayed
        as its first attempt): the same policy, without building the loop for the rows that need
        none.
        """
        spared = [0]  # calls that failed during an outage: they spend no attempt
        fallback = FlexFallback(self.job.model.tier, self.job.retry, self.now)
        started = self.retry.clock()
        seconds = self.job.retry.row_deadline_seconds
        deadline = RowDeadline(started + seconds, seconds)
        first: ApiError | AnswerError
        try:
            return await self._attempt(work, 1, slot, spared, fallback.tier, deadline)
        except ApiError as exc:
            fallback.refused(exc)
            first = exc
        except AnswerError as exc:
            first = exc
        attempt = 1
        try:
            async for retrying in self.retry.for_row(lambda: spared[0], started):
                with retrying:
                    attempt = retrying.retry_state.attempt_number
                    if attempt == 1:
                        raise first
                    try:
                        return await self._attempt(
                            work, attempt, slot, spared, fallback.tier, deadline
                        )
                    except ApiError as exc:
                        fallback.refused(exc)
                        raise
        except ApiError as exc:
            return self._failure(work, exc.category, exc.message, attempt, status=exc.status)
        except AnswerError as exc:
            return self._failure(work, exc.category, exc.message, attempt, text=exc.text)
        raise AssertionError("the retry loop ended without an outcome")  # pragma: no cover

    async def _attempt(
        self,
        work: Work,
        attempt: int,
        slot: int,
        spared: list[int],
        tier: str,
        deadline: RowDeadline,
    ) -> Outcome:
        charged = self.limits.estimate(work.tokens)
        held = await self.budget.reserve(charged, tier)
        answer: Answer | None = None
        served = tier  # when the server does not say
        try:
            sent = await self.pacing.before(slot, charged, deadline)
            reply = await self._send(work, tier)
        except DeadlineError:  # never sent: nothing to tell the pacing
            raise
        except ApiError as exc:
            spared[0] += not self.pacing.failed(exc, sent, charged)
            self._delayed(exc)
            raise
        else:
            self.pacing.answered(sent, reply.latency_ms / 1000)
            served = reply.tier or tier
            answer = parse_response(reply.payload)
        finally:  # also when the call fails, is cancelled or stops the run
            self.budget.settle(held, answer.usage if answer is not None else None, served)
        await self.limits.settle(work.tokens, charged, answer.usage.prompt, sent_at=sent)
        meta = result_meta(answer, attempt, work.hash, self.now(), reply.latency_ms)
        try:
            rows = self.plan.answered(work, answer, meta)
        except AnswerError as exc:
            await self._bill(work, attempt, answer, exc.category, served)
            raise
        await self._bill(work, attempt, answer, "ok", served)
        return Outcome(rows, failed=False)

    async def _send(self, work: Work, tier: str) -> Reply:
        """Post the row's request; a media row's is built now, and built again (uploading the
        file anew) once if the server says a file it names is gone. While the run's context
        cache holds the job's context files, the row's request is built without them; if the
        cache is then refused, it is built again with them and sent uncached."""
        if not work.media:
            return await self._post(work.body, tier)
        if self.media is None:  # its body is the text alone: never sent without its files
            raise InternalError(f"row {work.row.row_id}: no media sender for its files")
        lost_once = short_failed = False
        while True:
            short = not short_failed and self.cache is not None and self.cache.holds_context
            async with self.media.request(work, context=not short) as (built, names):
                try:
                    return await self._post(built, tier, whole=not short)
                except _IncompleteError:
                    short_failed = True  # the cache is off (or not this row's): build it whole
                except ApiError as exc:
                    if lost_once or not self.media.lost(exc, names):
                        raise
                    lost_once = True
                except BadMediaError as exc:  # a file changed while its request was sent
                    raise MediaFailedError(f"row {work.row.row_id}: {exc}") from None

    async def _post(self, body: Body, tier: str, whole: bool = True) -> Reply:
        """Send a row's body, with the run's context cache while it is usable; a call the API
        refuses because of the cache is sent again at once without it (the cache is then off
        for the whole run), so the refusal costs the row nothing. ``whole`` false: ``body``
        lacks the context parts the cache holds, so it cannot go uncached
        (:class:`_IncompleteError`: the caller builds it whole)."""
        cache = self.cache
        if cache is not None and whole and cache.prefix.holds_context:
            cache = None  # the body carries the context parts the cache holds: not both
        cached = cache.wire(body) if cache is not None else None
        if cached is not None:
            self.events.requested()
            try:
                return await self.client.reply(self._at(cached, tier))
            except (ApiError, FatalApiError) as exc:
                why = cache_refusal(exc)
                if why is None or cache is None:
                    raise
                cache.refused(why)
        if not whole:
            raise _IncompleteError
        self.events.requested()
        return await self.client.reply(self._at(body, tier))

    def _at(self, body: Body, tier: str) -> Body:
        if tier == self.job.model.tier:
            return body
        return standard_body(body)

    def _delayed(self, exc: ApiError) -> None:
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


class _IncompleteError(Exception):
    """A body built without the context parts cannot be sent without the cache that holds
    them (:meth:`RowCaller._post`)."""
