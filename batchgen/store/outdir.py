"""The output directory: what is done, and how rows get there (the layout: batchgen.store.layout).

Every outcome is in the journal before it is anywhere else; parts are compacted from closed
segments (``part-<segment>.parquet``, written whole under a temporary name, then the segment is
removed). A kill between the two leaves both, and folding the segment again finds its parts
already there, so a row is never written twice. Readers (status, report, estimate, the done
rule) see parts and segments alike: nothing paid for is invisible.

The one done rule: a row is done when its id (or, without an id column, its request hash) is
in results; failed when it is in errors and not done; its failure is its latest record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.atomic import atomic_file, fsync_dir
from batchgen.errors import CheckpointError
from batchgen.keys import EMPTY, Keys, contains, keys_of
from batchgen.records import DoneState
from batchgen.store.batches import BATCHES_DIR, BatchStore
from batchgen.store.journal import SUFFIX, JournalFormatError, read_segment
from batchgen.store.layout import (
    ERRORS_DIR,
    JOB_FILE,
    JOURNAL_DIR,
    KINDS,
    RESULTS_DIR,
    RUNS_FILE,
    part_files,
    run_of,
)
from batchgen.store.output import ERRORS_SCHEMA

# --- parts ---------------------------------------------------------------------------------


def write_part(folder: Path, name: str, table: pa.Table) -> Path:
    """Write ``table`` as ``folder/name``: temporary name, fsync, rename, fsync the folder."""
    final = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(final) as sink:
            pq.write_table(table, sink)
    except OSError as exc:
        raise CheckpointError(
            f"{folder}: cannot write results ({exc.strerror}); the answers stay in the journal: "
            "free space or fix permissions, then rerun"
        ) from None
    return final


# --- the directory -------------------------------------------------------------------------


class OutputDir:
    """One output directory; reading needs nothing, writing needs its lock (batchgen.store.lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # --- reading (parts and journal segments alike) -------------------------------------

    def segments(self) -> list[Path]:
        """Journal segments, oldest first."""
        folder = self.path / JOURNAL_DIR
        return sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []

    def tables(self, kind: str, columns: list[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
        """(run id, rows) of every part of ``kind``, then of every journal segment not yet
        compacted into one; ``columns`` missing from old parts come back as nulls."""
        for part in part_files(self.path, kind):
            yield run_of(part.name) or "", self._read_part(part, columns)
        yield from self._segment_tables(kind, columns)

    def _segment_tables(
        self, kind: str, columns: list[str] | None
    ) -> Iterator[tuple[str, pa.Table]]:
        for segment in self.segments():
            if (self.path / kind / f"part-{segment.stem}.parquet").exists():
                continue  # compacted; removed soon (or by the next run, after a kill)
            table = self._segment_table(segment, kind)
            if table is not None:
                yield run_of(segment.name) or "", _select(table, columns)

    def _read_part(self, part: Path, columns: list[str] | None) -> pa.Table:
        try:
            return pq.read_table(part, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise _unreadable_part(part, exc) from None

    def _rows_in(self, part: Path) -> int:
        try:
            return int(pq.read_metadata(part).num_rows)
        except (OSError, pa.ArrowException) as exc:
            raise _unreadable_part(part, exc) from None

    def read(self, kind: str, columns: list[str] | None = None) -> pa.Table | None:
        """All rows of one kind with a ``run`` column (the run that wrote them), or None."""
        tables = []
        for run, table in self.tables(kind, columns):
            tables.append(table.append_column("run", pa.array([run] * len(table), pa.string())))
        return pa.concat_tables(tables, promote_options="default") if tables else None

    def _segment_table(self, segment: Path, kind: str) -> pa.Table | None:
        try:
            return read_segment(segment).table(kind)
        except FileNotFoundError:
            return None  # compacted and removed meanwhile: its part was read above or is new
        except (OSError, JournalFormatError, pa.ArrowException) as exc:
            raise CheckpointError(
                f"{segment}: unreadable journal segment ({exc}); move it out of the output and "
                "rerun (the rows in it are then bought again)"
            ) from None

    # --- the done rule ------------------------------------------------------------------

    def done_state(self, column: str = "row_id") -> DoneState:
        """Keys of done rows and of rows still failed, by ``row_id`` or ``request_hash``."""
        done = self._keys(RESULTS_DIR, column)
        failed = self._keys(ERRORS_DIR, column)
        return DoneState(done, failed[~contains(done, failed)])

    def _keys(self, kind: str, column: str) -> Keys:
        """The sorted distinct keys of a column over parts and journal, built in one array
        sized from the parts' footers (8 bytes a row; no list of chunks, no second copy)."""
        parts = part_files(self.path, kind)
        journal = [keys_of(t.column(column)) for _, t in self._segment_tables(kind, [column])]
        sizes = [self._rows_in(part) for part in parts]
        keys: Keys = np.empty(sum(sizes) + sum(len(k) for k in journal), dtype=np.uint64)
        at = 0
        for part, size in zip(parts, sizes, strict=True):
            keys[at : at + size] = keys_of(self._read_part(part, [column]).column(column))
            at += size
        for chunk in journal:
            keys[at : at + len(chunk)] = chunk
            at += len(chunk)
        if not len(keys):
            return EMPTY
        keys.sort()  # in place
        keep = np.empty(len(keys), dtype=bool)
        keep[0] = True
        np.not_equal(keys[1:], keys[:-1], out=keep[1:])
        keep &= keys != 0  # 0: a null id or hash (old outputs without request_hash)
        if keep.all():  # every result row its own input row (not exploded): no second copy
            return keys
        distinct: Keys = keys[keep]
        return distinct

    def latest_failures(self, columns: list[str] | None = None) -> pa.Table:
        """The latest failure record of each row that is failed and not done."""
        errors = self.read(ERRORS_DIR, columns and sorted({*columns, "row_id", "failed_at"}))
        if errors is None:
            return ERRORS_SCHEMA.empty_table()
        done = self._keys(RESULTS_DIR, "row_id")
        errors = errors.filter(pa.array(~contains(done, keys_of(errors.column("row_id")))))
        errors = errors.sort_by([("row_id", "ascending"), ("failed_at", "descending")])
        ids = errors.column("row_id").to_pylist()
        first = [i for i, row_id in enumerate(ids) if i == 0 or ids[i - 1] != row_id]
        return errors.take(pa.array(first, pa.int64()))

    def done_rows(self) -> int:
        """How many distinct rows have results."""
        return len(self._keys(RESULTS_DIR, "row_id"))

    # --- writing (with the lock held) ---------------------------------------------------

    def prepare(self) -> None:
        """Create and test-write every folder a run writes, before the first paid call."""
        for name in (*KINDS, JOURNAL_DIR, BATCHES_DIR):
            folder = self.path / name
            probe = folder / f".probe-{os.getpid()}"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                probe.write_bytes(b"batchgen")
                probe.unlink()
            except OSError as exc:
                raise CheckpointError(
                    f"{folder}: cannot write here ({exc.strerror}); nothing was sent: fix the "
                    "permissions or free space, or choose another output directory"
                ) from None
            for tmp in folder.glob(".part-*.tmp"):  # a killed compaction: never complete
                tmp.unlink(missing_ok=True)

    def fold_journal(self) -> int:
        """Compact every journal segment into parts (segments of killed runs); return how many."""
        segments = self.segments()
        for segment in segments:
            self.compact(segment)
        return len(segments)

    def compact(self, segment: Path) -> dict[str, int]:
        """Write a closed segment's rows as parts (unless written already), then remove it."""
        try:
            content = read_segment(segment)
        except JournalFormatError as exc:
            raise CheckpointError(str(exc)) from None
        counts = {}
        for kind in KINDS:
            table = content.table(kind)
            if table is None:
                continue
            counts[kind] = len(table)
            name = f"part-{segment.stem}.parquet"
            if not (self.path / kind / name).exists():
                write_part(self.path / kind, name, table)
        segment.unlink()
        fsync_dir(segment.parent)
        return counts

    def compact_errors(self, run_id: str) -> None:
        """Keep one failure record per row still failed, its latest, in one part.

        The new part is written before the old ones are removed: a kill in between leaves
        duplicates that the next compaction folds, never a loss.
        """
        parts = part_files(self.path, ERRORS_DIR)
        if not parts:
            return
        latest = self.latest_failures().select(ERRORS_SCHEMA.names).cast(ERRORS_SCHEMA)
        if len(parts) == 1 and latest.num_rows == self._rows_in(parts[0]):
            return  # already compact
        if latest.num_rows:
            write_part(self.path / ERRORS_DIR, f"part-{run_id}-compact.parquet", latest)
        for part in parts:
            part.unlink()

    # --- starting over -----------------------------------------------------------------

    def start_fresh(self) -> Path | None:
        """Move an earlier job's files into ``previous-<time>/``: never delete paid results.

        Refused while Batch Mode jobs of the output may still run: moved aside, nobody would
        collect the answers they bill for.
        """
        try:
            chunks = BatchStore(self.path).open_chunks()
        except CheckpointError:  # an unreadable record: --fresh is how one gets past it
            chunks = []
        running = [c for c in chunks if c.state in ("submitting", "submitted")]
        if running:
            shown = ", ".join(c.batch_name or c.display_name for c in running[:3])
            more = f" and {len(running) - 3} more" if len(running) > 3 else ""
            raise CheckpointError(
                f"{self.path}: --fresh (fresh=True) would abandon {len(running)} Batch Mode "
                f"job(s) still running and billing ({shown}{more}): run without --fresh to "
                f"collect their answers (`batchgen cancel {self.path}` first to stop them "
                "early), then start fresh"
            )
        names = (JOB_FILE, RUNS_FILE, JOURNAL_DIR, BATCHES_DIR, *KINDS)
        present = [self.path / n for n in names if (self.path / n).exists()]
        if not present:
            return None
        aside = self.path / f"previous-{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            aside.mkdir()
            for path in present:
                path.rename(aside / path.name)
        except OSError as exc:
            raise CheckpointError(
                f"{self.path}: cannot move the earlier output aside: {exc}"
            ) from None
        return aside


def _unreadable_part(part: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(
        f"{part}: unreadable part file ({exc}); move it out of the output and rerun"
    )


def _select(table: pa.Table, columns: list[str] | None) -> pa.Table:
    if columns is None:
        return table
    present = [c for c in columns if c in table.column_names]
    return table.select(present)
