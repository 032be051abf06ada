"""What outputs cost: the usage ledgers of one or more outputs, aggregated with pandas.

Two sources, each counted once:

- **calls** (requests, tokens, cost) come from the usage ledger, ``OUTPUT/usage/``: one row per
  call that returned usage, retries and unusable answers included, because each one is billed.
  Calls that got no answer (HTTP errors, timeouts) returned no usage and cost nothing.
- **rows** (done, failed) come from ``results/`` and ``errors/``: a row is done once, however many
  items its answer exploded into, and failed only when it is not done.

Groups (``by``): ``job`` (the job's name), ``model`` (the model asked for), ``day`` (UTC date of
the call, or of the row's answer or failure), ``run`` (the run id), ``finish_reason`` (of the
call; for a row, of its answer, or of the last call of a failed row). A failed row's run is the
run that last wrote its failure record.

A call is priced by its ``model_version`` when the price table knows it, else by the ``model`` asked
for, at the rates of the call's UTC day and tier (see :mod:`batchgen.pricing.table`); where the
version names another model than the one asked for, the report says which answered. A model without
a price is reported as unpriced, never as costing 0. Each prompt modality is priced at its rate
(``prompt_audio_tokens`` at the model's audio rate, where it has one; images, video and PDF pages
at the input rate); a call whose answer gave no split (or a ledger written before batchgen kept
one) is priced whole at the input rate. ``Report.modalities`` totals the prompt by modality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from batchgen.errors import CheckpointError, JobError, Option
from batchgen.pricing.file import load_prices
from batchgen.pricing.table import TIERS, PriceTable, same_model, utc_today
from batchgen.records import CACHE_STORAGE, MODALITIES, NOT_CALLS, REUSED
from batchgen.store.jobfile import read_job_record
from batchgen.store.layout import JOB_FILE, RESULTS_DIR, USAGE_DIR
from batchgen.store.lock import lock_holder
from batchgen.store.outdir import OutputDir
from batchgen.store.output import USAGE_SCHEMA
from batchgen.store.remote import local_view
from batchgen.store.runs import read_run_records

__all__ = ["GROUPS", "RUN_COLUMNS", "Report", "group_keys", "load_calls", "report"]

GROUPS = ("job", "model", "day", "run", "finish_reason")
TOKENS = ("prompt_tokens", "output_tokens", "thinking_tokens", "cached_tokens", "total_tokens")
AUDIO = ("prompt_audio_tokens", "cached_audio_tokens")  # priced at the audio rate
COLUMNS = ("requests", "rows_done", "rows_failed", "rows_reused", *TOKENS, "cost_usd",
           "unpriced_requests")  # fmt: skip
NONE = "(none)"


@dataclass(frozen=True)
class Report:
    """Totals per group, with what could not be priced.

    Attributes:
        by: the grouping, one of GROUPS.
        groups: one row per group: the group key (column ``by``), then COLUMNS. ``cost_usd`` is
            NaN when a call of the group has no price (``unpriced_requests`` > 0).
        total: the same columns over every group.
        calls: the ledger, one row per billed call, with ``cost_usd`` (NaN: unpriced).
        unpriced: the model names without a price.
        warnings: one line each, for the user.
        prices: the price table used.
        answered: (asked, answered, calls) where the ``model_version`` that answered names
            another model than the one asked for (a retired model routed elsewhere, an alias).
    """

    by: str
    groups: pd.DataFrame
    total: dict[str, Any]
    calls: pd.DataFrame
    unpriced: tuple[str, ...]
    warnings: tuple[str, ...]
    prices: PriceTable = field(repr=False)
    answered: tuple[tuple[str, str, int], ...] = ()
    modalities: dict[str, int] = field(default_factory=dict)


def modality_totals(calls: pd.DataFrame) -> dict[str, int]:
    """Prompt tokens by modality over every call (lower-case names, as MODALITIES), and
    ``unsplit``: the prompt tokens of calls whose answer gave no split. Empty when no call
    gave one."""
    columns = [f"prompt_{m}_tokens" for m in MODALITIES]
    split = calls[columns].notna().any(axis=1)
    if not split.any():
        return {}
    totals = {m: int(calls[c].fillna(0).sum()) for m, c in zip(MODALITIES, columns, strict=True)}
    totals["unsplit"] = int(calls.loc[~split, "prompt_tokens"].fillna(0).sum())
    return totals


def report(outputs: Sequence[Path], *, by: str = "job", prices: PriceTable | None = None) -> Report:
    """Aggregate the ledgers and rows of ``outputs`` by ``by``.

    Raises:
        JobError: an unknown ``by``.
        CheckpointError: a directory that is not a batchgen output, or an unreadable part file.
    """
    if by not in GROUPS:
        by_option = Option(f"by={by!r}", f"--by {by}")
        raise JobError(by_option, f": unknown grouping (one of {', '.join(GROUPS)})")
    if not outputs:
        raise JobError("report: no output directory given")
    outputs = [local_view(out) for out in outputs]  # an object store's: its pulled mirror
    prices = prices or load_prices()
    warnings: list[str] = []
    calls, rows = [], []
    for out in dict.fromkeys(outputs):  # the same output twice is counted once
        out_calls, notes = load_calls(out)
        calls.append(out_calls)
        rows.append(_rows(out, out_calls))
        warnings += notes
    ledger = pd.concat(calls, ignore_index=True)
    unpriced, notes = _price(ledger, prices)
    warnings += notes
    groups = _aggregate(ledger, pd.concat(rows, ignore_index=True), by)
    if by == "run":
        groups = _with_run_records(groups, outputs)
    answered = tuple(answered_by(ledger))
    return Report(
        by, groups, _total(groups), ledger, unpriced, tuple(warnings), prices, answered,
        modality_totals(ledger),
    )  # fmt: skip


# --- reading an output ---------------------------------------------------------------------


def _job(out: Path) -> tuple[str, str]:
    """(job name, model) from the output's job.json."""
    if not (out / JOB_FILE).is_file():
        raise CheckpointError(
            f"{out}: not a batchgen output (no {JOB_FILE}); pass an output directory such as "
            "out/cookie_recipes"
        )
    record = read_job_record(out)
    try:
        return str(record["job"]), str(record["parts"]["model"])
    except (KeyError, TypeError):
        raise CheckpointError(f"{out / JOB_FILE}: unreadable; is this a batchgen output?") from None


