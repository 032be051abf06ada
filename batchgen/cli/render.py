"""The words and tables of ``estimate``, ``report`` and ``prices``: the numbers come from
:mod:`batchgen.reports`, which returns values; this module renders them as text, Markdown,
CSV, JSON or a chart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from batchgen.errors import JobError
from batchgen.pricing.table import PriceTable
from batchgen.reports.estimate import Estimate
from batchgen.reports.repeats import Repeats
from batchgen.reports.report import RUN_COLUMNS, Report, group_keys

__all__ = [
    "REPORT_FORMATS",
    "format_estimate",
    "format_prices",
    "format_report",
    "plot_report",
    "usd_digits",
]

REPORT_FORMATS = ("table", "csv", "json", "markdown")


# --- estimate ------------------------------------------------------------------------------


def format_estimate(est: Estimate, fmt: str = "table") -> str:
    """The estimate as aligned text (``table``) or ``json``."""
    if fmt == "json":
        return json.dumps({**asdict(est), "minutes": est.minutes}, indent=2, ensure_ascii=False)
    if est.sampled >= est.rows:
        counted = f"all {est.rows:,} rows"
    else:
        counted = f"{est.sampled:,} of {est.rows:,} rows spread over the input, scaled"
    how = "countTokens (systemInstruction included)"
    if est.method == "offline":
        how = "offline, about 4 characters a token (rough)"
    lines = [
        f"estimate for {est.job} ({est.model}): {est.rows:,} input rows",
        f"  prompt   {est.prompt_tokens:,} tokens: {how} on {counted}",
        *(
            [f"           {modality_line(est.prompt_by_modality)}"]
            if est.prompt_by_modality
            else []
        ),
        f"  output   {_range(est.output_low, est.output_high)} tokens, thinking included: "
        f"{est.output_source}",
        *_cost_lines(est),
        *_cache_lines(est),
        f"  time     at least {_minutes(est.minutes)}: {_time_bounds(est)}",
    ]
    if est.calls_per_row > 1:
        lines.append(f"  retries  {est.calls_per_row:.2f} billed calls per row in the earlier run")
    lines += [f"  note: {n}" for n in est.notes]
    if est.repeats is not None and est.repeats.repeated:
        lines.append(f"  repeats  {repeats_line(est.repeats)}")
    return "\n".join(lines)


def repeats_line(r: Repeats) -> str:
    """How many rows repeat another's request, and what ``output.dedupe`` does about it."""
    counted = f"{r.rows:,}" if r.whole else f"the first {r.rows:,}"
    said = f"{r.repeated:,} of {counted} rows repeat another row's request"
    if r.dedupe:
        return f"{said}: output.dedupe is on, so {r.distinct:,} calls are paid (counted so)"
    return (
        f"{said}; set [output] dedupe = true to pay once per distinct request "
        f"({r.distinct:,} calls), or keep it off to get a fresh answer for each"
    )


def _range(low: float, high: float) -> str:
    return f"{low:,.0f}" if round(low) == round(high) else f"{low:,.0f} .. {high:,.0f}"


def _cost_lines(est: Estimate) -> list[str]:
    """One line per service tier, then where the prices come from."""
    if not est.tier_costs:
        return [f"  cost     unpriced (no price for {est.model})"]
    digits = usd_digits(*(high for _, high in est.tier_costs.values()))
    lines: list[str] = []
    for tier, (low, high) in est.tier_costs.items():
        lo, hi = f"{low:,.{digits}f}", f"{high:,.{digits}f}"
        label = "  cost     " if not lines else "           "
        mark = "  ← this job's tier" if tier == est.tier else ""
        lines.append(f"{label}{tier:<9} USD {lo if lo == hi else f'{lo} .. {hi}'}{mark}")
    lines.append(
        f"           priced as {est.priced_as} at its rates of {est.priced_on}; {est.prices}"
    )
    return lines


def _cache_lines(est: Estimate) -> list[str]:
    """The shared prefix with and without a context cache, and which the run will use."""
    c = est.cache
    if c is None:
        return [f"  cache    none: {est.cache_why}"] if est.cache_use == "no cache" else []
    digits = usd_digits(c.without, c.with_cache)
    if est.tier == "batch":  # the run probes the cache with a one-row batch before using it
        chosen = (
            "batch: cache, probed first"
            if est.cache_use == "cache"
            else f"batch: no cache, the batch discount is relied on ({est.cache_why})"
        )
    else:
        chosen = (
            "the run will use a cache"
            if est.cache_use == "cache"
            else f"the run goes uncached: {est.cache_why}"
        )
    rates = " at batch rates" if est.tier == "batch" else ""
    return [
        f"  cache    shared prefix {c.prefix_tokens:,} tokens × {c.calls:,} calls{rates}: "
        f"USD {c.without:,.{digits}f} uncached, USD {c.with_cache:,.{digits}f} with a cache "
        f"(creation {c.creation:,.{digits}f}, storage {c.hours:.2f} h {c.storage:,.{digits}f})",
        f"           {chosen}" + (" (the cost above counts it)" * (est.cache_use == "cache")),
    ]


