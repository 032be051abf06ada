"""Prices as data, and the cost arithmetic of the usage ledger.

The price table ships as ``batchgen/prices.toml`` (USD per 1M tokens per model, with its source
and date); ``--prices FILE`` in the same format overrides or adds models. A call costs::

    (prompt - cached) × input  +  cached × cached_rate  +  (output + thinking) × output

per million tokens: cached tokens are part of ``promptTokenCount`` (gemini-api.md §3), and
thinking is billed as output. Once a prompt passes a model's long-context threshold (200k for
the Pro models) the whole call is billed at the higher rates; Batch Mode takes
``batch_discount`` off every rate. A model the table does not know has no cost (None), never 0.

Model names are matched as the API spells them, with or without ``models/``. A name the table
lacks falls back to the longest known name it extends by version parts only
(``gemini-2.5-flash-001``, ``gemini-2.5-flash-preview-09-2025`` → ``gemini-2.5-flash``): those
are snapshots of the same model, usually at its price. A suffix with any other word
(``-image``, ``-tts``, ``-lite``, ``-native-audio``, ``-thinking``) names a different model with
its own price, so it is not matched, and the model stays unpriced until an override names it.
The fallback can still be wrong for an early preview priced differently from its release (2.5
Flash's 04-17 preview was): give such a model its own entry.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from batchgen.errors import JobError

__all__ = ["LongContext", "ModelPrice", "PriceTable"]

PER = 1_000_000  # prices are per 1M tokens
BATCH_DISCOUNT = 0.5  # "50% of the standard cost" (batch-api page), when a file sets none
_VERSION_PART = re.compile(r"^(?:-(?:\d+|preview|exp))+$")
_TOP_KEYS = frozenset({"source", "source_date", "batch_discount", "models"})
_MODEL_KEYS = frozenset({"input", "output", "cached", "long_context", "batch_discount"})
_LONG_KEYS = frozenset({"threshold", "input", "output", "cached"})

Counts = npt.NDArray[np.int64]


@dataclass(frozen=True)
class LongContext:
    """Rates for a call whose prompt passes ``threshold`` tokens (USD per 1M tokens)."""

    threshold: int
    input: float
    output: float
    cached: float


@dataclass(frozen=True)
class ModelPrice:
    """One model's rates in USD per 1M tokens; ``name`` is the price table's key."""

    name: str
    input: float
    output: float
    cached: float
    long_context: LongContext | None = None
    batch_discount: float = BATCH_DISCOUNT

    def cost(
        self, *, prompt: int, output: int, thinking: int, cached: int, batch: bool = False
    ) -> float:
        """The USD cost of one call with these token counts (the runner's hot path: no numpy)."""
        rate_in, rate_out, rate_cached = self.input, self.output, self.cached
        long = self.long_context
        if long is not None and prompt > long.threshold:
            rate_in, rate_out, rate_cached = long.input, long.output, long.cached
        usd = (
            max(prompt - cached, 0) * rate_in
            + cached * rate_cached
            + (output + thinking) * rate_out
        ) / PER
        return usd * (1 - self.batch_discount) if batch else usd

    def costs(
        self,
        prompt: Counts,
        output: Counts,
        thinking: Counts,
        cached: Counts,
        *,
        batch: bool = False,
    ) -> npt.NDArray[np.float64]:
        """The USD cost of each call, for arrays of per-call token counts."""
        rate_in = np.full(prompt.shape, self.input)
        rate_out = np.full(prompt.shape, self.output)
        rate_cached = np.full(prompt.shape, self.cached)
        long = self.long_context
        if long is not None:  # the whole prompt's tier applies once it passes the threshold
            over = prompt > long.threshold
            rate_in[over], rate_out[over], rate_cached[over] = long.input, long.output, long.cached
        uncached = np.maximum(prompt - cached, 0)
        usd: npt.NDArray[np.float64] = (
            uncached * rate_in + cached * rate_cached + (output + thinking) * rate_out
        ) / PER
        return usd * (1 - self.batch_discount) if batch else usd


@dataclass(frozen=True)
class PriceTable:
    """Prices per model, from the packaged table and an optional override file."""

    models: Mapping[str, ModelPrice]
    source: str = ""
    source_date: date | None = None
    files: tuple[Path, ...] = field(default=())

    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        """The packaged price table, with the models in ``override`` replacing or added.

        Raises:
            JobError: a price file that does not read, naming the file and the key.
        """
        packaged = resources.files("batchgen").joinpath("prices.toml")
        table = _parse(packaged.read_text(encoding="utf-8"), Path(str(packaged)), None)
        if override is None:
            return table
        try:
            text = override.read_text(encoding="utf-8")
        except OSError as exc:
            raise JobError(f"{override}: cannot read the price file: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise JobError(f"{override}: the price file is not UTF-8 text") from None
        extra = _parse(text, override, table)
        return replace(
            table,
            models={**table.models, **extra.models},
            source=f"{table.source}; {override}: {extra.source or 'overrides'}",
            source_date=extra.source_date or table.source_date,
            files=(*table.files, override),
        )

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model`` (``models/`` prefix optional), or None when unknown.

        A name the table lacks falls back to the longest known name it extends by version
        parts only (see the module docstring).
        """
        return self.resolve(model)

    def resolve(self, *names: str | None) -> ModelPrice | None:
        """The first of ``names`` that is priced exactly, else the first priced by its version.

        The ledger's ``model_version`` names what answered, ``model`` what was asked for (an
        alias such as ``gemini-flash-latest``): pass both, the more exact first.
        """
        keys = [n.removeprefix("models/") for n in names if n]
        for key in keys:
            if key in self.models:
                return self.models[key]
        for key in keys:
            base = max(
                (
                    m
                    for m in self.models
                    if key.startswith(m) and _VERSION_PART.match(key[len(m) :])
                ),
                key=len,
                default=None,
            )
            if base is not None:
                return self.models[base]
        return None

    def cost(
        self,
        model: str,
        *,
        prompt: int,
        output: int,
        thinking: int,
        cached: int,
        batch: bool = False,
    ) -> float | None:
        """The USD cost of one call, or None when the model has no price (never a silent 0)."""
        price = self.price(model)
        if price is None:
            return None
        return price.cost(
            prompt=prompt, output=output, thinking=thinking, cached=cached, batch=batch
        )

    def describe(self) -> str:
        """One line naming where the prices come from."""
        when = f" of {self.source_date.isoformat()}" if self.source_date else ""
        return f"USD per 1M tokens{when}: {' '.join(self.source.split())}"


def _parse(text: str, path: Path, base: PriceTable | None) -> PriceTable:
    """Read one price file; ``base`` is the table it overrides (None for the packaged one)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"{path}: invalid TOML: {exc}") from None
    _check_keys(raw, _TOP_KEYS, path, "")
    source = raw.get("source", "")
    if not isinstance(source, str):
        raise JobError(f"{path}: source must be a string")
    when = raw.get("source_date")
    if when is not None and type(when) is not date:
        raise JobError(f"{path}: source_date must be a date such as 2026-07-24, not {when!r}")
    default_discount = _fraction(
        raw.get("batch_discount", BATCH_DISCOUNT if base is None else None), path, "batch_discount"
    )
    models = raw.get("models", {})
    if not isinstance(models, dict) or (base is None and not models):
        raise JobError(f'{path}: models must be tables such as [models."gemini-2.5-flash"]')
    parsed = {}
    for name, entry in models.items():
        key = name.removeprefix("models/")
        known = base.models.get(key) if base is not None else None
        inherited = known.batch_discount if known is not None else BATCH_DISCOUNT
        discount = inherited if default_discount is None else default_discount
        parsed[key] = _model(key, entry, path, discount)
    return PriceTable(parsed, source, when, (path,))


def _model(name: str, entry: Any, path: Path, discount: float) -> ModelPrice:
    where = f'models."{name}"'
    if not isinstance(entry, dict):
        raise JobError(f"{path}: {where} must be a table with input and output prices")
    _check_keys(entry, _MODEL_KEYS, path, where)
    input_rate = _rate(entry, "input", path, where)
    own = _fraction(entry.get("batch_discount"), path, f"{where}.batch_discount")
    return ModelPrice(
        name=name,
        input=input_rate,
        output=_rate(entry, "output", path, where),
        cached=_rate(entry, "cached", path, where, input_rate),
        long_context=_long_context(entry.get("long_context"), path, f"{where}.long_context"),
        batch_discount=discount if own is None else own,
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


def _fraction(value: Any, path: Path, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise JobError(f"{path}: {key} must be a fraction from 0 to 1 (0.5 = half price)")
    return float(value)