def _read(out: Path, kind: str, columns: list[str]) -> pd.DataFrame | None:
    """The rows of one kind (parts and journal) with a ``run`` column, or None."""
    table = OutputDir(out).read(kind, columns)
    return table.to_pandas() if table is not None else None


def load_calls(out: Path) -> tuple[pd.DataFrame, list[str]]:
    """One output's billed calls (USAGE_SCHEMA's columns and ``run``), with warnings.

    An output written before the ledger existed has only its kept answers: they stand in for
    the calls, with a warning that retries and failed calls are missing.
    """
    job, model = _job(out)
    calls = _read(out, USAGE_DIR, USAGE_SCHEMA.names)
    if calls is not None:
        if "cache_token_hours" not in calls:  # a version 1 ledger: no cache entries
            calls["cache_token_hours"] = np.nan
        calls["run"] = calls["run_id"].fillna(calls["run"])
        # columns an older batchgen did not write (tier, the modality split) are null
        missing = [n for n in USAGE_SCHEMA.names if n not in calls]
        calls = calls.assign(**dict.fromkeys(missing, None))
        return calls.drop(columns="run_id"), []
    wanted = ["row_id", *TOKENS, "model_version", "finish_reason", "attempts", "completed_at"]
    results = _read(out, RESULTS_DIR, wanted)
    if results is None:
        return _empty_calls(), []
    answers = results.drop_duplicates("row_id").rename(
        columns={"completed_at": "at", "attempts": "attempt"}
    )
    # written before batchgen sent a serviceTier: every call was standard
    answers = answers.assign(
        job=job,
        model=model,
        http_status=200,
        outcome="ok",
        tier="standard",
        cache_token_hours=np.nan,
    )
    note = (
        f"{out}: no usage ledger (written before batchgen kept one): requests, tokens and "
        "cost count only the answers kept, not retries or failed calls"
    )
    return answers.reindex(columns=_empty_calls().columns), [note]


def _empty_calls() -> pd.DataFrame:
    names = [n for n in USAGE_SCHEMA.names if n != "run_id"] + ["run"]
    table = pa.schema([*(f for f in USAGE_SCHEMA if f.name != "run_id"), ("run", pa.string())])
    return table.empty_table().to_pandas()[names]


