"""What an output directory holds: rows done and failed, tokens, and the runs that made it.

Read from the output alone (the id and token columns, the failure records and runs.jsonl), so
it is cheap and works while a run is writing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchgen.checkpoint import JOB_FILE, LOCK_FILE, read_run_records
from batchgen.errors import CheckpointError
from batchgen.output import ERRORS_DIR, RESULTS_DIR, part_files

TOKEN_COLUMNS = (
    "prompt_tokens",
    "output_tokens",
    "thinking_tokens",
    "cached_tokens",
    "total_tokens",
)


@dataclass
class OutputStatus:
    """The state of one output directory."""

    directory: Path
    rows_done: int = 0
    result_rows: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # category → rows still failed
    rows_total: int | None = None  # input rows at the last run that recorded it
    tokens: dict[str, int] = field(default_factory=dict)  # of the answers kept
    last_run: dict[str, Any] | None = None
    running: bool = False

    @property
    def rows_failed(self) -> int:
        return sum(self.failed.values())

    @property
    def remaining(self) -> int | None:
        if self.rows_total is None:
            return None
        return max(0, self.rows_total - self.rows_done - self.rows_failed)


def output_status(directory: Path) -> OutputStatus:
    """Read the status of ``directory``; CheckpointError when it is not a batchgen output."""
    if not (directory / JOB_FILE).exists():
        raise CheckpointError(f"{directory}: not a batchgen output (no {JOB_FILE})")
    status = OutputStatus(directory, running=(directory / LOCK_FILE).exists())
    results = _read(directory, RESULTS_DIR, ["row_id", *TOKEN_COLUMNS])
    if results is not None:
        done = pc.unique(results.column("row_id"))
        status.rows_done = len(done)
        status.result_rows = results.num_rows
        # Exploded answers repeat the call's usage on every item: count each call once.
        first = results.group_by("row_id", use_threads=False).aggregate(
            [(c, "first") for c in TOKEN_COLUMNS]
        )
        status.tokens = {c.removesuffix("_tokens"): pc.sum(first.column(f"{c}_first")).as_py() or 0
                         for c in TOKEN_COLUMNS}  # fmt: skip
    else:
        done = pa.array([], pa.string())
    errors = _read(directory, ERRORS_DIR, ["row_id", "category", "failed_at"])
    if errors is not None:
        still = errors.filter(pc.invert(pc.is_in(errors.column("row_id"), done)))
        latest = still.sort_by([("failed_at", "descending")]).group_by(
            "row_id", use_threads=False).aggregate([("category", "first")])  # fmt: skip
        status.failed = Counter(latest.column("category_first").to_pylist())
    runs = read_run_records(directory)
    ends = {r["run_id"]: r for r in runs if r.get("event") == "end"}
    if runs:
        last = runs[-1]
        status.last_run = ends.get(last["run_id"], last)
        status.rows_total = last.get("rows_total")
    return status


def _read(directory: Path, kind: str, columns: list[str]) -> pa.Table | None:
    parts = part_files(directory, kind)
    if not parts:
        return None
    try:
        return pa.concat_tables([pq.read_table(p, columns=columns) for p in parts])
    except (OSError, pa.ArrowException) as exc:
        raise CheckpointError(f"{directory / kind}: unreadable part file ({exc})") from None
