"""The price table as a listing (``batchgen prices``): one row per model and period."""

from __future__ import annotations

from datetime import date
from typing import Any

from batchgen.errors import JobError
from batchgen.pricing.table import ModelPrice, PricedModel, PriceTable, Rates, utc_today

__all__ = ["price_rows"]


def price_rows(
    table: PriceTable,
    model: str | None = None,
    at: date | None = None,
    today: date | None = None,
) -> list[dict[str, Any]]:
    """One row per model and price period, the current models first; with ``at``, only the
    period covering that day. The status is the one of ``at``, else of ``today`` (default:
    today in UTC).

    Raises:
        JobError: a ``model`` the table does not know.
    """
    day = at or today or utc_today()
    if model is not None:
        key = table.key(model)
        if key is None:
            raise JobError(
                f"--model {model}: not in the price table; `batchgen prices` lists the models, "
                "--prices FILE adds one"
            )
        entries = [table.models[key]]
    else:
        order = {"current": 0, "preview": 1, "deprecated": 2, "retired": 3}
        entries = sorted(table.models.values(), key=lambda e: order[_status(e, day)])
    rows = []
    for entry in entries:
        if at is None:
            rows += [_row(entry, p, day) for p in entry.periods] or [_row(entry, None, day)]
            continue
        billed = table.billed_as(entry.name, at) or entry.name  # a retired model's calls
        rows.append(_row(entry, table.models[billed].period(at), day) | {"billed_as": billed})
    return rows


def _status(entry: PricedModel, day: date) -> str:
    return entry.lifecycle.status_on(day) if entry.lifecycle else "current"


def _row(entry: PricedModel, period: ModelPrice | None, day: date) -> dict[str, Any]:
    life = entry.lifecycle
    row: dict[str, Any] = {
        "model": entry.name,
        "status": _status(entry, day),
        "released": _iso(life.released) if life else None,
        "retires": _iso(life.retires) if life else None,
        "routed_to": life.routed_to if life else None,
    }
    if period is None:
        return row | {"from": None, "to": None, "standard": None, "flex": None, "batch": None}
    return row | {
        "from": _iso(period.start),
        "to": _iso(period.end),
        **{tier: _rates(period.rates(tier)) for tier in ("standard", "flex", "batch")},
        "source": period.source,
        "source_date": _iso(period.source_date),
    }


def _rates(rates: Rates) -> dict[str, Any]:
    long = rates.long_context
    over = None
    if long is not None:
        over = {"threshold": long.threshold, "input": long.input, "output": long.output,
                "cached": long.cached}  # fmt: skip
    return {"input": rates.input, "output": rates.output, "cached": rates.cached,
            "audio": rates.audio_rate, "long_context": over}  # fmt: skip


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None
