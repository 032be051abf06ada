"""``OUTPUT/runs.jsonl``: one record when each run starts and one when it ends."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchgen.errors import CheckpointError
from batchgen.store.files import open_append
from batchgen.store.layout import RUNS_FILE


def append_run_record(directory: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line to runs.jsonl (fsynced)."""
    try:
        with os.fdopen(open_append(directory / RUNS_FILE), "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise CheckpointError(
            f"{directory / RUNS_FILE}: cannot write ({exc.strerror}); free space or fix "
            "permissions, then rerun: the answers are saved"
        ) from None


def read_run_records(directory: Path) -> list[dict[str, Any]]:
    """The run records; a line cut short by a kill is skipped."""
    path = directory / RUNS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records
