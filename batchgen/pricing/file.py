"""Reading a price file (``batchgen/pricing/prices.toml``, or ``--prices FILE``) into a PriceTable.

The format is described at the top of ``batchgen/pricing/prices.toml``. Two shapes of a model entry:
dated ``[[models."NAME".periods]]``, or the older single-rate form (``input``/``output``/
``cached``/``long_context``/``batch_discount`` on the model itself), read as one open period so
that price files written before the periods existed still load. Each table is declared once
below (msgspec: keys, types, ranges); the rules across keys are the small checks after it.
Every error names the file and the key, on one line.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from batchgen.errors import JobError
from batchgen.job.decode import convert
from batchgen.pricing.table import (
    STATUSES,
    TIERS,
    Lifecycle,
    LongContext,
    ModelPrice,
    PricedModel,
    PriceTable,
    Rates,
    Status,
    Tier,
)

__all__ = ["load_prices", "parse_price_file"]

TIER_FACTOR = 0.5  # Flex and Batch: "50% of the standard cost" (flex-inference, batch-api pages)

Price = Annotated[float, Meta(ge=0, extra={"wanted": "a price >= 0 (USD per 1M)"})]
Factor = Annotated[
    float, Meta(ge=0, extra={"wanted": "a factor of the standard price (0.5 = half price)"})
]
Fraction = Annotated[
    float, Meta(ge=0, le=1, extra={"wanted": "a fraction from 0 to 1 (0.5 = half price)"})
]
Tokens = Annotated[int, Meta(gt=0, extra={"wanted": "a whole number of tokens > 0"})]


class _Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A table of a price file: its keys, types and ranges, each stated once here."""


class LongContextEntry(_Entry, frozen=True):
    """The prices above ``threshold`` prompt tokens; ``cached`` defaults to ``input``."""

    threshold: Tokens
    input: Price | None = None
    output: Price | None = None
    cached: Price | None = None


class RatesEntry(_Entry, frozen=True):
    """Prices in USD per 1M tokens; ``input`` and ``output`` are needed, ``cached`` defaults to
    ``input``, ``audio`` (audio prompt tokens) to ``input``."""

    input: Price | None = None
    output: Price | None = None
    cached: Price | None = None
    audio: Price | None = None
    long_context: (
        Annotated[
            LongContextEntry, Meta(extra={"wanted": "a table with threshold, input and output"})
        ]
        | None
    ) = None


TierPrices = Annotated[RatesEntry, Meta(extra={"wanted": "a table of prices"})]


class TieredEntry(RatesEntry, frozen=True):
    """Rates with the cheaper tiers: a factor of standard or their own prices; the older
    ``batch_discount`` is 1 minus the batch factor."""

    batch_discount: Fraction | None = None
    flex: Factor | TierPrices | None = None
    batch: Factor | TierPrices | None = None
    cache_storage: Price | None = None  # USD per 1M tokens per hour of an explicit cache
    cache_min_tokens: Tokens | None = None  # the least tokens an explicit cache may hold


class PeriodEntry(TieredEntry, frozen=True):
    """One [[models."NAME".periods]] table: the rates from ``from`` until ``to``."""

    start: date | None = msgspec.field(default=None, name="from")
    to: date | None = None
    source: str | None = None
    source_date: date | None = None


class ModelEntry(TieredEntry, frozen=True):
    """One [models."NAME"] table: dated periods, or the rates on the model itself (one open
    period), and where the model stands."""

    status: Status | None = None
    released: date | None = None
    retires: date | None = None
    routed_to: str | None = None
    periods: (
        Annotated[
            list[PeriodEntry], Meta(extra={"wanted": "tables such as [[models.NAME.periods]]"})
        ]
        | None
    ) = None


class PriceFile(_Entry, frozen=True):
    """The top of a price file: where its prices come from, the tiers' default factors, and
    the models (each read as a :class:`ModelEntry`)."""

    source: str = ""
    source_date: date | None = None
    batch_discount: Fraction | None = None
    flex: Factor | None = None
    batch: Factor | None = None
    models: Annotated[
        dict[str, Any], Meta(extra={"wanted": 'tables such as [models."gemini-3.8-flash"]'})
    ] = msgspec.field(default_factory=dict)