def _rows(out: Path, calls: pd.DataFrame) -> pd.DataFrame:
    """One row per input row with an outcome: done (in results) or failed (the done rule of
    batchgen.store.outdir: in errors and not done, with its latest failure)."""
    job, model = _job(out)
    results = _read(out, RESULTS_DIR, ["row_id", "finish_reason", "completed_at"])
    frames = []
    if results is not None:
        first = results.drop_duplicates("row_id")  # exploded answers repeat the row
        frames.append(first.rename(columns={"completed_at": "at"}).assign(done=1, failed=0))
    latest = OutputDir(out).latest_failures(["row_id", "failed_at"])
    if latest.num_rows:
        failed = latest.select(["row_id", "failed_at", "run"]).to_pandas()
        failed = failed.rename(columns={"failed_at": "at"})
        last = calls.sort_values("at").drop_duplicates("row_id", keep="last")
        reasons = last.set_index("row_id")["finish_reason"]
        failed = failed.assign(finish_reason=failed["row_id"].map(reasons), done=0, failed=1)
        frames.append(failed)
    if not frames:
        columns = ["job", "model", "row_id", "at", "run", "finish_reason", "done", "failed"]
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).assign(job=job, model=model)


# --- pricing and aggregating ---------------------------------------------------------------


def _price(calls: pd.DataFrame, prices: PriceTable) -> tuple[tuple[str, ...], list[str]]:
    """Add ``cost_usd`` to every call (NaN: no price); return the unpriced models and notes.

    Each call is priced at the period covering its UTC day (``at``) and the tier that served it
    (a ``tier`` column when the ledger has one, else standard).
    """
    calls["cost_usd"] = np.nan
    unpriced: list[str] = []
    notes: list[str] = []
    keys = calls.assign(_day=_utc_days(calls["at"]), _tier=_tiers(calls))
    by_group = keys.groupby(["model_version", "model", "_day", "_tier"], dropna=False).groups
    for (version, model, day, tier), index in by_group.items():
        version = version if isinstance(version, str) else None
        asked = model if isinstance(model, str) else None
        when = date.fromisoformat(day) if isinstance(day, str) else utc_today()
        price = prices.resolve(version, asked, at=when)
        name = version or asked or NONE
        if tier not in TIERS:
            notes.append(f"no price for the {tier!r} service tier: its calls are unpriced")
            continue
        if price is None:
            if name not in unpriced:
                unpriced.append(name)
                notes.append(
                    f"no price for model {name!r} (on {when.isoformat()}): its cost is shown as "
                    "unpriced; add it to a price file and pass it (prices=, --prices FILE)"
                )
            continue
        notes += _pricing_note(prices, version, asked, price.name)
        part = calls.loc[index]
        counts = [part[c].fillna(0).to_numpy(np.int64) for c in TOKENS[:4]]
        audio = [part[c].fillna(0).to_numpy(np.int64) if c in part else None for c in AUDIO]
        cost = price.costs(*counts, tier=str(tier), audio=audio[0], cached_audio=audio[1])
        # a cache's storage: token-hours at the storage rate (USD per 1M tokens per hour)
        if "cache_token_hours" in part and "outcome" in part:
            stored = part["cache_token_hours"].fillna(0.0).to_numpy(float)
            stored = np.where(part["outcome"].to_numpy() == CACHE_STORAGE, stored, 0.0)
        else:  # a version 1 ledger: no cache entries
            stored = np.zeros(len(part))
        calls.loc[index, "cost_usd"] = cost + stored * price.storage_rate / 1e6
    return tuple(unpriced), list(dict.fromkeys(notes))


def _utc_days(at: pd.Series) -> pd.Series:
    return pd.to_datetime(at, utc=True).dt.strftime("%Y-%m-%d")


def _tiers(calls: pd.DataFrame) -> pd.Series | str:
    """The tier of each call: a ``tier`` column (the API's spellings: ``flex``,
    ``SERVICE_TIER_FLEX``; unspecified is standard) or, without one, standard."""
    if "tier" not in calls:
        return "standard"
    tier = calls["tier"].fillna("").astype(str).str.lower().str.removeprefix("service_tier_")
    return tier.replace({"": "standard", "unspecified": "standard"})


def _pricing_note(
    prices: PriceTable, version: str | None, asked: str | None, priced_as: str
) -> list[str]:
    """Why a call was priced as another model than it names: a retired model, or a version."""
    own = prices.chosen(version, asked)
    if own is not None and own != priced_as:
        life = prices.models[own].lifecycle
        since = life.retires.isoformat() if life and life.retires else "?"
        return [
            f"model {own!r} retired on {since}: its calls from then on are priced at the rate "
            f"of {priced_as!r}, where they are routed"
        ]
    if priced_as not in (version, asked):
        name = version or asked
        return [f"model {name!r} priced as {priced_as!r} (the same model's version)"]
    return []


