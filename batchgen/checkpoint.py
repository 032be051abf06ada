"""What makes an output directory resumable: its lock, its job fingerprint, and its done set.

::

    OUTPUT/
      .lock          the running writer's pid, host and process start (one writer per output)
      job.json       the fingerprint of the job that produced the output
      runs.jsonl     one record per run
      results/       part files (see batchgen.output)
      errors/

A run killed at any moment leaves whole part files and, at worst, a temporary file and a stale
lock; the next run removes the one and takes over the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchgen.errors import CheckpointError
from batchgen.job import Job
from batchgen.output import ERRORS_DIR, ERRORS_SCHEMA, RESULTS_DIR, PartWriter, part_files

LOCK_FILE = ".lock"
JOB_FILE = "job.json"
RUNS_FILE = "runs.jsonl"


# --- one writer per output -----------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _process_start(pid) in (None, started)


@contextlib.contextmanager
def output_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory/.lock`` for the block; a lock left by a dead process is taken over."""
    lock = directory / LOCK_FILE
    host = socket.gethostname()
    me = {"pid": os.getpid(), "host": host, "started": _process_start(os.getpid())}
    tmp = directory / f".lock.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(me))
    try:
        for _ in range(3):
            try:
                os.link(tmp, lock)  # atomic: the lock is whole or absent, never half written
                break
            except FileExistsError:
                _take_over_if_stale(lock, host)
        else:
            raise CheckpointError(f"{lock}: could not take the lock; retry")
    finally:
        tmp.unlink(missing_ok=True)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _take_over_if_stale(lock: Path, host: str) -> None:
    try:
        holder = json.loads(lock.read_text())
    except FileNotFoundError:
        return  # released meanwhile: try again
    except (OSError, ValueError):
        holder = {}
    pid, where = holder.get("pid"), holder.get("host")
    if isinstance(pid, int) and where == host and not _alive(pid, holder.get("started")):
        lock.unlink(missing_ok=True)  # its process is gone
        return
    if not isinstance(pid, int):
        raise CheckpointError(f"{lock}: unreadable lock file; if no run is using it, delete it")
    raise CheckpointError(
        f"{lock.parent}: another run (pid {pid} on {where}) is writing this output; "
        "wait for it, or delete the lock file if that run is gone"
    )


# --- what produced the output --------------------------------------------------------------


