"""A run's explicit context cache: chosen, created, recorded, kept alive, deleted.

With ``[cache] mode = "auto"`` (the default) and a prefix every row shares
(:meth:`batchgen.plan.Plan.prefix`: the system instruction, the example turns, the context
files), :meth:`RunCache.start` counts the prefix (countTokens) and
asks :func:`batchgen.pricing.caching.cache_costs` whether a cache pays for the rows left; if so it
creates one with a TTL a few minutes beyond the run's expected time, writes its name to
``OUTPUT/cache.json`` (:mod:`batchgen.store.cache`) before any call names it, and bills its
creation in the ledger. :meth:`RunCache.keep_alive` extends the TTL while the run lasts and adds
the storage accrued since its last tick to the budget (``--max-cost`` sees it as it accrues);
:meth:`RunCache.finish` (the runner's ``finally``) deletes it, bills its storage in one ledger
entry (token-hours from creation to deletion; the budget gets only what it has not seen) and
removes the record. A cache recorded by a killed run is reused
when it is alive and holds the same prefix, else deleted (its storage billed then).

Anything the API refuses about the cache (create, a call naming it) leaves the run uncached,
said once; it never fails a row. Batch Mode's cache (probed, kept for the batches' hours) is
:class:`batchgen.run.batch_cache.BatchRunCache`, which fills in this class's hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchgen.backends.media import MediaFailedError, media_sender
from batchgen.errors import BatchgenError, BudgetReachedError
from batchgen.gemini.batch_client import BatchClient
from batchgen.gemini.caches import CacheInfo, CachesClient, CacheUse
from batchgen.gemini.client import GeminiClient
from batchgen.gemini.connect import client_for
from batchgen.gemini.request import Prefix
from batchgen.gemini.transport import ApiError
from batchgen.plan import Plan
from batchgen.pricing.budget import Budget
from batchgen.pricing.caching import CacheCosts, cache_costs
from batchgen.pricing.file import load_prices
from batchgen.pricing.table import PriceTable
from batchgen.records import CACHE_CREATE, CACHE_STORAGE, Answer, Billed, Usage
from batchgen.store.cache import (
    CacheRecord,
    drop_cache_record,
    read_cache_record,
    write_cache_record,
)
from batchgen.store.outdir import OutputDir

__all__ = ["RunCache", "expected_seconds"]

TTL_MARGIN_S = 300  # the TTL runs this far beyond the expected remaining time
EXTEND_EVERY_S = 60.0  # how often the TTL is pushed ahead while the run lasts
MIN_TTL_S = 600
CREATION_TIER = "standard"  # creating a cache is an online call, billed (ledger) at standard


def expected_seconds(plan: Plan, rows: int) -> float:
    """The run's expected time for ``rows`` calls: the request rate limit's bound (the same
    bound ``estimate`` gives as its least run time)."""
    return rows / plan.job.limits.requests_per_minute * 60


class RunCache:
    """The context cache of one run (see the module)."""

    margin_s: float = TTL_MARGIN_S  # the TTL runs this far beyond the expected remaining time

    def __init__(
        self,
        plan: Plan,
        api_key: str,
        out: OutputDir,
        prices: object,
        budget: Budget,
        run_id: str,
        note: Callable[[str], None],
        bill: Callable[[Billed], Coroutine[Any, Any, None]],
    ) -> None:
        self.plan, self.job, self.api_key, self.out = plan, plan.job, api_key, out
        self.table = prices if isinstance(prices, PriceTable) else None
        self.budget = budget
        self.run_id, self.note, self.bill = run_id, note, bill
        self.use: CacheUse | None = None
        self.record: CacheRecord | None = None
        self.costs: CacheCosts | None = None
        self._stack = contextlib.AsyncExitStack()
        self._client: CachesClient | None = None
        self._expect_s = 0.0
        self._started = time.monotonic()
        self._accrued: dict[str, float] = {}  # cache name -> storage hours added to the budget

    async def start(self, rows: int, moved: Path | None = None) -> CacheUse | None:
        """Choose and create the cache for ``rows`` calls; None: the run goes uncached.

        A cache recorded by a killed run is dealt with first, in any mode; ``moved`` is where
        ``fresh`` set the previous output aside (a cache recorded there is deleted)."""
        prefix = self.plan.prefix()
        if self.job.cache.mode == "off":
            prefix = None
        earlier = read_cache_record(self.out.path)
        old = read_cache_record(moved) if moved is not None else None
        if prefix is None and earlier is None and old is None:
            return None
        self._client = await self._stack.enter_async_context(
            client_for(self.job, self.api_key, CachesClient)
        )
        try:
            if old is not None and moved is not None:
                await self._earlier(old, None, moved)
            if earlier is not None:
                reused = await self._earlier(earlier, prefix)
                if reused is not None or prefix is None:
                    return reused
            assert prefix is not None
            return await self._create(prefix, rows)
        except (ApiError, BatchgenError) as exc:  # the calls themselves may still be fine
            self._declined(f"the API refused it ({_first_line(exc)})")
            return None
        except MediaFailedError as exc:  # the rows meet it too, one by one
            self._declined(str(exc))
            return None

    async def _earlier(
        self, record: CacheRecord, prefix: Prefix | None, where: Path | None = None
    ) -> CacheUse | None:
        """A killed run's cache: ours again if alive and the same prefix, else deleted (and
        its record in ``where``, the output set aside, or this one)."""
        assert self._client is not None
        alive: CacheInfo | None = None
        with contextlib.suppress(ApiError, BatchgenError):
            alive = await self._client.get(record.name)
        if alive is not None and prefix is not None and record.digest == prefix.digest():
            self.record, self._expect_s = record, self._reused_expect(record)
            self.use = self._use(prefix, record.name)
            self.note(f"reusing the context cache of an earlier run ({record.name})")
            return self.use
        if alive is not None:
            with contextlib.suppress(ApiError, BatchgenError):
                await self._client.delete(record.name)
        await self._bill_storage(record)
        drop_cache_record(where or self.out.path)
        return None

    async def _create(self, prefix: Prefix, rows: int) -> CacheUse | None:
        assert self._client is not None
        price = (self.table or load_prices()).resolve(self.job.model.name)
        if price is None:
            self._declined(f"no price for {self.job.model.name} to decide by")
            return None
        if not prefix.holds_context and len(prefix.count_body()) < price.min_cache_tokens:
            self._declined(None)  # fewer characters than the minimum's tokens: no need to count
            return None
        prefix, tokens = await self._counted(prefix)
        self._expect_s = self._expected(rows)
        hours = (self._expect_s + self.margin_s) / 3600
        self.costs = cache_costs(
            price, self.job.model.tier, calls=rows, prefix_tokens=tokens, hours=hours
        )
        if not self.costs.pays:
            self._declined(self.costs.why_not)
            return None
        info = await self._client.create(prefix, self._ttl())
        self.record = CacheRecord(
            info.name, prefix.digest(), info.tokens or tokens, self.job.model.name,
            datetime.now(UTC).isoformat(), self.run_id,
        )  # fmt: skip
        try:
            write_cache_record(self.out.path, self.record)  # before any call names it
        except OSError as exc:  # unrecorded, a kill would leave it billing: not used at all
            self.record = None
            with contextlib.suppress(ApiError, BatchgenError):
                await self._client.delete(info.name)
            self.note(f"no context cache: cannot record it in {self.out.path}: {exc.strerror}")
            return None
        usage = Usage(prompt=self.record.tokens, total=self.record.tokens)
        self.budget.add(self.record.tokens * price.rates(CREATION_TIER).input / 1e6)
        await self.bill(self._entry(CACHE_CREATE, usage))
        self.use = self._use(prefix, info.name)
        self._chosen(self.record.tokens, self.costs)
        return self.use

    # --- what Batch Mode's cache (batchgen.run.batch_cache) does its own way ---------------

    def _expected(self, rows: int) -> float:
        """Seconds the cache is expected to be needed for ``rows`` calls."""
        return expected_seconds(self.plan, rows)

    def _reused_expect(self, record: CacheRecord) -> float:
        return MIN_TTL_S

    def _use(self, prefix: Prefix, name: str) -> CacheUse:
        return CacheUse(self.plan.builder, prefix, name, self.note)

    def _declined(self, why: str | None) -> None:
        """Say why no cache (None: too short to say anything)."""
        if why is not None:
            self.note(f"no context cache: {why}")

    def _chosen(self, tokens: int, c: CacheCosts) -> None:
        self.note(
            f"context cache: the {tokens:,}-token prefix every row shares is cached "
            f"(about USD {c.with_cache:.4f} for it instead of {c.without:.4f})"
        )

    async def _counted(self, prefix: Prefix) -> tuple[Prefix, int]:
        """The prefix as the cache will hold it, and its tokens (countTokens), on one client.
        Context files' parts are made as the rows would send them: a large file uploaded (and
        recorded, so rows sent uncached name the same upload), the rest inline."""
        async with client_for(self.job, self.api_key, GeminiClient) as client:
            if prefix.holds_context:
                sender = media_sender(self.plan, self.out.path, BatchClient(client.transport))
                assert sender is not None  # the job has context files
                prefix = prefix.with_context(await sender.context_parts(self.plan.context))
            return prefix, await client.count_tokens(prefix.count_body())

    def _ttl(self) -> int:
        left = self._expect_s - (time.monotonic() - self._started)
        return int(max(MIN_TTL_S, left + self.margin_s))

    async def keep_alive(self, over: Callable[[BudgetReachedError], None] | None = None) -> None:
        """Every EXTEND_EVERY_S until cancelled: push the TTL ahead (a refusal ends the cache's
        use: the calls then go uncached) and add the storage since the last tick to the budget,
        so that ``--max-cost`` sees it as it accrues; ``over`` is told once the budget's cap is
        reached (the run stops by max_cost)."""
        while self.record is not None and self._client is not None:
            await asyncio.sleep(EXTEND_EVERY_S)
            if self.record is None:
                return
            self._accrue(self.record)
            cap = self.budget.cap
            if over is not None and cap is not None and self.budget.spent >= cap:
                over(self.budget.reached())
                over = None  # told once
            if self.use is None or not self.use.active:
                continue  # refused: no TTL to keep ahead, but its storage accrues till deleted
            try:
                await self._client.extend(self.use.name, self._ttl())
            except (ApiError, BatchgenError) as exc:
                self.use.refused(_first_line(exc))

    async def finish(self, journal: bool = True) -> None:
        """Delete the cache, bill its storage, remove the record; then close the client.

        ``journal`` false: the run failed and its writer has ended, so the storage entry cannot
        be journaled any more; the cache is deleted all the same (never left billing)."""
        try:
            if self.record is not None and self._client is not None:
                with contextlib.suppress(ApiError, BatchgenError):
                    await self._client.delete(self.record.name)
                if journal:
                    await self._bill_storage(self.record)
                drop_cache_record(self.out.path)
                self.record = None
        finally:
            await self._stack.aclose()

    def _accrue(self, record: CacheRecord) -> float:
        """The cache's token-hours from its creation to now; the storage not added to the
        budget yet is added now (each cache's storage counted once, however often asked)."""
        created = datetime.fromisoformat(record.created_at)
        hours = max(0.0, (datetime.now(UTC) - created).total_seconds() / 3600)
        price = (self.table or load_prices()).resolve(self.job.model.name)
        added = self._accrued.get(record.name, 0.0)
        if price is not None and hours > added:
            self.budget.add(record.tokens * (hours - added) * price.storage_rate / 1e6)
            self._accrued[record.name] = hours
        return record.tokens * max(hours, added)

    async def _bill_storage(self, record: CacheRecord) -> None:
        """The cache's one ledger entry for its storage: the total token-hours (what the budget
        has not seen of it yet added there now)."""
        token_hours = self._accrue(record)
        await self.bill(self._entry(CACHE_STORAGE, Usage(), token_hours))

    def _entry(self, outcome: str, usage: Usage, token_hours: float | None = None) -> Billed:
        answer = Answer(None, None, None, usage, None, None, has_candidate=False)
        return Billed(
            self.run_id, self.job.name, "(cache)", 0, self.job.model.name, answer, outcome,
            datetime.now(UTC), "standard", token_hours,
        )  # fmt: skip


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]
