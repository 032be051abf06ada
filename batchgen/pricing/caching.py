"""Whether an explicit context cache pays for itself over a run, in numbers.

For a prefix of ``P`` tokens shared by ``N`` calls, at the rates of the run's tier::

    without = N × P × input
    with    = N × P × cached  +  P × input (creation)  +  P × hours × storage

(USD per 1M tokens; the tokens after the prefix cost the same both ways and are left out). The
creation is an online ``cachedContents`` call, billed at the standard input rate whatever the
run's tier; in Batch Mode the cached rate is the standard one too (the Batch API page bills
cache hits "at standard caching rates"), against the batch's half-price input. A
cache is chosen when ``P`` is at least the model's minimum and ``with < without``. The run
(:mod:`batchgen.run.caching`) and ``estimate`` both ask :func:`cache_costs`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from batchgen.pricing.table import ModelPrice

__all__ = ["CacheCosts", "break_even_rows", "cache_costs"]

M = 1_000_000


@dataclass(frozen=True)
class CacheCosts:
    """The prefix's cost over a run with and without a cache, and the choice."""

    prefix_tokens: int
    calls: int
    hours: float
    min_tokens: int
    without: float  # USD: the prefix in every call at the input rate
    with_cache: float  # USD: cached rate per call, plus creation and storage
    creation: float
    storage: float

    @property
    def big_enough(self) -> bool:
        return self.prefix_tokens >= self.min_tokens

    @property
    def pays(self) -> bool:
        return self.big_enough and self.with_cache < self.without

    @property
    def why_not(self) -> str | None:
        """Why no cache, in words; None when it pays."""
        if not self.big_enough:
            return (
                f"the shared prefix ({self.prefix_tokens} tokens) is below the model's "
                f"minimum for a cache ({self.min_tokens})"
            )
        if not self.pays:
            return (
                f"a cache would cost ${self.with_cache:.4f} against ${self.without:.4f} "
                f"without ({self.calls} calls, {self.hours:.2f} h of storage)"
            )
        return None


def cache_costs(
    price: ModelPrice, tier: str, *, calls: int, prefix_tokens: int, hours: float
) -> CacheCosts:
    rates = price.rates(tier)
    creation = prefix_tokens * price.rates("standard").input / M
    storage = prefix_tokens * hours * price.storage_rate / M
    return CacheCosts(
        prefix_tokens=prefix_tokens,
        calls=calls,
        hours=hours,
        min_tokens=price.min_cache_tokens,
        without=calls * prefix_tokens * rates.input / M,
        with_cache=calls * prefix_tokens * rates.cached / M + creation + storage,
        creation=creation,
        storage=storage,
    )


def break_even_rows(price: ModelPrice, *, hours: float, tier: str = "standard") -> int | None:
    """The fewest calls for which a cache of any size (at least the minimum) is cheaper, with
    ``hours`` of storage; None when it never is (cached rate not below input)."""
    rates = price.rates(tier)
    saving = rates.input - rates.cached
    if saving <= 0:
        return None
    # N × (input − cached) > creation + hours × storage  (per token of prefix)
    creation = price.rates("standard").input
    return math.floor((creation + hours * price.storage_rate) / saving) + 1