def fingerprint_parts(job: Job) -> dict[str, Any]:
    """What decides the answers and the output's columns; base_url and limits do not."""
    return {
        "model": job.model.name,
        "response_schema": job.response_schema,
        # only when not Gemini's, so that fingerprints of existing outputs stay as they were
        **({"schema_dialect": job.schema_dialect} if job.schema_dialect != "gemini" else {}),
        "prompt.user": job.prompt.user,
        "prompt.system": job.prompt.system,
        "generation": job.generation,
        "output.explode": job.output.explode,
        "input.carry": list(job.input.carry),
        "input.id_column": job.input.id_column,
    }


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A short hash of the fingerprint parts."""
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def check_fingerprint(job: Job, directory: Path, version: str) -> str:
    """Record the job's fingerprint in a new output; refuse an output made by another job."""
    parts = fingerprint_parts(job)
    path = directory / JOB_FILE
    if path.exists():
        try:
            recorded = json.loads(path.read_text())["parts"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(
                f"{path}: unreadable; move the output aside or use --fresh"
            ) from None
        changed = [k for k in parts if recorded.get(k) != parts[k]]
        if changed:
            raise CheckpointError(
                f"{directory}: written by a different job ({', '.join(changed)} changed); "
                "rerun with --fresh to start over, or choose another --output"
            )
        return fingerprint(parts)
    if part_files(directory) or part_files(directory, ERRORS_DIR):
        raise CheckpointError(
            f"{directory}: has results but no {JOB_FILE}; choose another --output or use --fresh"
        )
    record = {"fingerprint": fingerprint(parts), "job": job.name, "parts": parts,
              "batchgen_version": version}  # fmt: skip
    _write_atomic(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return fingerprint(parts)


def start_fresh(directory: Path) -> Path | None:
    """Move an earlier job's files into ``directory/previous-<time>/``: never delete paid results.

    Called with the lock held; returns the folder they went to, or None when there was nothing.
    """
    names = (JOB_FILE, RUNS_FILE, RESULTS_DIR, ERRORS_DIR)
    present = [directory / n for n in names if (directory / n).exists()]
    if not present:
        return None
    aside = directory / f"previous-{time.strftime('%Y%m%dT%H%M%S')}"
    try:
        aside.mkdir()
        for path in present:
            path.rename(aside / path.name)
    except OSError as exc:
        raise CheckpointError(f"{directory}: cannot move the earlier output aside: {exc}") from None
    return aside


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- what is done --------------------------------------------------------------------------


@dataclass(frozen=True)
class DoneSet:
    """Rows already answered (by id, and by request hash) and rows recorded as failed."""

    ids: frozenset[str]
    hashes: frozenset[str]
    failed: frozenset[str]
    failed_hashes: frozenset[str] = frozenset()


def remove_temporaries(directory: Path) -> None:
    """Temporary part files left by a killed run: never complete, safe to delete."""
    for folder in (directory / RESULTS_DIR, directory / ERRORS_DIR):
        if folder.is_dir():
            for tmp in folder.glob(".part-*.tmp"):
                tmp.unlink(missing_ok=True)


def read_done(directory: Path) -> DoneSet:
    """Read the id and hash columns of the results, and the ids of the failure records."""
    ids: set[str] = set()
    hashes: set[str] = set()
    for table in _read_parts(directory, RESULTS_DIR, ["row_id", "request_hash"]):
        ids.update(table.column("row_id").to_pylist())
        hashes.update(h for h in table.column("request_hash").to_pylist() if h)
    failed: set[str] = set()
    failed_hashes: set[str] = set()
    for table in _read_parts(directory, ERRORS_DIR, ["row_id", "request_hash"]):
        failed.update(table.column("row_id").to_pylist())
        failed_hashes.update(h for h in table.column("request_hash").to_pylist() if h)
    return DoneSet(
        frozenset(ids),
        frozenset(hashes),
        frozenset(failed - ids),
        frozenset(failed_hashes - hashes),
    )


def _read_parts(directory: Path, kind: str, columns: list[str]) -> Iterator[pa.Table]:
    for part in part_files(directory, kind):
        try:
            yield pq.read_table(part, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise CheckpointError(
                f"{part}: unreadable part file ({exc}); move it out of the output and rerun"
            ) from None


def compact_errors(directory: Path, run_id: str) -> None:
    """Keep one failure record per row that is still failed: the latest.

    A row that failed in one run and succeeded in a later one leaves errors/; a row that failed
    twice keeps its newest record. The new part is written before the old ones are removed, so
    a kill in between leaves duplicates that the next compaction folds, never a loss.
    """
    parts = part_files(directory, ERRORS_DIR)
    if not parts:
        return
    tables = [pq.read_table(p) for p in parts]
    table = pa.concat_tables(tables).cast(ERRORS_SCHEMA)
    # the done ids as one Arrow column (a few bytes a row), not a Python set (~100 bytes a row)
    done = [t.column("row_id") for t in _read_parts(directory, RESULTS_DIR, ["row_id"])]
    done_ids = pa.chunked_array(done, pa.string()).combine_chunks()
    keep = pc.invert(pc.is_in(table.column("row_id"), value_set=done_ids))
    table = table.filter(keep).sort_by([("row_id", "ascending"), ("failed_at", "descending")])
    if table.num_rows:
        first = _first_of_each(table.column("row_id").to_pylist())
        table = table.take(pa.array(first, pa.int64()))
    if len(parts) == 1 and table.num_rows == tables[0].num_rows:
        return  # already compact
    if table.num_rows:
        PartWriter(directory / ERRORS_DIR, f"{run_id}-compact").write(table)
    for part in parts:
        part.unlink()


def _first_of_each(ids: list[str]) -> list[int]:
    return [i for i, row_id in enumerate(ids) if i == 0 or ids[i - 1] != row_id]


# --- run records ---------------------------------------------------------------------------


def append_run_record(directory: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line to runs.jsonl (fsynced)."""
    with (directory / RUNS_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
