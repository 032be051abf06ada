"""Where a bad input value is: the file, 1-based row, column (and row group), for one clear line.

The fast readers (pyarrow's) say *that* something is wrong, often only "invalid UTF8" or "CSV
parse error" for a whole block. These helpers take a second, targeted look at the failing part,
only on the error path: a bisection over one record batch, one Parquet row group column by
column, or Python's ``csv`` module (the same dialect as pyarrow's defaults: comma, double quote,
doubled quotes, no escape character, blank lines skipped) from the last good row on.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.input.files import InputFile, open_bytes

READ_ERRORS = (
    OSError,
    pa.ArrowException,
    UnicodeDecodeError,
    ValueError,
    ArithmeticError,
    csv.Error,
)


def first_invalid(column: pa.Array) -> int | None:
    """The index of the first value that fails full validation (e.g. not UTF-8), or None."""
    try:
        column.validate(full=True)
        return None
    except pa.ArrowInvalid:
        pass
    start, length = 0, len(column)
    while length > 1:  # bisection: the left half holds the first bad value if it fails at all
        half = length // 2
        try:
            column.slice(start, half).validate(full=True)
            start, length = start + half, length - half
        except pa.ArrowInvalid:
            length = half
    return start


def describe_invalid(column: pa.Array, index: int) -> str:
    """What is wrong with the value at ``index`` (found by :func:`first_invalid`)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        binary = pa.large_binary() if pa.types.is_large_string(kind) else pa.binary()
        raw = column.slice(index, 1).view(binary)[0].as_py() or b""
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"not UTF-8 (byte 0x{raw[exc.start]:02x})"
    return f"an invalid {kind} value"


def first_unconvertible(column: pa.Array) -> tuple[int, str] | None:
    """The first value Python cannot hold (e.g. a date past year 9999), and why, or None."""
    try:
        column.to_pylist()
        return None
    except READ_ERRORS:
        pass
    for index in range(len(column)):
        try:
            column[index].as_py()
        except READ_ERRORS as exc:
            return index, f"{exc}"
    return None


def bad_parquet_column(
    parquet: pq.ParquetFile, group: int, columns: Sequence[str], batch_rows: int
) -> str | None:
    """The first of ``columns`` that cannot be read in row group ``group``, or None."""
    for name in columns:
        try:
            for _ in parquet.iter_batches(batch_rows, row_groups=[group], columns=[name]):
                pass
        except READ_ERRORS:
            return name
    return None


@dataclass(frozen=True)
class CsvRow:
    """A data row as Python's csv reads it: 0-based position, first physical line, fields."""

    position: int
    line: int
    fields: list[str]


@contextlib.contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    """csv's field limit is process-wide: raise it for this look only."""
    before = csv.field_size_limit()
    csv.field_size_limit(max(before, limit))
    try:
        yield
    finally:
        csv.field_size_limit(before)


class RowTooLongError(Exception):
    """A row longer than the limit (or a quote never closed): its 0-based position, first line."""

    def __init__(self, position: int, line: int) -> None:
        super().__init__(position, line)
        self.position = position
        self.line = line


def csv_rows(path: InputFile, start: int, limit: int) -> Iterator[CsvRow]:
    """Data rows from 0-based ``start`` on; undecodable bytes kept as surrogates (checked later).

    Raises RowTooLongError for a field longer than ``limit`` characters.
    """
    with open_bytes(path) as raw, _field_limit(limit):
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text)
        position = -1  # the header
        while True:
            line = reader.line_num + 1
            try:
                fields = next(reader, None)
            except csv.Error as exc:
                if "field larger than field limit" not in str(exc):
                    raise
                raise RowTooLongError(position, line) from None
            if fields is None:
                return
            if not fields:  # a blank line: pyarrow skips it too
                continue
            if position >= start:
                yield CsvRow(position, line, fields)
            position += 1


def find_csv_row(path: InputFile, start: int, width: int, limit: int) -> tuple[CsvRow, str] | None:
    """The first row from ``start`` with the wrong number of fields, and how many it has."""
    for row in csv_rows(path, start, limit):
        if len(row.fields) != width:
            return row, f"{len(row.fields)} fields where the header has {width}"
    return None
