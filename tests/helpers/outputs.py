"""Reading what a run left in OUTPUT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.store.layout import part_files


def result_ids(out: Path) -> list[str]:
    return [
        i
        for p in part_files(out)
        for i in pq.read_table(p, columns=["row_id"])["row_id"].to_pylist()
    ]


def error_ids(out: Path) -> list[str]:
    return [i for p in part_files(out, "errors") for i in pq.read_table(p)["row_id"].to_pylist()]


def read_rows(directory: Path, kind: str) -> list[dict[str, Any]]:
    """Every row of ``kind`` (results, errors, usage) in an output's part files."""
    parts = part_files(directory, kind)
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist() if parts else []
