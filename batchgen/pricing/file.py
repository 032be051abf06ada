"""Reading a price file (``batchgen/pricing/prices.toml``, or ``--prices FILE``) into a PriceTable.

The format is described at the top of ``batchgen/pricing/prices.toml``. Two shapes of a model entry:
dated ``[[models."NAME".periods]]``, or the older single-rate form (``input``/``output``/
``cached``/``long_context``/``batch_discount`` on the model itself), read as one open period so
that price files written before the periods existed still load. Every error names the file and
the key, on one line.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from batchgen.errors import JobError
from batchgen.pricing.table import (
    STATUSES,
    TIERS,
    Lifecycle,
    LongContext,
    ModelPrice,
    PricedModel,
    PriceTable,
    Rates,
    Tier,
)

__all__ = ["parse_price_file"]

TIER_FACTOR = 0.5  # Flex and Batch: "50% of the standard cost" (flex-inference, batch-api pages)
_TOP_KEYS = frozenset({"source", "source_date", "batch_discount", "flex", "batch", "models"})
_RATE_KEYS = frozenset({"input", "output", "cached", "long_context", "batch_discount", *TIERS[1:]})
_PERIOD_KEYS = _RATE_KEYS | {"from", "to", "source", "source_date"}
_LIFE_KEYS = frozenset({"status", "released", "retires", "routed_to"})
_MODEL_KEYS = _RATE_KEYS | _LIFE_KEYS | {"periods"}
_LONG_KEYS = frozenset({"threshold", "input", "output", "cached"})
_TIER_KEYS = frozenset({"input", "output", "cached", "long_context"})


class _File:
    """One price file being read: its path, and the defaults its top level sets."""

    def __init__(self, path: Path, raw: Mapping[str, Any]) -> None:
        self.path = path
        self.source = _string(raw.get("source", ""), path, "source")
        self.source_date = _date(raw.get("source_date"), path, "source_date")
        self.tiers = {t: _tier_factor(raw, t, path, "", TIER_FACTOR) for t in TIERS[1:]}

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
    _check_keys(raw, _TOP_KEYS, path, "")
    file = _File(path, raw)
    models = raw.get("models", {})
    if not isinstance(models, dict) or (not overriding and not models):
        raise file.fail('models must be tables such as [models."gemini-3.8-flash"]')
    parsed = {}
    for name, entry in models.items():
        key = name.removeprefix("models/")
        parsed[key] = _model(key, entry, file)
    return PriceTable(parsed, file.source, file.source_date, (path,))


def _model(name: str, entry: Any, file: _File) -> PricedModel:
    where = f'models."{name}"'
    if not isinstance(entry, dict):
        raise file.fail(f"{where} must be a table with input and output prices, or periods")
    _check_keys(entry, _MODEL_KEYS, file.path, where)
    life = _lifecycle(entry, file, where)
    rate_keys = [k for k in entry if k in _RATE_KEYS]
    if "periods" in entry:
        if rate_keys:
            raise file.fail(f"{where}: give prices in periods or on the model, not both")
        periods = entry["periods"]
        if not isinstance(periods, list) or not periods:
            raise file.fail(f"{where}.periods must be tables such as [[{where}.periods]]")
        dated = [_period(name, p, file, f"{where}.periods[{i}]") for i, p in enumerate(periods)]
        return PricedModel(name, _ordered(dated, file, where), life)
    if not rate_keys and life is not None:
        return PricedModel(name, (), life)  # a lifecycle alone: known, but not priced
    return PricedModel(name, (_period(name, entry, file, where, single=True),), life)


def _period(name: str, table: Any, file: _File, where: str, *, single: bool = False) -> ModelPrice:
    """One period: a [[periods]] table, or a single-rate model entry (``single``)."""
    if not isinstance(table, dict):
        raise file.fail(f"{where} must be a table with input and output prices")
    if not single:
        _check_keys(table, _PERIOD_KEYS, file.path, where)
    standard = _rates(table, file, where)
    start = _date(table.get("from"), file.path, f"{where}.from")
    end = _date(table.get("to"), file.path, f"{where}.to")
    if start is not None and end is not None and end < start:
        raise file.fail(f"{where}: to ({end}) is before from ({start})")
    source = _string(table.get("source", file.source), file.path, f"{where}.source")
    when = _date(table.get("source_date"), file.path, f"{where}.source_date")
    flex, batch = (_tier(table, t, standard, file, where) for t in TIERS[1:])
    return ModelPrice(name, standard, flex, batch, start, end, source, when or file.source_date)


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


def _rates(table: Mapping[str, Any], file: _File, where: str) -> Rates:
    input_rate = _rate(table, "input", file.path, where)
    return Rates(
        input_rate,
        _rate(table, "output", file.path, where),
        _rate(table, "cached", file.path, where, input_rate),
        _long_context(table.get("long_context"), file.path, f"{where}.long_context"),
    )


def _tier(table: Mapping[str, Any], tier: Tier, standard: Rates, file: _File, where: str) -> Rates:
    """A cheaper tier: its own prices (a table), or a factor of standard."""
    value = table.get(tier)
    if isinstance(value, dict):
        _check_keys(value, _TIER_KEYS, file.path, f"{where}.{tier}")
        rates = _rates(value, file, f"{where}.{tier}")
        if standard.long_context is not None and rates.long_context is None:
            raise file.fail(
                f"{where}.{tier}: the model has a long_context tier, so give {tier}.long_context "
                f"too, or give {tier} as a factor such as 0.5"
            )
        return rates
    return standard.scaled(_tier_factor(table, tier, file.path, where, file.tiers[tier]))


def _tier_factor(
    table: Mapping[str, Any], tier: str, path: Path, where: str, default: float
) -> float:
    """A tier's factor of standard; ``batch_discount`` (older files) is 1 minus the batch one."""
    label = f"{where}.{tier}" if where else tier
    value = table.get(tier)
    if tier == "batch" and value is None and "batch_discount" in table:
        off = table["batch_discount"]
        label = f"{where}.batch_discount" if where else "batch_discount"
        if isinstance(off, bool) or not isinstance(off, int | float) or not 0 <= off <= 1:
            raise JobError(f"{path}: {label} must be a fraction from 0 to 1 (0.5 = half price)")
        return 1 - float(off)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise JobError(
            f"{path}: {label} must be a factor of the standard price (0.5 = half price) or a "
            "table of prices"
        )
    return float(value)


