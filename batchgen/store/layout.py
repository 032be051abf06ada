"""The output directory's layout: the names of its files and folders, and its part files.

::

    OUTPUT/
      .lock          the running writer's pid, host and process start (one writer per output)
      job.json       the format version and the fingerprint of the job that produced the output
      runs.jsonl     one record when each run starts and one when it ends
      journal/       write-ahead segments: every outcome as it arrives (batchgen.store.journal)
      results/       part-<run>-<seq>.parquet: one row per answer (per item when exploded)
      errors/        part-<run>-<seq>.parquet: the latest failure of each row still failed
      usage/         part-<run>-<seq>.parquet: one row per API call that returned usage (ledger)
      batches/       tier "batch": every chunk and batch job, and their files
      (batchgen.store.batches)
"""

from __future__ import annotations

import re
from pathlib import Path

LOCK_FILE = ".lock"
JOB_FILE = "job.json"
RUNS_FILE = "runs.jsonl"
RESULTS_DIR = "results"
ERRORS_DIR = "errors"
USAGE_DIR = "usage"
JOURNAL_DIR = "journal"
KINDS = (RESULTS_DIR, ERRORS_DIR, USAGE_DIR)
_PART_RUN = re.compile(r"^part-(\d{8}T\d{6}-[0-9a-f]{6})")


def part_files(directory: Path, kind: str = RESULTS_DIR) -> list[Path]:
    """The whole part files of one kind, oldest run first."""
    folder = directory / kind
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def run_of(name: str) -> str | None:
    """The run id in a part or segment file name."""
    match = _PART_RUN.match(name if name.startswith("part-") else f"part-{name}")
    return match.group(1) if match else None
