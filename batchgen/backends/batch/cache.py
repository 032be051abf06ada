"""A context cache in Batch Mode: how long it must live, the probe that tests it, the verdict.

Whether a batch line may name ``cachedContent`` is uncertain (some models answer 400 "does not
support cached content with batch prediction"), so the run that chose a cache
(:mod:`batchgen.run.caching`) hands the batch backend a :class:`BatchCacheUse`, not yet probed.
The backend sends the first row to do alone, naming the cache, as a one-line batch (the probe);
:func:`verdict` reads what came back:

- ``ok``: answered, with ``cachedContentTokenCount`` > 0: the answer is the row's result, and
  the rest of the rows name the cache;
- ``unused``: answered without cached tokens: the answer is the row's result (it was paid),
  the cache is deleted and the rest go uncached;
- ``refused`` (an error naming cached content, or a 403/404) or ``unclear`` (any other
  error, or the probe batch failed): the cache is deleted, the row goes back into the main
  batch, uncached. An error line is not billed, so nothing is paid twice.

The cache must outlive the batches that name it: :func:`expected_seconds` is how long a batch
of this output is expected to take (the longest of its batches so far, else
:data:`DEFAULT_BATCH_S`, at most the 24-hour target), the TTL is that plus :data:`MARGIN_S`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from batchgen.backends.batch.jsonl import Collected
from batchgen.gemini.caches import CacheUse
from batchgen.gemini.request import Prefix, RequestBuilder
from batchgen.store.batches import BatchStore

__all__ = ["DEFAULT_BATCH_S", "MARGIN_S", "BatchCacheUse", "Verdict", "expected_seconds",
           "verdict"]  # fmt: skip

DEFAULT_BATCH_S = 2 * 3600.0  # no batch of this output ended yet: "usually much faster" than 24 h
SLA_S = 24 * 3600.0  # Batch Mode's target turnaround
MARGIN_S = 1800.0  # the cache outlives the expected batch by this much


def expected_seconds(output: Path) -> float:
    """How long a batch of ``output`` is expected to take: the longest one collected there so
    far, else :data:`DEFAULT_BATCH_S`; never past the 24-hour target."""
    took = BatchStore(output).durations()
    return min(SLA_S, max(took) if took else DEFAULT_BATCH_S)


class BatchCacheUse(CacheUse):
    """The run's cache as Batch Mode uses it: probed by a one-row batch before the other rows
    name it; ``release(why)`` deletes it at once (storage billed), and says why."""

    def __init__(
        self,
        builder: RequestBuilder,
        prefix: Prefix,
        name: str,
        note: Callable[[str], None],
        release: Callable[[str], Awaitable[None]],
    ) -> None:
        super().__init__(builder, prefix, name, note)
        self.release = release
        self.probed = False  # a probe line came back with cached tokens

    @property
    def probing(self) -> bool:
        """The next row to submit is the probe."""
        return self.active and not self.probed

    async def give_up(self, why: str) -> None:
        """No cache for the rest of the run: delete it now (said once, with why)."""
        if self.active:
            self.active = False
            await self.release(why)


@dataclass(frozen=True)
class Verdict:
    """What the probe's line says: ``kind`` (ok, unused, refused, unclear) and why, in words;
    ``keep``: the line's outcome is the row's result (it was answered and billed)."""

    kind: str
    why: str

    @property
    def keep(self) -> bool:
        return self.kind in ("ok", "unused")


def verdict(item: Collected | None, state: str) -> Verdict:
    """The verdict on the probe from its one collected line (None: no line) and the state its
    batch ended in ("collected", "failed", ...)."""
    if item is None or state != "collected":
        return Verdict("unclear", f"the probe batch ended {state}, so support is unknown")
    if item.billed is not None:  # answered (valid or not): the usage says if the cache served
        if item.billed.answer.usage.cached > 0:
            return Verdict("ok", "the probe line was answered from the cache")
        return Verdict("unused", "the probe line was answered without cached tokens")
    message = item.outcome.message or ""
    status = item.outcome.rows[0].get("http_status") if item.outcome.rows else None
    lowered = message.lower()
    said = message.removeprefix("the batch answered this row with ")[:160]
    if any(w in lowered for w in ("cachedcontent", "cached content", "cached_content")):
        return Verdict("refused", f"the probe line was refused: {said}")
    if status in (403, 404):
        return Verdict("refused", f"the probe line was refused: {said}")
    return Verdict("unclear", f"the probe line failed, so support is unknown: {said}")
