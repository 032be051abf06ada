"""The online backend: one ``generateContent`` call per attempt, as fast as the quota allows.

One dispatcher takes the rows: it waits while the breaker is open (no new rows during an outage),
then for a place in flight from the concurrency controller (``limits.concurrency``: "auto" follows
Little's law, an integer pins it), then starts the row's task, which goes through
:class:`~batchgen.backends.online.caller.RowCaller` and gives its place back when it ends. Only the
dispatcher waits for room, so a target of two thousand calls in flight costs no idle workers.

Every attempt passes :class:`~batchgen.backends.online.caller.Pacing`: the day's request count, the
rate limiter, the breaker. What stops the run goes to the run's StopControl:

- the budget (``BudgetReachedError``, by ``max_cost``); a bad key, an unknown model, the day's
  quota (by ``api``, exit 3 or 5);
- an outage longer than ``retry.outage_minutes`` (by ``outage``, exit 4);
- calls that reach no server at all, or are all redirected (the TransportWatch: by
  ``unreachable``, exit 4);
- calls all refused with the same client error, e.g. a proxy refusing the key (the
  RefusalWatch: by ``refused``, exit 3).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from datetime import time as dt_time
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from batchgen.backends.base import Gauges, RunContext, Sink
from batchgen.backends.media import media_sender
from batchgen.backends.online.breaker import Breaker
from batchgen.backends.online.caller import Pacing, RowCaller
from batchgen.backends.online.concurrency import AUTO_START, concurrency_for, connection_limit
from batchgen.backends.online.daily import PACIFIC, DailyQuota
from batchgen.backends.online.descriptors import file_room
from batchgen.backends.online.rate import RateLimits
from batchgen.backends.stopping import RefusalWatch, TransportWatch
from batchgen.errors import (
    BatchgenError,
    BudgetReachedError,
    QuotaExhaustedError,
    RunStoppedError,
)
from batchgen.gemini.batch_client import BatchClient
from batchgen.gemini.client import GeminiClient
from batchgen.gemini.connect import client_for
from batchgen.records import REUSED, Work
from batchgen.redact import redact_url
from batchgen.store.outdir import OutputDir

__all__ = ["OnlineBackend", "requests_today"]

T = TypeVar("T")


class OnlineBackend:
    """Calls ``generateContent`` for each row, within the job's limits (see the module)."""

    def __init__(
        self,
        ctx: RunContext,
        unreachable_after: int = 0,
        note: Callable[[str], None] | None = None,
        refused_after: int = 0,
    ) -> None:
        self.ctx = ctx
        self.plan, self.job, self.api_key = ctx.plan, ctx.plan.job, ctx.api_key
        self.budget, self.run_id, self.stop, self.out = ctx.budget, ctx.run_id, ctx.stop, ctx.out
        self.cache = ctx.cache
        spec = self.job.limits
        self.limits = RateLimits(spec.requests_per_minute, spec.tokens_per_minute)
        self.room = file_room(spec.most_in_flight)  # raises the soft open-file limit if it can
        self.controller = concurrency_for(spec, self.limits, self.room, note)
        where = redact_url(self.job.model.base_url)
        self.breaker = Breaker(self.job.retry.outage_minutes, where=where)
        start = AUTO_START if spec.pinned is None else spec.pinned
        self.watch = TransportWatch(self.stop, where, unreachable_after or max(20, 2 * start))
        base = self.job.model.base_url
        self.refusals = RefusalWatch(self.stop, base, where, refused_after or max(20, 2 * start))
        self._rows: set[asyncio.Task[None]] = set()

    def gauges(self) -> Gauges:
        return Gauges(self.controller.target, self.controller.latency(), self.breaker.showing())

    async def run(self, works: AsyncIterator[Work], sink: Sink) -> None:
        """Call for every row of ``works``; return once no call is in flight."""
        per_day = self.job.limits.requests_per_day
        # the whole ledger is read only when a daily quota is set: a resume over millions of
        # answered rows should not pay for a count nobody asked for
        used = (
            0
            if per_day is None
            else await asyncio.to_thread(requests_today, self.out, datetime.now(UTC))
        )
        day = DailyQuota(per_day, used)
        pacing = Pacing(self.limits, self.controller, self.breaker, day, self.watch, self.refusals)
        limit = connection_limit(self.job.limits, self.room)
        async with client_for(self.job, self.api_key, GeminiClient, connections=limit) as client:
            files = BatchClient(client.transport)
            media = media_sender(self.plan, self.out.path, files)
            caller = RowCaller(
                self.plan,
                client,
                pacing,
                self.budget,
                self.run_id,
                sink,
                media=media,
                cache=self.cache,
            )
            body = self.stop.guard("dispatcher", self._dispatch(works, caller, sink))
            dispatcher = self.stop.track(asyncio.create_task(body))
            await asyncio.gather(dispatcher, return_exceptions=True)
            await self._drain()

    async def _dispatch(self, works: AsyncIterator[Work], caller: RowCaller, sink: Sink) -> None:
        async for work in works:
            if self.breaker.state != "closed":  # an outage: no new rows until a probe succeeds
                try:
                    if not await self._unless_stopping(self.breaker.wait_closed()):
                        return
                except RunStoppedError as exc:
                    self.stop.halt(exc, "outage")
                    return
            slot = await self.controller.acquire()
            if self.stop.stopping.is_set():
                self.controller.release(slot)
                return
            row = self.stop.guard("worker", self._row(caller, sink, work, slot))
            task = self.stop.track(asyncio.create_task(row))
            self._rows.add(task)
            task.add_done_callback(self._rows.discard)
            if self.stop.stopping.is_set():
                return

    async def _row(self, caller: RowCaller, sink: Sink, work: Work, slot: int) -> None:
        """One row; an error that stops the run halts it (the other calls may finish)."""
        try:
            outcome = await caller.call(work, slot)
        except BudgetReachedError as exc:
            self.stop.halt(exc, "max_cost")
            return
        except QuotaExhaustedError as exc:  # the day's quota: ours, or the server's 429
            self.stop.halt(exc, "api")
            return
        except RunStoppedError as exc:  # the breaker: open for retry.outage_minutes
            self.stop.halt(exc, "outage")
            return
        except BatchgenError as exc:  # a bad key, an unknown model
            self.stop.halt(exc, "api")
            return
        finally:
            self.controller.release(slot)
        await sink.outcome(outcome)

    async def _drain(self) -> None:
        """Wait for the rows in flight; once stopping, not for rows waiting out an outage."""
        while self._rows:
            if self.stop.stopping.is_set() and self.breaker.state != "closed":
                for task in self._rows:
                    task.cancel()  # they send nothing but a probe: the next run takes them
            await asyncio.wait(set(self._rows), timeout=1.0)

    async def _unless_stopping(self, aw: Awaitable[T]) -> bool:
        """Await ``aw``; return False (and abandon it) if the run stops taking rows first."""
        task = asyncio.ensure_future(aw)
        stopping = asyncio.ensure_future(self.stop.stopping.wait())
        finished = False
        try:
            done, _ = await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
            finished = task in done
        finally:  # also when the dispatcher itself is cancelled
            stopping.cancel()
            if not finished:
                task.cancel()
        if finished:
            task.result()  # its error, if any
        return finished


def requests_today(out: OutputDir, now: datetime) -> int:
    """Calls in the output's usage ledger since the last midnight Pacific (``now``'s day).

    The ledger holds the calls that returned usage (and rows a twin's call answered, which are
    not calls: left out); calls that failed without an answer (a 429,
    a 5xx, a timeout) are not in it, so the count is a floor of what the API counted.
    """
    table = out.read("usage", ["at", "outcome"])
    if table is None or table.num_rows == 0:
        return 0
    table = table.filter(pc.invert(pc.fill_null(pc.equal(table["outcome"], REUSED), False)))
    midnight = datetime.combine(now.astimezone(PACIFIC).date(), dt_time(), PACIFIC)
    since = pa.scalar(midnight.astimezone(UTC), pa.timestamp("ms", tz="UTC"))
    at = table.column("at").cast(pa.timestamp("ms", tz="UTC"))
    return int(pc.sum(pc.greater_equal(at, since)).as_py() or 0)
