"""What an output directory holds, read from its part files and journal segments alike.

Readers (status, report, estimate, the done rule) see parts and segments alike, so nothing
paid for is invisible, even while a run writes or after one was killed. Reading needs no lock.

The one done rule: a row is done when its id (or, without an id column, its request hash) is
in results; failed when it is in errors and not done; its failure is its latest record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.errors import CheckpointError, one_line
from batchgen.keys import EMPTY, Keys, contains, keys_of
from batchgen.records import DoneState
from batchgen.store.journal import SUFFIX, JournalFormatError, read_segment
from batchgen.store.layout import ERRORS_DIR, JOURNAL_DIR, RESULTS_DIR, part_files, run_of
from batchgen.store.output import ERRORS_SCHEMA


class OutputReader:
    """The rows in one output directory (parts and journal segments alike) and the done rule."""

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
            if columns is None:
                return pq.read_table(part)
            with pq.ParquetFile(part) as file:
                names = set(file.schema_arrow.names)  # an older part may lack a newer column
                return file.read(columns=[c for c in columns if c in names])
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
                f"{segment}: unreadable journal segment ({one_line(exc)}); move it out of the "
                "output and rerun (the rows in it are then bought again)"
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

    def sample_ids(self, count: int) -> list[str]:
        """Up to ``count`` distinct ids of done rows, as first read (for messages)."""
        found: dict[str, None] = {}
        for _, table in self.tables(RESULTS_DIR, ["row_id"]):
            for value in table.column("row_id").to_pylist():
                if value is not None:
                    found.setdefault(value)
                if len(found) >= count:
                    return list(found)
        return list(found)

    def done_rows(self) -> int:
        """How many distinct rows have results."""
        return len(self._keys(RESULTS_DIR, "row_id"))


def _unreadable_part(part: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(
        f"{part}: unreadable part file ({one_line(exc)}); move it out of the output and rerun"
    )


def _select(table: pa.Table, columns: list[str] | None) -> pa.Table:
    if columns is None:
        return table
    present = [c for c in columns if c in table.column_names]
    return table.select(present)
