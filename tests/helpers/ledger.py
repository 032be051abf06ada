"""Usage-ledger rows and output directories written by hand, for report and price tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.store.output import ERRORS_SCHEMA, USAGE_SCHEMA


def call(
    run: str,
    job: str,
    row: str,
    attempt: int,
    model: str,
    at: datetime,
    outcome: str = "ok",
    *,
    prompt: int = 0,
    output: int = 0,
    thinking: int = 0,
    cached: int = 0,
    finish: str | None = "STOP",
    version: str | None = None,
) -> dict[str, Any]:
    """One ledger row."""
    tokens = {"prompt": prompt, "output": output, "thinking": thinking, "cached": cached}
    return {
        "run_id": run,
        "job": job,
        "row_id": row,
        "attempt": attempt,
        "model": model,
        "model_version": version or model,
        **{f"{k}_tokens": n for k, n in tokens.items()},
        "total_tokens": prompt + output + thinking,
        "http_status": 200,
        "outcome": outcome,
        "finish_reason": finish,
        "at": at,
    }


RESULTS = pa.schema(
    [
        ("row_id", pa.string()),
        ("recipe", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("thinking_tokens", pa.int64()),
        ("cached_tokens", pa.int64()),
        ("total_tokens", pa.int64()),
        ("model_version", pa.string()),
        ("finish_reason", pa.string()),
        ("latency_ms", pa.float64()),
        ("attempts", pa.int32()),
        ("completed_at", pa.timestamp("ms", tz="UTC")),
    ]
)


def write_output(
    out: Path,
    job: str,
    model: str,
    usage: dict[str, Sequence[dict[str, Any]]],
    results: dict[str, Sequence[dict[str, Any]]] | None = None,
    errors: dict[str, Sequence[dict[str, Any]]] | None = None,
) -> Path:
    """An output directory as a run leaves it: job.json and part files per run id."""
    out.mkdir(parents=True)
    (out / "job.json").write_text(json.dumps({"job": job, "parts": {"model": model}}))
    for kind, parts, schema in (
        ("usage", usage, USAGE_SCHEMA),
        ("results", results or {}, RESULTS),
        ("errors", errors or {}, ERRORS_SCHEMA),
    ):
        for run, rows in parts.items():
            (out / kind).mkdir(exist_ok=True)
            table = pa.Table.from_pylist(list(rows), schema=schema)
            pq.write_table(table, out / kind / f"part-{run}-00001.parquet")
    return out
