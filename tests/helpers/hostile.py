"""The hostile-server tests' job: a few rows, one victim row the scripted faults hit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.job.spec import Job
from batchgen.store.layout import part_files
from tests.helpers.paths import write_job

KEY = "hostile-test-key-0123456789"
ROWS = 4
VICTIM = "item-002"  # the row whose calls the scripted faults hit
JOB = """
    [input]
    path = "rows.csv"
    id_column = "id"

    [model]
    name = "gemini-2.5-flash-lite"

    [prompt]
    user = "Describe {{{{ name }}}} in a few words."

    [response_schema]
    type = "OBJECT"
    required = ["label"]
    properties = {{ label = {{ type = "STRING" }} }}

    [limits]
    concurrency = {concurrency}
    requests_per_minute = 1000000
    timeout_seconds = {timeout}

    [retry]
    attempts = {attempts}
    backoff_initial_seconds = 0.01
    backoff_max_seconds = 0.05
    max_server_delay_seconds = {max_delay}

    [output]
    directory = "out"
    flush_seconds = 0.2
"""


def make_job(
    folder: Path,
    rows: int = ROWS,
    *,
    concurrency: int = 4,
    timeout: float = 10,
    attempts: int = 3,
    max_delay: float = 300,
) -> Path:
    with (folder / "rows.csv").open("w") as f:
        f.write("id,name\n")
        f.writelines(f"r{i},item-{i:03d}\n" for i in range(rows))
    text = JOB.format(concurrency=concurrency, timeout=timeout, attempts=attempts,
                      max_delay=max_delay)  # fmt: skip
    return write_job(folder, text)


def read(directory: Path, kind: str) -> list[dict[str, Any]]:
    parts = part_files(directory, kind)
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist() if parts else []


def assert_every_row_accounted_for(job: Job, rows: int = ROWS) -> None:
    done = [r["row_id"] for r in read(job.output.directory, "results")]
    failed = [r["row_id"] for r in read(job.output.directory, "errors")]
    assert sorted(done + failed) == sorted(f"r{i}" for i in range(rows))