class _File:
    """One price file being read: its path, and the defaults its top level sets."""

    def __init__(self, path: Path, top: PriceFile) -> None:
        self.path = path
        self.source = top.source
        self.source_date = top.source_date
        self.tiers = {t: _factor(top, t, TIER_FACTOR) for t in TIERS[1:]}

    def fail(self, message: str) -> JobError:
        return JobError(f"{self.path}: {message}")


def parse_price_file(text: str, path: Path, *, overriding: bool = False) -> PriceTable:
    """The table in one price file; ``overriding`` allows a file without models.

    Raises:
        JobError: naming the file and the key.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"{path}: invalid TOML: {exc}") from None
    top = convert(raw, PriceFile, str(path))
    file = _File(path, top)
    if not overriding and not top.models:
        raise file.fail('models must be tables such as [models."gemini-3.8-flash"]')
    parsed = {}
    for name, entry in top.models.items():
        key = name.removeprefix("models/")
        parsed[key] = _model(key, entry, file)
    return PriceTable(parsed, file.source, file.source_date, (path,))


def _model(name: str, raw: Any, file: _File) -> PricedModel:
    where = f'models."{name}"'
    if not isinstance(raw, dict):
        raise file.fail(f"{where} must be a table with input and output prices, or periods")
    entry = convert(raw, ModelEntry, str(file.path), label=where)
    life = _lifecycle(entry, file, where)
    rate_keys = [k for k in raw if k not in ("periods", *_LIFE_KEYS)]
    if entry.periods is not None:
        if rate_keys:
            raise file.fail(f"{where}: give prices in periods or on the model, not both")
        if not entry.periods:
            raise file.fail(f"{where}.periods must be tables such as [[{where}.periods]]")
        dated = [
            _period(name, p, file, f"{where}.periods[{i}]") for i, p in enumerate(entry.periods)
        ]
        return PricedModel(name, _ordered(dated, file, where), life)
    if not rate_keys and life is not None:
        return PricedModel(name, (), life)  # a lifecycle alone: known, but not priced
    return PricedModel(name, (_period(name, entry, file, where),), life)


def _period(name: str, entry: TieredEntry, file: _File, where: str) -> ModelPrice:
    """One period: a [[periods]] table, or a single-rate model entry."""
    standard = _rates(entry, file, where)
    dated = entry if isinstance(entry, PeriodEntry) else PeriodEntry()
    if dated.start is not None and dated.to is not None and dated.to < dated.start:
        raise file.fail(f"{where}: to ({dated.to}) is before from ({dated.start})")
    source = file.source if dated.source is None else dated.source
    flex, batch = (_tier(entry, t, standard, file, where) for t in TIERS[1:])
    when = dated.source_date or file.source_date
    return ModelPrice(
        name, standard, flex, batch, dated.start, dated.to, source, when,
        entry.cache_storage, entry.cache_min_tokens,
    )  # fmt: skip


def _ordered(periods: list[ModelPrice], file: _File, where: str) -> tuple[ModelPrice, ...]:
    """The periods by start date; overlapping periods are an error (which would apply?)."""
    ordered = sorted(periods, key=lambda p: p.start or date.min)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if before.end is None or after.start is None or after.start <= before.end:
            raise file.fail(
                f"{where}.periods: the period from {after.start or 'the start'} overlaps the one "
                f"from {before.start or 'the start'}; give the earlier one a 'to' date"
            )
    return tuple(ordered)


def _rates(entry: RatesEntry, file: _File, where: str) -> Rates:
    input_rate = _needed(entry.input, "input", file, where)
    cached = input_rate if entry.cached is None else entry.cached
    return Rates(
        input_rate,
        _needed(entry.output, "output", file, where),
        cached,
        _long_context(entry.long_context, file, f"{where}.long_context"),
        entry.audio,
    )


def _long_context(entry: LongContextEntry | None, file: _File, where: str) -> LongContext | None:
    if entry is None:
        return None
    input_rate = _needed(entry.input, "input", file, where)
    output_rate = _needed(entry.output, "output", file, where)
    cached = input_rate if entry.cached is None else entry.cached
    return LongContext(entry.threshold, input_rate, output_rate, cached)


def _needed(rate: float | None, key: str, file: _File, where: str) -> float:
    if rate is None:
        raise file.fail(f"{where} needs {key!r} (USD per 1M tokens)")
    return rate


def _tier(entry: TieredEntry, tier: Tier, standard: Rates, file: _File, where: str) -> Rates:
    """A cheaper tier: its own prices (a table), or a factor of standard."""
    value = getattr(entry, tier)
    if isinstance(value, RatesEntry):
        rates = _rates(value, file, f"{where}.{tier}")
        if standard.long_context is not None and rates.long_context is None:
            raise file.fail(
                f"{where}.{tier}: the model has a long_context tier, so give {tier}.long_context "
                f"too, or give {tier} as a factor such as 0.5"
            )
        return rates
    rates = standard.scaled(_factor(entry, tier, file.tiers[tier]))
    if tier == "batch":  # cache hits in a batch are billed at standard caching rates
        rates = _standard_cache(rates, standard)
    return rates


def _standard_cache(rates: Rates, standard: Rates) -> Rates:
    """``rates`` with the standard tier's cached rates: the Batch API page (checked
    2026-12-04, https://ai.google.dev/gemini-api/docs/batch-api) bills context-cache hits in
    Batch Mode "at standard caching rates", so the batch factor does not halve them."""
    long, std = rates.long_context, standard.long_context
    if long is not None and std is not None:
        long = replace(long, cached=std.cached)
    return replace(rates, cached=standard.cached, long_context=long)


def _factor(entry: TieredEntry | PriceFile, tier: str, default: float) -> float:
    """A tier's factor of standard; ``batch_discount`` (older files) is 1 minus the batch one."""
    value = getattr(entry, tier)
    if tier == "batch" and value is None and entry.batch_discount is not None:
        return 1 - entry.batch_discount
    return default if value is None else float(value)


