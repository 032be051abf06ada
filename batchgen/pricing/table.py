"""Prices as data, dated, and the cost arithmetic of the usage ledger.

The price table ships as ``batchgen/pricing/prices.toml`` (its format is described at the top of
that file, and read by :mod:`batchgen.pricing.file`); ``--prices FILE`` in the same format overrides
or adds models. Each model has **periods**: rates from one UTC day (``from``) to another (``to``,
inclusive; open when absent), each with its source and the date it was checked. A call is priced by
the period covering its UTC day and by the **tier** that served it (``standard``, ``flex`` or
``batch``; the two cheaper tiers are a factor of standard, 0.5 unless a file says otherwise, or
prices of their own). A call costs::

    (prompt - cached - audio) × input  +  audio × audio_rate  +  cached × cached_rate
      +  (output + thinking) × output

per million tokens: cached tokens are part of ``promptTokenCount``, and thinking is billed as
output. ``audio`` is the prompt's uncached audio tokens (``promptTokensDetails`` minus
``cacheTokensDetails``): several models price audio input apart (``audio`` in a period; the input
rate when absent); images, video and PDF pages are billed at the input rate. Cached audio is
billed at the cached rate (no model's cached-audio rate is in the table). Once a prompt passes a
model's long-context threshold (200k for the Pro models) the whole call is billed at the higher
rates. A model the table does not know has no cost (None), never 0.

Beside the prices each model may carry its **lifecycle** (status, release and retirement dates,
the model its calls are routed to once retired). A call to a retired model that is routed
elsewhere is billed at the routed model's rate of that day, as Google bills it.

Model names are matched as the API spells them, with or without ``models/``. A name the table
lacks falls back to the longest known name it extends by version parts only
(``gemini-2.5-flash-001``, ``gemini-2.5-flash-preview-09-2025`` → ``gemini-2.5-flash``): those
are snapshots of the same model, usually at its price. A suffix with any other word
(``-image``, ``-tts``, ``-lite``, ``-native-audio``, ``-thinking``) names a different model with
its own price, so it is not matched, and the model stays unpriced until an override names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from batchgen.errors import JobError

__all__ = [
    "TIERS",
    "Lifecycle",
    "LongContext",
    "ModelPrice",
    "PriceTable",
    "PricedModel",
    "Rates",
    "Tier",
    "lifecycle_warning",
    "same_model",
    "utc_today",
]

PER = 1_000_000  # prices are per 1M tokens
Tier = Literal["standard", "flex", "batch"]
TIERS: tuple[Tier, ...] = ("standard", "flex", "batch")
Status = Literal["current", "preview", "deprecated", "retired"]
STATUSES: tuple[Status, ...] = get_args(Status)
WARN_DAYS = 30  # a retirement this close is worth a warning on every validate, run and estimate
_VERSION_PART = re.compile(r"^(?:-(?:\d+|preview|exp))+$")

Counts = npt.NDArray[np.int64]


DEFAULT_CACHE_STORAGE = 4.50  # no storage price given: the dearest known (Pro)
DEFAULT_CACHE_MIN_TOKENS = 4096  # no minimum given: the largest the docs list


def utc_today() -> date:
    """Today's date in UTC: the day a call made now is billed on."""
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class LongContext:
    """Rates for a call whose prompt passes ``threshold`` tokens (USD per 1M tokens)."""

    threshold: int
    input: float
    output: float
    cached: float


@dataclass(frozen=True)
class Rates:
    """One tier's rates in USD per 1M tokens, with its long-context tier if the model has one.

    ``audio`` prices uncached audio prompt tokens (None: at the input rate). It holds past the
    long-context threshold too: no model in the table has both.
    """

    input: float
    output: float
    cached: float
    long_context: LongContext | None = None
    audio: float | None = None

    def scaled(self, factor: float) -> Rates:
        """These rates times ``factor`` (Flex and Batch are a fraction of standard)."""
        long = self.long_context
        if long is not None:
            long = LongContext(
                long.threshold, long.input * factor, long.output * factor, long.cached * factor
            )
        audio = None if self.audio is None else self.audio * factor
        return Rates(self.input * factor, self.output * factor, self.cached * factor, long, audio)

    @property
    def audio_rate(self) -> float:
        """The rate of an uncached audio prompt token."""
        return self.input if self.audio is None else self.audio


