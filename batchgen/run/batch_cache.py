"""Batch Mode's context cache: chosen at batch rates, probed, kept for the batches' hours.

:class:`BatchRunCache` is :class:`~batchgen.run.caching.RunCache` with Batch Mode's answers to
its hooks. The choice weighs the cache at the batch tier's rates (half-price input against
cached tokens at the standard cached rate) with storage for the hours a batch of this output is
expected to take plus a margin (:func:`batchgen.backends.batch.cache.expected_seconds`). The
cache it makes is a :class:`~batchgen.backends.batch.cache.BatchCacheUse`: the batch backend
probes it with a one-row batch and, if the probe fails, :meth:`BatchRunCache._release` deletes
it at once. A run that ends while batches naming the cache still run (``--no-wait``, a signal,
the time budget) keeps it alive and recorded in ``OUTPUT/cache.json``, its TTL set to cover the
expected batch time; the run that collects the last of them deletes it (a cache recorded while
no batch is open is dealt with as a killed run's: reused, or deleted).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

from batchgen.backends.batch.cache import MARGIN_S, BatchCacheUse, expected_seconds
from batchgen.errors import BatchgenError
from batchgen.gemini.caches import CacheUse
from batchgen.gemini.request import Prefix
from batchgen.gemini.transport import ApiError
from batchgen.pricing.caching import CacheCosts
from batchgen.run.caching import MIN_TTL_S, RunCache
from batchgen.store.batches import BatchStore
from batchgen.store.cache import CacheRecord, drop_cache_record, read_cache_record

__all__ = ["BatchRunCache"]

UNCACHED = "batch: no context cache, the batch discount is relied on"


class BatchRunCache(RunCache):
    """The context cache of a ``tier = "batch"`` run (see the module)."""

    margin_s = MARGIN_S

    async def start(self, rows: int, moved: Path | None = None) -> CacheUse | None:
        store = BatchStore(self.out.path)
        rows = max(0, rows - len(store.rows_in_flight()))  # those are submitted already
        prefix = self.plan.prefix() if self.job.cache.mode != "off" else None
        if self.job.cache.mode == "off" and self.plan.prefix() is not None:
            self.note(f"{UNCACHED} ([cache] mode is off)")
        earlier = read_cache_record(self.out.path)
        if earlier is not None and store.open_chunks():
            if prefix is None or earlier.digest != prefix.digest():  # not ours to use, or drop
                self.note(f"batch: the context cache {earlier.name} is kept for the batches "
                          "still running; the run that collects them deletes it")  # fmt: skip
                return None
        return await super().start(rows, moved)

    async def _create(self, prefix: Prefix, rows: int) -> CacheUse | None:
        if rows <= 0:  # every row left is in a running batch: nothing would name a new cache
            return None
        return await super()._create(prefix, rows)

    def _batches_open(self) -> bool:
        return bool(BatchStore(self.out.path).open_chunks())

    def _expected(self, rows: int) -> float:
        return expected_seconds(self.out.path)

    def _reused_expect(self, record: CacheRecord) -> float:
        """The batch time still expected of a cache made by an earlier run."""
        age = (datetime.now(UTC) - datetime.fromisoformat(record.created_at)).total_seconds()
        return max(float(MIN_TTL_S), expected_seconds(self.out.path) - age)

    def _use(self, prefix: Prefix, name: str) -> CacheUse:
        return BatchCacheUse(self.plan.builder, prefix, name, self.note, self._release)

    def _declined(self, why: str | None) -> None:
        self.note(f"{UNCACHED} ({why or 'the shared prefix is below the model minimum'})")

    def _chosen(self, tokens: int, c: CacheCosts) -> None:
        self.note(
            f"batch: context cache, probed first: the {tokens:,}-token prefix every row shares "
            f"is cached for {c.hours:.1f} h (about USD {c.with_cache:.4f} for it instead of "
            f"{c.without:.4f} at batch rates)"
        )

    async def _release(self, why: str) -> None:
        """The probe failed: delete the cache now, bill its storage, say so once."""
        if self.record is not None and self._client is not None:
            with contextlib.suppress(ApiError, BatchgenError):
                await self._client.delete(self.record.name)
            await self._bill_storage(self.record)
            drop_cache_record(self.out.path)
            self.record = None
        self.note(f"{UNCACHED} ({why.rstrip('.')}; the cache is deleted)")

    async def finish(self, journal: bool = True) -> None:
        """Keep the cache while batches that name it still run (TTL set to cover them), else
        delete it as any run's."""
        usable = self.use is not None and self.use.active
        if self.record is None or self._client is None or not usable or not self._batches_open():
            if self.record is not None and usable:
                self.note(f"batch: the context cache {self.record.name} is deleted: no batch "
                          "names it any more")  # fmt: skip
            await super().finish(journal)
            return
        ttl = self._ttl()
        with contextlib.suppress(ApiError, BatchgenError):
            await self._client.extend(self.record.name, ttl)
        self.note(
            f"batch: the context cache {self.record.name} is kept for the batches still "
            f"running ({ttl / 3600:.1f} h); the run that collects them deletes it"
        )
        self.record = None  # in OUTPUT/cache.json still: the next run's to delete
        await self._stack.aclose()
