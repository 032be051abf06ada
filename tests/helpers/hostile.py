"""The hostile-server tests' job: a few rows, one victim row the scripted faults hit."""

from __future__ import annotations

from pathlib import Path

from batchgen.job.spec import Job
from tests.helpers.jobs import item_job
from tests.helpers.outputs import read_rows

KEY = "hostile-test-key-0123456789"
ROWS = 4
VICTIM = "item-002"  # the row whose calls the scripted faults hit


def make_job(
    folder: Path,
    rows: int = ROWS,
    *,
    concurrency: int = 4,
    timeout: float = 10,
    attempts: int = 3,
    max_delay: float = 300,
) -> Path:
    return item_job(
        folder, rows,
        limits={"concurrency": concurrency, "requests_per_minute": 1_000_000,
                "timeout_seconds": timeout},
        retry={"attempts": attempts, "backoff_initial_seconds": 0.01,
               "backoff_max_seconds": 0.05, "max_server_delay_seconds": max_delay},
        output={"flush_seconds": 0.2},
    )  # fmt: skip


def assert_every_row_accounted_for(job: Job, rows: int = ROWS) -> None:
    done = [r["row_id"] for r in read_rows(job.output.directory, "results")]
    failed = [r["row_id"] for r in read_rows(job.output.directory, "errors")]
    assert sorted(done + failed) == sorted(f"r{i}" for i in range(rows))
