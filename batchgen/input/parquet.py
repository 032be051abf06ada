"""Parquet input: column types as written; read row group by row group, so that a damaged page
is named by its row group, rows and column."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.errors import InputError, one_line
from batchgen.input.files import InputFile, parquet_input
from batchgen.input.locate import READ_ERRORS, bad_parquet_column
from batchgen.input.source import Batches, valid

# What to do about a value that is not valid text.
FIX_TEXT = "the column holds bytes that are not text: write it as UTF-8 (or as binary)"


class ParquetSource:
    """A Parquet file, read ``batch_rows`` rows at a time (a :class:`~.source.Source`)."""

    def __init__(self, path: InputFile, batch_rows: int) -> None:
        self.path = path
        self.batch_rows = batch_rows

    def check_head(self, head: bytes) -> None:
        if head != b"PAR1":
            raise InputError(
                f"{self.path}: not a Parquet file (it does not start with PAR1); "
                'if it is CSV, name it .csv or set input.format = "csv"'
            )

    def column_names(self) -> list[str]:
        return list(self._open().schema_arrow.names)

    def schema(self, columns: list[str]) -> pa.Schema:
        full = self._open().schema_arrow
        return pa.schema([full.field(c) for c in columns])

    def batches(self, columns: list[str]) -> Batches:
        """Row group by row group, so that a damaged page is named by its row group."""
        parquet = self._open()
        groups = parquet.num_row_groups
        position = 0
        for group in range(groups):
            where = f" (row group {group + 1} of {groups})"
            try:
                for batch in parquet.iter_batches(
                    self.batch_rows, row_groups=[group], columns=columns
                ):
                    if batch.num_rows:
                        yield position, valid(batch, position, self.path, FIX_TEXT, where)
                        position += batch.num_rows
            except InputError:
                raise
            except READ_ERRORS as exc:
                raise self._bad_group(parquet, group, columns, exc) from None

    def _open(self) -> pq.ParquetFile:
        # Opened afresh for each pass, as the file is now (the reader checks that it did not
        # change).
        try:
            # Pages written with checksums are verified: a flipped bit is an error, not a value.
            return pq.ParquetFile(parquet_input(self.path), page_checksum_verification=True)
        except READ_ERRORS as exc:  # it starts as Parquet does (checked): the end is missing
            raise InputError(
                f"{self.path}: truncated or damaged Parquet file: its footer cannot be read "
                f"({one_line(exc)}); re-create or re-download it"
            ) from None

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
            f"to {last:,}){where}: damaged ({one_line(exc)}); re-create or re-download the file"
        )