def _minutes(minutes: float) -> str:
    if minutes < 1:
        return f"{minutes * 60:.0f} s" if minutes >= 1 / 60 else "under 1 s"
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _time_bounds(est: Estimate) -> str:
    parts = [f"{_minutes(est.minutes_requests)} at requests_per_minute {est.requests_per_minute:,}"]
    if est.minutes_tokens is not None and est.tokens_per_minute:
        tpm = est.tokens_per_minute
        parts.append(f"{_minutes(est.minutes_tokens)} at tokens_per_minute {tpm:,}")
    if est.minutes_latency is not None:
        how = "auto" if est.concurrency is None else "the job's concurrency"
        parts.append(
            f"{_minutes(est.minutes_latency)} at the earlier run's latency with "
            f"{est.in_flight:,} calls in flight ({how})"
        )
    if est.minutes_daily is not None and est.requests_per_day:
        days = round(est.minutes_daily / (24 * 60)) + 1
        parts.append(
            f"{days} Pacific days at requests_per_day {est.requests_per_day:,} "
            "(the run stops at each day's quota; rerun it the next day)"
        )
    return "; ".join(parts)


# --- report --------------------------------------------------------------------------------

_LABELS = {
    "requests": "requests",
    "rows_done": "rows done",
    "rows_failed": "rows failed",
    "rows_reused": "rows reused",
    "prompt_tokens": "prompt",
    "output_tokens": "output",
    "thinking_tokens": "thinking",
    "cached_tokens": "cached",
    "total_tokens": "total tokens",
    "cost_usd": "cost (USD)",
}


def format_report(rep: Report, fmt: str = "table") -> str:
    """The report as ``table`` (aligned text), ``markdown``, ``csv`` (groups) or ``json``."""
    if fmt == "csv":
        return str(rep.groups.to_csv(index=False, lineterminator="\n"))
    if fmt == "json":
        return json.dumps(_as_json(rep), indent=2, ensure_ascii=False)
    if fmt not in ("table", "markdown"):
        formats = ", ".join(REPORT_FORMATS)
        raise JobError(f"format={fmt!r} (--format): unknown format (one of {formats})")
    extra = [c for c in RUN_COLUMNS if c in rep.groups.columns]
    header = [rep.by, *_LABELS.values(), *extra]
    digits = usd_digits(*rep.groups["cost_usd"], rep.total["cost_usd"])
    lines = [
        _cells(r, rep.by, digits) + [str(r[c]) for c in extra]
        for r in rep.groups.to_dict("records")
    ]
    lines.append(["total", *_cells(rep.total, None, digits)[1:], *([""] * len(extra))])
    note = f"prices: {rep.prices.describe()}"
    if rep.modalities:
        note = modality_line(rep.modalities) + "\n" + note
    if rep.answered:
        note += "\n" + _answered_line(rep.answered)
    if fmt == "markdown":
        rule = ["---", *["---:"] * (len(header) - 1)]
        body = ["| " + " | ".join(row) + " |" for row in (header, rule, *lines)]
        return "\n".join([*body, "", note])
    widths = [max(len(row[i]) for row in (header, *lines)) for i in range(len(header))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *lines)
    ]
    return "\n".join([*text, note])


def modality_line(totals: Mapping[str, int]) -> str:
    """``prompt by modality: text 1,200 · image 5,160 · audio 9,600 (audio at its own rate)``."""
    shown = [f"{m} {n:,}" for m, n in totals.items() if n and m != "unsplit"]
    unsplit = totals.get("unsplit", 0)
    tail = f"; {unsplit:,} not split by the API (priced as text)" if unsplit else ""
    rate = " (audio at the model's audio input rate)" if totals.get("audio") else ""
    return f"prompt by modality: {' · '.join(shown) or 'none'}{rate}{tail}"


def _answered_line(answered: Sequence[tuple[str, str, int]]) -> str:
    pairs = ", ".join(f"{a} → {b} ({n:,} calls)" for a, b, n in answered)
    return f"answered by another model than asked: {pairs}"


def _cells(record: dict[str, Any], by: str | None, digits: int) -> list[str]:
    key = str(record[by]) if by else ""
    numbers = [f"{int(record[c]):,}" for c in _LABELS if c != "cost_usd"]
    return [key, *numbers, _usd_cell(record, digits)]


def _usd_cell(record: dict[str, Any], digits: int) -> str:
    unpriced = int(record["unpriced_requests"])
    if not unpriced:
        return f"{float(record['cost_usd']):,.{digits}f}"
    if unpriced == int(record["requests"]):
        return "unpriced"
    return f"unpriced ({unpriced} of {int(record['requests'])} calls)"


