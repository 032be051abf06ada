"""Reading Parquet: row group by row group, each damaged group named by its rows and column."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.errors import InputError
from batchgen.input.locate import READ_ERRORS, bad_parquet_column
from batchgen.input.source import one_line as _line


class ParquetReading:
    """InputReader's Parquet methods."""

    path: Path
    batch_rows: int
    _valid: Callable[..., pa.RecordBatch]

    def _parquet(self) -> pq.ParquetFile:
        try:
            # Pages written with checksums are verified: a flipped bit is an error, not a value.
            return pq.ParquetFile(self.path, page_checksum_verification=True)
        except READ_ERRORS as exc:  # it starts as Parquet does (checked): the end is missing
            raise InputError(
                f"{self.path}: truncated or damaged Parquet file: its footer cannot be read "
                f"({_line(exc)}); re-create or re-download it"
            ) from None

    def _parquet_batches(self, columns: list[str]) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Row group by row group, so that a damaged page is named by its row group."""
        parquet = self._parquet()
        groups = parquet.num_row_groups
        position = 0
        for group in range(groups):
            where = f" (row group {group + 1} of {groups})"
            try:
                for batch in parquet.iter_batches(
                    self.batch_rows, row_groups=[group], columns=columns
                ):
                    if batch.num_rows:
                        yield position, self._valid(batch, position, where)
                        position += batch.num_rows
            except InputError:
                raise
            except READ_ERRORS as exc:
                raise self._bad_group(parquet, group, columns, exc) from None

    def _bad_group(
        self, parquet: pq.ParquetFile, group: int, columns: list[str], exc: BaseException
    ) -> InputError:
        meta = parquet.metadata
        first = sum(meta.row_group(g).num_rows for g in range(group))
        last = first + meta.row_group(group).num_rows
        column = bad_parquet_column(parquet, group, columns, self.batch_rows)
        where = f", column {column!r}" if column else ""
        return InputError(
            f"{self.path}: row group {group + 1} of {meta.num_row_groups} (rows {first + 1:,} "
            f"to {last:,}){where}: damaged ({_line(exc)}); re-create or re-download the file"
        )
