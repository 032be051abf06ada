"""Stream input rows from CSV or Parquet as record batches, reading only the columns a job uses.

Memory stays flat: one record batch (about a megabyte of CSV, or ``batch_rows`` Parquet rows) is
held at a time. CSV columns are read as strings (an empty cell is null): CSV has no types, and a
type guessed from the first block can fail thousands of rows later, in the middle of a night run.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchgen.errors import InputError
from batchgen.job import InputSpec

CSV_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class InputRow:
    """One input row: its id (the id column's value, or its 0-based position) and its values."""

    row_id: str
    position: int
    values: Mapping[str, Any]


class InputReader:
    """Reads the columns a job needs from one input file.

    Args:
        spec: the job's input section.
        needs: column name → what needs it (for the error when the file lacks it).
        batch_rows: rows per Parquet record batch.
    """

    def __init__(self, spec: InputSpec, needs: Mapping[str, str], batch_rows: int = 4096) -> None:
        self.spec = spec
        self.path = spec.path
        self.batch_rows = batch_rows
        self.available = self._column_names()
        missing = [c for c in needs if c not in self.available]
        if missing:
            col = missing[0]
            raise InputError(
                f"{self.path}: no column {col!r} ({needs[col]}); "
                f"the file has: {', '.join(self.available) or 'no columns'}"
            )
        self.columns = [c for c in self.available if c in needs]

    def _column_names(self) -> list[str]:
        if not self.path.is_file():
            raise InputError(f"{self.path}: input file not found")
        try:
            if self.spec.format == "parquet":
                return list(pq.ParquetFile(self.path).schema_arrow.names)
            return _csv_header(self.path)
        except InputError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{self.path}: cannot read {self.spec.format}: {exc}") from None

    def arrow_schema(self) -> pa.Schema:
        """The Arrow types of the columns read (CSV: all strings)."""
        if self.spec.format == "parquet":
            full = pq.ParquetFile(self.path).schema_arrow
            return pa.schema([full.field(c) for c in self.columns])
        return pa.schema([pa.field(c, pa.string()) for c in self.columns])

    def scan(self) -> int:
        """Count the rows and check the id column (no nulls, no duplicates) before any call.

        Reads only the id column (or, without one, the first needed column), as Arrow arrays.
        """
        column = self.spec.id_column or (self.columns[0] if self.columns else None)
        if column is None:
            return sum(b.num_rows for b in self._record_batches())
        chunks = [b.column(column) for b in self._record_batches([column])]
        ids = pa.chunked_array(chunks, type=chunks[0].type if chunks else pa.string())
        if self.spec.id_column:
            self._check_ids(ids)
        return len(ids)

    def _check_ids(self, ids: pa.ChunkedArray) -> None:
        name = self.spec.id_column
        if ids.null_count:
            first = pc.index(pc.is_null(ids), True).as_py()
            raise InputError(f"{self.path}: row {first + 1}: empty id in column {name!r}")
        # Sorting finds repeats in a fraction of the memory of a hash table of every id.
        ordered = pc.take(ids, pc.sort_indices(ids))
        repeats = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
        at = pc.index(repeats, True).as_py() if len(ordered) > 1 else -1
        if at >= 0:
            dup = ordered[at]
            first = pc.index(ids, dup).as_py()
            second = first + 1 + pc.index(ids.slice(first + 1), dup).as_py()
            raise InputError(
                f"{self.path}: rows {first + 1} and {second + 1} share the id {dup.as_py()!r} "
                f"in column {name!r} (input.id_column); ids must be unique"
            )

    def batches(self) -> Iterator[list[InputRow]]:
        """Yield the rows, one record batch at a time."""
        position = 0
        for batch in self._record_batches():
            rows = batch.to_pylist()
            yield [self._row(position + i, values) for i, values in enumerate(rows)]
            position += len(rows)

    def _row(self, position: int, values: dict[str, Any]) -> InputRow:
        id_column = self.spec.id_column
        if id_column is None:
            return InputRow(str(position), position, values)
        row_id = values[id_column]
        if row_id is None or row_id == "":
            raise InputError(f"{self.path}: row {position + 1}: empty id in column {id_column!r}")
        return InputRow(str(row_id), position, values)

    def _record_batches(self, columns: list[str] | None = None) -> Iterable[pa.RecordBatch]:
        columns = self.columns if columns is None else columns
        try:
            if self.spec.format == "parquet":
                parquet = pq.ParquetFile(self.path)
                yield from parquet.iter_batches(batch_size=self.batch_rows, columns=columns)
            else:
                yield from self._csv_batches(columns)
        except pa.ArrowInvalid as exc:
            raise InputError(f"{self.path}: cannot read {self.spec.format}: {exc}") from None

    def _csv_batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        reader = pacsv.open_csv(
            self.path,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=False,
            ),
        )
        try:
            for batch in reader:
                if batch.num_rows:
                    yield batch
        finally:
            reader.close()


def _csv_header(path: Path) -> list[str]:
    with path.open("rb") as f:
        line = f.readline(1 << 20)
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 (byte {exc.start} of the header); re-encode the file as UTF-8"
        ) from None
    header = next(csv.reader([text]), None)
    if not header:
        raise InputError(f"{path}: empty file (no header row)")
    return header