def usd_digits(*amounts: float | None) -> int:
    """Decimals that show the largest amount well: 6 below $1 (small test runs), 4, then 2."""
    top = max((abs(a) for a in amounts if a is not None and not math.isnan(a)), default=0.0)
    return 6 if top < 1 else 4 if top < 100 else 2


def _as_json(rep: Report) -> dict[str, Any]:
    groups = [
        {k: (None if isinstance(v, float) and math.isnan(v) else _plain(v)) for k, v in r.items()}
        for r in rep.groups.to_dict("records")
    ]
    when = rep.prices.source_date
    return {
        "by": rep.by,
        "groups": groups,
        "total": rep.total,
        "unpriced_models": list(rep.unpriced),
        "warnings": list(rep.warnings),
        "answered_by": [{"asked": a, "answered": b, "calls": n} for a, b, n in rep.answered],
        "prompt_by_modality": rep.modalities,
        "prices": {
            "source": rep.prices.source,
            "source_date": when.isoformat() if when else None,
            "unit": "USD per 1M tokens",
        },
    }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def plot_report(rep: Report, path: Path) -> Path:
    """Save a PNG of the cost per day and the tokens per run; needs matplotlib (extra ``plot``).

    Unpriced calls are left out of the cost bars, and the chart says so.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise JobError(
            "a plot (--plot) needs matplotlib: pip install 'batchgen[plot]' (or pip install "
            "matplotlib)"
        ) from None
    calls = rep.calls.assign(day=group_keys(rep.calls, "day"), run=group_keys(rep.calls, "run"))
    daily = calls.groupby("day")["cost_usd"].sum(min_count=0)
    per_run = calls.groupby("run")[["prompt_tokens", "output_tokens", "thinking_tokens"]].sum()
    fig = Figure(figsize=(10, 8), layout="constrained")
    cost_ax, tokens_ax = fig.subplots(2, 1)
    cost_ax.bar(daily.index.astype(str), daily.to_numpy(), color="tab:green")
    unpriced = f" (unpriced: {', '.join(rep.unpriced)}, left out)" if rep.unpriced else ""
    cost_ax.set_title(f"Cost per day, USD{unpriced}")
    cost_ax.set_ylabel("USD")
    bottom = np.zeros(len(per_run))
    for column in per_run.columns:
        values = per_run[column].to_numpy(float)
        label = column.removesuffix("_tokens")
        tokens_ax.bar(per_run.index.astype(str), values, bottom=bottom, label=label)
        bottom += values
    tokens_ax.set_title("Tokens per run")
    tokens_ax.legend()
    tokens_ax.tick_params(axis="x", labelrotation=30)
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise JobError(f"{path}: cannot write the plot: {exc.strerror}") from None
    return path


# --- prices --------------------------------------------------------------------------------

_HEADER = ("model", "status", "from", "to", "input", "output", "cached", "audio in", "flex in/out",
           "batch in/out", ">200k in/out")  # fmt: skip


def format_prices(rows: list[dict[str, Any]], table: PriceTable, fmt: str = "table") -> str:
    """The rows as ``json`` or an aligned ``table`` (USD per 1M tokens)."""
    if fmt == "json":
        unit = "USD per 1M tokens"
        return json.dumps({"unit": unit, "prices": rows}, indent=2, ensure_ascii=False)
    if fmt != "table":
        raise JobError(f"--format {fmt}: unknown format (one of table, json)")
    lines = [list(_HEADER), *(_price_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADER))]
    text = [
        "  ".join(
            c.ljust(w) if i < 4 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    return "\n".join([*(t.rstrip() for t in text), f"prices: {table.describe()}"])


def _price_cells(row: dict[str, Any]) -> list[str]:
    status = row["status"]
    if row["retires"]:
        status += f" {row['retires']}" if status == "retired" else f", retires {row['retires']}"
        status += f" → {row['routed_to']}" if row["routed_to"] else ""
    dates = [row["from"] or "", row["to"] or ""]
    standard = row["standard"]
    if standard is None:
        return [row["model"], status, *dates, "-", "-", "-", "-", "-", "-", ""]
    long = standard["long_context"]
    return [
        row["model"],
        status,
        *dates,
        _price(standard["input"]),
        _price(standard["output"]),
        _price(standard["cached"]),
        _price(standard["audio"]),
        f"{_price(row['flex']['input'])} / {_price(row['flex']['output'])}",
        f"{_price(row['batch']['input'])} / {_price(row['batch']['output'])}",
        f"{_price(long['input'])} / {_price(long['output'])}" if long else "",
    ]


def _price(value: float) -> str:
    """At least two decimals, and as many more as the price has (0.01875)."""
    whole, _, decimals = f"{value:.5f}".partition(".")
    return f"{whole}.{decimals.rstrip('0').ljust(2, '0')}"