@dataclass(frozen=True)
class ModelPrice:
    """One model's rates over one period; ``name`` is the price table's key.

    ``start`` and ``end`` are UTC days, both included; None leaves that side open.
    """

    name: str
    standard: Rates
    flex: Rates
    batch: Rates
    start: date | None = None
    end: date | None = None
    source: str = ""
    source_date: date | None = None
    cache_storage: float | None = None  # USD per 1M tokens per hour (None: not in the table)
    cache_min_tokens: int | None = None  # the least an explicit cache holds (None: not known)

    @property
    def storage_rate(self) -> float:
        """Cache storage, USD per 1M tokens per hour; the dearest known when not given."""
        return DEFAULT_CACHE_STORAGE if self.cache_storage is None else self.cache_storage

    @property
    def min_cache_tokens(self) -> int:
        return DEFAULT_CACHE_MIN_TOKENS if self.cache_min_tokens is None else self.cache_min_tokens

    @property
    def input(self) -> float:
        return self.standard.input

    @property
    def output(self) -> float:
        return self.standard.output

    @property
    def cached(self) -> float:
        return self.standard.cached

    @property
    def long_context(self) -> LongContext | None:
        return self.standard.long_context

    def rates(self, tier: str = "standard") -> Rates:
        """The rates of ``tier``: standard, flex or batch."""
        if tier == "standard":
            return self.standard
        if tier == "flex":
            return self.flex
        if tier == "batch":
            return self.batch
        raise JobError(f"unknown service tier {tier!r} (one of {', '.join(TIERS)})")

    def covers(self, day: date) -> bool:
        """Whether ``day`` falls in this period."""
        return (self.start is None or self.start <= day) and (self.end is None or day <= self.end)

    def cost(
        self,
        *,
        prompt: int,
        output: int,
        thinking: int,
        cached: int,
        tier: str = "standard",
        audio: int = 0,
        cached_audio: int = 0,
    ) -> float:
        """The USD cost of one call with these token counts (the runner's hot path: no numpy).
        ``audio`` and ``cached_audio`` are the audio parts of ``prompt`` and ``cached``."""
        rates = self.rates(tier)
        rate_in, rate_out, rate_cached = rates.input, rates.output, rates.cached
        long = rates.long_context
        if long is not None and prompt > long.threshold:
            rate_in, rate_out, rate_cached = long.input, long.output, long.cached
        uncached = max(prompt - cached, 0)
        heard = min(max(audio - cached_audio, 0), uncached)
        return (
            (uncached - heard) * rate_in
            + heard * rates.audio_rate
            + cached * rate_cached
            + (output + thinking) * rate_out
        ) / PER

    def costs(
        self,
        prompt: Counts,
        output: Counts,
        thinking: Counts,
        cached: Counts,
        *,
        tier: str = "standard",
        audio: Counts | None = None,
        cached_audio: Counts | None = None,
    ) -> npt.NDArray[np.float64]:
        """The USD cost of each call, for arrays of per-call token counts (``audio`` and
        ``cached_audio``: the audio parts of ``prompt`` and ``cached``; none by default)."""
        rates = self.rates(tier)
        rate_in = np.full(prompt.shape, rates.input)
        rate_out = np.full(prompt.shape, rates.output)
        rate_cached = np.full(prompt.shape, rates.cached)
        long = rates.long_context
        if long is not None:  # the whole prompt's tier applies once it passes the threshold
            over = prompt > long.threshold
            rate_in[over], rate_out[over], rate_cached[over] = long.input, long.output, long.cached
        uncached = np.maximum(prompt - cached, 0)
        heard = np.zeros(prompt.shape, np.int64) if audio is None else audio
        if cached_audio is not None:
            heard = heard - cached_audio
        heard = np.minimum(np.maximum(heard, 0), uncached)
        usd: npt.NDArray[np.float64] = (
            (uncached - heard) * rate_in
            + heard * rates.audio_rate
            + cached * rate_cached
            + (output + thinking) * rate_out
        ) / PER
        return usd


@dataclass(frozen=True)
class Lifecycle:
    """Where a model stands: ``status`` as the table was checked, and its dates.

    ``retires`` is the first day the id no longer answers as itself (shut down, or routed to
    ``routed_to`` and billed at that model's rate).
    """

    status: str
    released: date | None = None
    retires: date | None = None
    routed_to: str | None = None

    def status_on(self, day: date) -> str:
        """The status on ``day``: retired from the retirement date on, deprecated before it."""
        if self.retires is not None and day >= self.retires:
            return "retired"
        return "deprecated" if self.status == "retired" else self.status


@dataclass(frozen=True)
class PricedModel:
    """A model of the table: its price periods in date order, and its lifecycle if known."""

    name: str
    periods: tuple[ModelPrice, ...]
    lifecycle: Lifecycle | None = None

    def period(self, day: date) -> ModelPrice | None:
        """The period covering ``day``, or None (before the first or in a gap)."""
        return next((p for p in self.periods if p.covers(day)), None)