def _lifecycle(entry: Mapping[str, Any], file: _File, where: str) -> Lifecycle | None:
    if not any(k in entry for k in _LIFE_KEYS):
        return None
    status = entry.get("status")
    if status not in STATUSES:
        raise file.fail(f"{where}.status must be one of {', '.join(STATUSES)}, not {status!r}")
    retires = _date(entry.get("retires"), file.path, f"{where}.retires")
    if status == "retired" and retires is None:
        raise file.fail(f"{where}: a retired model needs its date: retires = YYYY-MM-DD")
    routed = entry.get("routed_to")
    if routed is not None:
        routed = _string(routed, file.path, f"{where}.routed_to").removeprefix("models/")
    return Lifecycle(
        status=status,
        released=_date(entry.get("released"), file.path, f"{where}.released"),
        retires=retires,
        routed_to=routed,
    )


def _long_context(table: Any, path: Path, where: str) -> LongContext | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise JobError(f"{path}: {where} must be a table with threshold, input and output")
    _check_keys(table, _LONG_KEYS, path, where)
    threshold = table.get("threshold")
    if type(threshold) is not int or threshold <= 0:
        raise JobError(f"{path}: {where}.threshold must be a whole number of tokens > 0")
    input_rate = _rate(table, "input", path, where)
    output_rate = _rate(table, "output", path, where)
    cached_rate = _rate(table, "cached", path, where, input_rate)
    return LongContext(threshold, input_rate, output_rate, cached_rate)


def _check_keys(table: Mapping[str, Any], allowed: frozenset[str], path: Path, where: str) -> None:
    for key in table:
        if key not in allowed:
            label = f"{where}.{key}" if where else key
            raise JobError(f"{path}: unknown key {label!r} (allowed: {', '.join(sorted(allowed))})")


def _rate(
    table: Mapping[str, Any], key: str, path: Path, where: str, default: float | None = None
) -> float:
    value = table.get(key, default)
    if value is None:
        raise JobError(f"{path}: {where} needs {key!r} (USD per 1M tokens)")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise JobError(f"{path}: {where}.{key} must be a price >= 0 (USD per 1M), not {value!r}")
    return float(value)


def _date(value: Any, path: Path, key: str) -> date | None:
    if value is None:
        return None
    if type(value) is not date:
        raise JobError(f"{path}: {key} must be a date such as 2026-12-01, not {value!r}")
    return value


def _string(value: Any, path: Path, key: str) -> str:
    if not isinstance(value, str):
        raise JobError(f"{path}: {key} must be a string")
    return value


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