def _lifecycle(entry: ModelEntry, file: _File, where: str) -> Lifecycle | None:
    if all(getattr(entry, k) is None for k in _LIFE_KEYS):
        return None
    if entry.status is None:
        raise file.fail(f"{where}.status must be one of {', '.join(STATUSES)}, not None")
    if entry.status == "retired" and entry.retires is None:
        raise file.fail(f"{where}: a retired model needs its date: retires = YYYY-MM-DD")
    routed = None if entry.routed_to is None else entry.routed_to.removeprefix("models/")
    return Lifecycle(entry.status, entry.released, entry.retires, routed)


_LIFE_KEYS = ("status", "released", "retires", "routed_to")


def load_prices(override: Path | None = None) -> PriceTable:
    """The packaged price table, with the models in ``override`` replacing or added.

    A model the override names replaces the packaged periods; it keeps the packaged
    lifecycle unless the override gives one.

    Raises:
        JobError: a price file that does not read, naming the file and the key.
    """
    packaged = resources.files("batchgen.pricing").joinpath("prices.toml")
    table = parse_price_file(packaged.read_text(encoding="utf-8"), Path(str(packaged)))
    if override is None:
        return table
    try:
        text = override.read_text(encoding="utf-8")
    except OSError as exc:
        raise JobError(f"{override}: cannot read the price file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise JobError(f"{override}: the price file is not UTF-8 text") from None
    extra = parse_price_file(text, override, overriding=True)
    merged = dict(table.models)
    for key, entry in extra.models.items():
        known = merged.get(key)
        if entry.lifecycle is None and known is not None:
            entry = replace(entry, lifecycle=known.lifecycle)
        merged[key] = entry
    return replace(
        table,
        models=merged,
        source=f"{table.source}; {override}: {extra.source or 'overrides'}",
        source_date=extra.source_date or table.source_date,
        files=(*table.files, override),
    )