@dataclass(frozen=True)
class PriceTable:
    """Dated prices and lifecycles per model, from the packaged table and an optional override."""

    models: Mapping[str, PricedModel]
    source: str = ""
    source_date: date | None = None
    files: tuple[Path, ...] = field(default=())
    # resolve()'s answers by (names, day): the runner prices every call with the same pair
    _resolved: dict[tuple[tuple[str | None, ...], date], ModelPrice | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def key(self, name: str | None) -> str | None:
        """The table's name for ``name``: itself, or the model it extends by version parts."""
        if not name:
            return None
        name = name.removeprefix("models/")
        if name in self.models:
            return name
        return max(
            (m for m in self.models if name.startswith(m) and _VERSION_PART.match(name[len(m) :])),
            key=len,
            default=None,
        )

    def entry(self, name: str | None) -> PricedModel | None:
        """The table's entry for ``name`` (see :meth:`key`), or None."""
        key = self.key(name)
        return self.models[key] if key is not None else None

    def billed_as(self, name: str | None, day: date) -> str | None:
        """The model whose rate a call to ``name`` on ``day`` is billed at: the routed-to model
        once ``name`` is retired and routed, else its own entry (None: not in the table)."""
        key, seen = self.key(name), set()
        while key is not None and key not in seen:
            seen.add(key)
            life = self.models[key].lifecycle
            if life is None or life.routed_to is None or life.status_on(day) != "retired":
                return key
            key = self.key(life.routed_to)
        return key

    def price(self, model: str, at: date | None = None) -> ModelPrice | None:
        """The price of ``model`` (``models/`` prefix optional) on day ``at`` (default: today
        in UTC), or None when unknown."""
        return self.resolve(model, at=at)

    def resolve(self, *names: str | None, at: date | None = None) -> ModelPrice | None:
        """The period on day ``at`` of the first of ``names`` in the table, an exact name first.

        The ledger's ``model_version`` names what answered, ``model`` what was asked for (an
        alias such as ``gemini-flash-latest``, or a retired model routed elsewhere): pass both,
        the one that answered first, so that a call is priced as the model that served it.
        """
        day = at or utc_today()
        key = (names, day)
        if key not in self._resolved:
            billed = self.billed_as(self.chosen(*names), day)
            self._resolved[key] = self.models[billed].period(day) if billed is not None else None
        return self._resolved[key]

    def chosen(self, *names: str | None) -> str | None:
        """The table's name for the first of ``names`` it knows, exactly or by version parts."""
        return next((k for k in map(self.key, names) if k is not None), None)

    def cost(
        self,
        model: str,
        *,
        prompt: int,
        output: int,
        thinking: int,
        cached: int,
        tier: str = "standard",
        at: date | None = None,
        audio: int = 0,
        cached_audio: int = 0,
    ) -> float | None:
        """The USD cost of one call on day ``at`` (default: today in UTC) served by ``tier``,
        or None when the model has no price that day (never a silent 0). ``audio`` and
        ``cached_audio`` are the audio parts of ``prompt`` and ``cached``."""
        price = self.resolve(model, at=at)
        if price is None:
            return None
        return price.cost(
            prompt=prompt, output=output, thinking=thinking, cached=cached, tier=tier,
            audio=audio, cached_audio=cached_audio,
        )  # fmt: skip

    def lifecycle(self, model: str) -> Lifecycle | None:
        """What the table knows of ``model``'s lifecycle, or None."""
        entry = self.entry(model)
        return entry.lifecycle if entry is not None else None

    def describe(self) -> str:
        """One line naming where the prices come from."""
        when = f" (table checked {self.source_date.isoformat()})" if self.source_date else ""
        return f"USD per 1M tokens at each call's UTC day{when}: " + " ".join(self.source.split())


def same_model(asked: str | None, answered: str | None) -> bool:
    """Whether ``answered`` (a modelVersion) is ``asked`` or a dated version of it."""
    if not asked or not answered:
        return True  # nothing to compare: say nothing
    asked, answered = asked.removeprefix("models/"), answered.removeprefix("models/")
    return answered.startswith(asked) and bool(
        answered == asked or _VERSION_PART.match(answered[len(asked) :])
    )


def lifecycle_warning(model: str, today: date, prices: PriceTable) -> str | None:
    """A one-line warning when ``model`` is retired on ``today`` or retires within 30 days.

    The CLI prints it as ``warning: ...`` in validate, run and estimate; None when all is well
    (or the table knows nothing of the model's lifecycle).
    """
    life = prices.lifecycle(model)
    if life is None or life.retires is None:
        return None
    days = (life.retires - today).days
    if days > WARN_DAYS:
        return None
    when = life.retires.isoformat()
    if days <= 0:
        head, tense = f"model {model} retired on {when}", "are"
    else:
        head, tense = f"model {model} retires on {when} (in {days} days)", "are then"
    if life.routed_to:
        then = f"calls {tense} routed to {life.routed_to} and billed at its rate"
    else:
        then = f"calls {tense} refused (the id is shut down)"
    return f"{head}; {then}; set model.name to a current model (batchgen prices lists them)"
