"""What an output directory holds: rows done and failed, tokens, and the runs that made it.

Read from the output alone through :mod:`batchgen.store.outdir` (parts and journal segments alike:
a killed run's answers count), so it is cheap and works while a run is writing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from batchgen.errors import CheckpointError
from batchgen.store.jobfile import read_job_record
from batchgen.store.layout import JOB_FILE, RESULTS_DIR
from batchgen.store.lock import lock_holder
from batchgen.store.remote import open_output, store_lock_holder
from batchgen.store.runs import read_run_records

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
    running: bool = False  # a live process holds the lock: the last run is going on now
    writer: dict[str, Any] | None = None  # that process's lock record: pid, host
    run_rows: int = 0  # rows the last run has done so far (while it is running)

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
    out = open_output(directory)  # an object store's: its mirror, pulled
    if not (out.path / JOB_FILE).exists():
        raise CheckpointError(f"{directory}: not a batchgen output (no {JOB_FILE})")
    read_job_record(out.path)  # refuses an output of a newer format
    # a lock whose process is gone is a killed run's
    writer = lock_holder(out.path) if out.path == directory else store_lock_holder(directory)
    status = OutputStatus(directory, running=writer is not None, writer=writer)
    results = out.read(RESULTS_DIR, ["row_id", *TOKEN_COLUMNS])
    if results is not None:
        status.rows_done = out.done_rows()
        status.result_rows = results.num_rows
        # Exploded answers repeat the call's usage on every item: count each call once.
        first = results.group_by("row_id", use_threads=False).aggregate(
            [(c, "first") for c in TOKEN_COLUMNS]
        )
        status.tokens = {c.removesuffix("_tokens"): pc.sum(first.column(f"{c}_first")).as_py() or 0
                         for c in TOKEN_COLUMNS}  # fmt: skip
    latest = out.latest_failures(["row_id", "category", "failed_at"])
    status.failed = Counter(latest.column("category").to_pylist())
    runs = read_run_records(out.path)
    ends = {r["run_id"]: r for r in runs if r.get("event") == "end"}
    if runs:
        last = runs[-1]
        status.last_run = ends.get(last["run_id"], last)
        status.rows_total = last.get("rows_total")
        if status.running and results is not None and last.get("event") != "end":
            mine = results.filter(pc.equal(results.column("run"), last["run_id"]))
            status.run_rows = pc.count_distinct(mine.column("row_id")).as_py()
    return status