def answered_by(calls: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(asked, answered, calls) wherever ``model_version`` names another model than asked."""
    pairs = calls.groupby(["model", "model_version"], dropna=True).size()
    return [
        (str(asked), str(answered), int(n))
        for (asked, answered), n in pairs.items()
        if not same_model(str(asked), str(answered))
    ]


def group_keys(frame: pd.DataFrame, by: str) -> pd.Series:
    """The group each call or row falls in under ``by`` (a missing key: ``(none)``)."""
    if by == "day":
        at = pd.to_datetime(frame["at"], utc=True)
        return at.dt.strftime("%Y-%m-%d").fillna(NONE)
    column = "run" if by == "run" else by
    return frame[column].astype(object).where(frame[column].notna(), NONE).astype(str)


def _aggregate(calls: pd.DataFrame, rows: pd.DataFrame, by: str) -> pd.DataFrame:
    reused = (calls["outcome"] == REUSED).astype(np.int64)  # answered by a twin: no call
    not_call = calls["outcome"].isin(NOT_CALLS).astype(np.int64)  # reused, or a cache's entry
    billed = calls.assign(
        key=group_keys(calls, by),
        unpriced_requests=(calls["cost_usd"].isna() & (not_call == 0)).astype(np.int64),
        cost_usd=calls["cost_usd"].fillna(0.0),
        paid=1 - not_call,
        rows_reused=reused,
    )
    for column in TOKENS:
        billed[column] = billed[column].fillna(0).astype(np.int64)
    per_call = billed.groupby("key").agg(
        requests=("paid", "sum"),
        rows_reused=("rows_reused", "sum"),
        **{c: (c, "sum") for c in (*TOKENS, "cost_usd", "unpriced_requests")},
    )
    outcomes = (
        rows.assign(key=group_keys(rows, by))
        .groupby("key")
        .agg(rows_done=("done", "sum"), rows_failed=("failed", "sum"))
    )
    groups = per_call.join(outcomes, how="outer")
    counts = [c for c in COLUMNS if c != "cost_usd"]
    groups[counts] = groups[counts].fillna(0).astype(np.int64)
    groups["cost_usd"] = groups["cost_usd"].fillna(0.0).astype(float)
    groups.loc[groups["unpriced_requests"] > 0, "cost_usd"] = np.nan
    groups = groups.sort_index().reset_index(names=by)
    return groups[[by, *COLUMNS]]


RUN_COLUMNS = ("started", "exit", "stopped_by")


def _with_run_records(groups: pd.DataFrame, outputs: Sequence[Path]) -> pd.DataFrame:
    """Add each run's start, exit code and stop reason from runs.jsonl (and the runs that made
    no call at all); a run with a start record but no end record did not finish (killed), unless
    it is the last and a live process holds the output's lock: that one is running."""
    runs: dict[str, dict[str, Any]] = {}
    for out in dict.fromkeys(outputs):
        records = read_run_records(out)
        for record in records:
            entry = runs.setdefault(
                record["run_id"],
                {"started": record.get("started_at", "")[:19], "exit": "killed?", "seq": len(runs)},
            )
            if record.get("event") == "end":
                entry["exit"] = str(record.get("exit_code"))
                entry["stopped_by"] = record.get("stopped_by") or ""
        if records and records[-1].get("event") != "end" and lock_holder(out) is not None:
            runs[records[-1]["run_id"]]["exit"] = "running"
    frame = pd.DataFrame.from_dict(runs, orient="index", columns=[*RUN_COLUMNS, "seq"])
    merged = groups.set_index("run").join(frame, how="outer")
    counts = [c for c in COLUMNS if c != "cost_usd"]
    merged[counts] = merged[counts].fillna(0).astype(np.int64)
    merged[list(RUN_COLUMNS)] = merged[list(RUN_COLUMNS)].fillna("")
    merged.loc[merged["requests"] == 0, "cost_usd"] = 0.0  # a run that made no call cost 0
    merged = merged.sort_values("seq", na_position="last", kind="stable")  # in the order run
    return merged.drop(columns="seq").reset_index(names="run")


def _total(groups: pd.DataFrame) -> dict[str, Any]:
    total: dict[str, Any] = {c: int(groups[c].sum()) for c in COLUMNS if c != "cost_usd"}
    costs = groups["cost_usd"]
    total["cost_usd"] = None if costs.isna().any() else float(costs.sum())
    return total
