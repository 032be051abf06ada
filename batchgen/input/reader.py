"""Stream input rows as record batches, reading only the columns a job uses.

Memory stays flat: one record batch (about a megabyte of CSV, or ``batch_rows`` Parquet rows) is
held at a time. Each format is one :class:`~batchgen.input.source.Source` (:data:`FORMATS`):
:mod:`batchgen.input.csv` reads every column as strings, :mod:`batchgen.input.parquet` as typed.

One reader configuration serves ``validate``, the pre-scan and the run (every read goes through
``InputReader._arrow_batches``): every string is checked to be UTF-8 before it is used; and any
error of pyarrow or the OS becomes an :class:`InputError` naming the file, and the row, column
and row group wherever they can be found (:mod:`batchgen.input.locate`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchgen.errors import InputError, one_line
from batchgen.input.csv import CsvSource
from batchgen.input.files import InputFile, head, input_file, stamp
from batchgen.input.jsonl import JsonlSource
from batchgen.input.locate import READ_ERRORS, first_unconvertible
from batchgen.input.parquet import ParquetSource
from batchgen.input.source import Opener, Source
from batchgen.job.location import said
from batchgen.job.spec import InputSpec
from batchgen.keys import Keys, contains, keys_of
from batchgen.records import InputRow

# input.format -> the class that reads it: a new format is one module and one line here.
FORMATS: dict[str, Opener] = {
    "csv": CsvSource,
    "parquet": ParquetSource,
    "jsonl": JsonlSource,
}


class MissingColumnError(InputError):
    """The input lacks a column the job uses; its parts let a caller word it for its input."""

    def __init__(
        self, path: InputFile, column: str, need: str, available: list[str], near: str
    ) -> None:
        self.path, self.column, self.need, self.available, self.near = (
            path, column, need, available, near
        )  # fmt: skip
        super().__init__(
            f"{path}: no column {column!r} ({need}); "
            f"the file has: {', '.join(available) or 'no columns'}{near}"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, as its parts are not its args
        return type(self), (self.path, self.column, self.need, self.available, self.near)


@dataclass(frozen=True)
class Scan:
    """What the pre-scan found: the row count and, with an id column, each row's 64-bit id key
    (in input order; :mod:`batchgen.keys`)."""

    rows: int
    id_keys: Keys | None


@dataclass(frozen=True)
class _Stamp:
    """Size and modification time: a cheap sign that the file changed under the reader."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, file: InputFile) -> _Stamp:
        return cls(*stamp(file))


class InputReader:
    """Reads the columns a job needs from one input file.

    Args:
        spec: the job's input section.
        needs: column name → what needs it (for the error when the file lacks it).
        batch_rows: rows per Parquet record batch.
    """

    def __init__(self, spec: InputSpec, needs: Mapping[str, str], batch_rows: int = 4096) -> None:
        self.spec = spec
        self.path = input_file(spec.path)
        self.stamp: _Stamp | None = None  # taken by the first pass over the file
        self.source = _open(spec.format, self.path, batch_rows)
        names = self.source.column_names()
        self._original = _renamed(spec.rename, self.path, names)  # name → name in the file
        self.available = [spec.rename.get(c, c) for c in names]
        self.columns: list[str] = []
        self.need(needs)

    def need(self, needs: Mapping[str, str], every: bool = False) -> None:
        """Read ``needs`` (column → what needs it), or ``every`` column, from now on."""
        missing = [c for c in needs if c not in self.available]
        if missing:
            col = missing[0]
            raise MissingColumnError(self.path, col, needs[col], self.available, self._near(col))
        self._check_unique(needs)
        self.columns = [c for c in self.available if every or c in needs or c in self.columns]

    def _near(self, name: str) -> str:
        """A header name that differs only by spaces or case (invisible in the list above)."""
        for have in self.available:
            if have.strip().casefold() == name.casefold():
                return f"; did you mean {have!r}?"
        return ""

    def _check_unique(self, needs: Mapping[str, str]) -> None:
        """Two columns of one name: which one a job means is a guess, so refuse to guess."""
        for name in needs:
            at = [i + 1 for i, c in enumerate(self.available) if c == name]
            if len(at) > 1:
                raise InputError(
                    f"{self.path}: columns {' and '.join(map(str, at))} are both named {name!r} "
                    f"({needs[name]}); rename one so that each name is unique"
                )

    def arrow_schema(self) -> pa.Schema:
        """The Arrow types of the columns read (CSV: all strings)."""
        schema = self.source.schema([self._original[c] for c in self.columns])
        return pa.schema([f.with_name(c) for f, c in zip(schema, self.columns, strict=True)])

    # --- the pre-scan ---------------------------------------------------------------------

    def scan(self) -> Scan:
        """Read every column the job uses, as the run will, before any call.

        Counts the rows; reports the first value the run could not use (file, row, column);
        with an id column, checks that no id is empty and none repeats (in memory: 8 bytes a
        row). Records the file's size and modification time for the run to compare.
        """
        self.stamp = _Stamp.of(self.path)
        id_column = self.spec.id_column
        keys: list[Keys] = []
        rows = 0
        for position, batch in self._arrow_batches():
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                self._check_convertible(name, column, position)
            if id_column is not None:
                ids = batch.column(id_column)
                self._check_present(ids, position)
                keys.append(keys_of(ids))
            rows += batch.num_rows
        if id_column is None:
            return Scan(rows, None)
        id_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
        self._check_repeats(id_keys)
        return Scan(rows, id_keys)

    def _check_convertible(self, name: str, column: pa.Array, position: int) -> None:
        """Types whose values may not fit Python's (dates, times, decimals) are converted once."""
        simple = column.type
        if (
            pa.types.is_string(simple)
            or pa.types.is_large_string(simple)
            or pa.types.is_integer(simple)
            or pa.types.is_floating(simple)
            or pa.types.is_boolean(simple)
        ):
            return
        found = first_unconvertible(column)
        if found is not None:
            index, why = found
            raise InputError(
                f"{self.path}: row {position + index + 1:,}, column {name!r}: cannot be read "
                f"as a Python value ({why}); fix or drop that value"
            )

    def _check_present(self, ids: pa.Array, position: int) -> None:
        """No null (empty CSV cell) or empty-string id."""
        empty = pc.is_null(ids)
        if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
            empty = pc.or_kleene(empty, pc.equal(ids, ""))  # null or "" is True
        at = pc.index(empty, True).as_py()
        if at >= 0:
            raise self._empty_id(position + at)

    def _empty_id(self, position: int) -> InputError:
        return InputError(
            f"{self.path}: row {position + 1:,}: empty id in column {self.spec.id_column!r}"
        )

    def _check_repeats(self, id_keys: Keys) -> None:
        """Equal keys make suspects; a second pass over the ids compares the strings themselves
        (two ids share a key by chance once in ~10¹⁰ at two million rows) and names the first
        row that repeats an earlier id."""
        ranked = np.sort(id_keys)
        suspects = np.unique(ranked[1:][ranked[1:] == ranked[:-1]])
        if not len(suspects):
            return
        name = self.spec.id_column or ""
        seen: dict[str, int] = {}
        for position, batch in self._arrow_batches([name]):
            here = id_keys[position : position + batch.num_rows]
            values = batch.column(0)
            for index in np.flatnonzero(contains(suspects, here)).tolist():
                value, row = str(values[index].as_py()), position + index
                first = seen.setdefault(value, row)
                if first != row:
                    raise InputError(
                        f"{self.path}: rows {first + 1:,} and {row + 1:,} share the id {value!r} "
                        f"in column {name!r} (input.id_column); ids must be unique"
                    )

    def ids(self, count: int) -> list[str]:
        """The first ``count`` ids as the run reads them (the text of each value)."""
        found: list[str] = []
        with contextlib.closing(self._arrow_batches([self.spec.id_column or ""])) as batches:
            for _, batch in batches:
                found += [str(v) for v in batch.column(0).to_pylist()[: count - len(found)]]
                if len(found) >= count:
                    break
        return found

    # --- the run --------------------------------------------------------------------------

    def batches(self) -> Iterator[list[InputRow]]:
        """Yield the rows, one record batch at a time."""
        for position, batch in self._arrow_batches():
            try:
                rows = (
                    batch.select(self.columns).to_pylist()
                    if self.columns
                    else [{} for _ in range(batch.num_rows)]
                )
            except READ_ERRORS as exc:
                end = position + batch.num_rows
                raise InputError(
                    f"{self.path}: rows {position + 1:,} to {end:,}: cannot read: {one_line(exc)}"
                ) from None
            yield [self._row(position + i, values) for i, values in enumerate(rows)]

    def _row(self, position: int, values: dict[str, Any]) -> InputRow:
        id_column = self.spec.id_column
        if id_column is None:
            return InputRow(str(position), position, values)
        row_id = values[id_column]
        if row_id is None or row_id == "":
            raise self._empty_id(position)
        return InputRow(str(row_id), position, values)

    # --- one reader configuration ---------------------------------------------------------

    def _arrow_batches(
        self, columns: list[str] | None = None
    ) -> Generator[tuple[int, pa.RecordBatch], None, None]:
        """(0-based position of its first row, batch) for every non-empty, valid batch.

        The one path every read takes; checks after each batch that the file did not change.
        """
        # With no column needed, one column still gives the rows (pyarrow reads all for none).
        columns = (self.columns or self.available[:1]) if columns is None else columns
        if self.stamp is None:
            self.stamp = _Stamp.of(self.path)
        try:
            for position, batch in self.source.batches([self._original[c] for c in columns]):
                self._check_unchanged()
                yield position, batch.rename_columns(columns)
        except InputError:
            raise
        except READ_ERRORS as exc:  # the root: no pyarrow or OS error reaches the user raw
            raise InputError(f"{self.path}: cannot read {self.spec.format}: {said(exc)}") from None
        self._check_unchanged()

    def _check_unchanged(self) -> None:
        was = self.stamp
        try:
            now = _Stamp.of(self.path)
        except OSError as exc:
            what = f"now {exc.strerror or 'unreadable'}"
        else:
            if now == was or was is None:
                return
            what = f"size {was.size:,} → {now.size:,} bytes" if now.size != was.size else "mtime"
        raise InputError(
            f"{self.path}: changed while the run was reading it ({what}); results so far are "
            "saved; rerun to continue"
        )


def _renamed(rename: Mapping[str, str], file: InputFile, names: list[str]) -> dict[str, str]:
    """Each column's name for the job (``input.rename`` applied) → its name in the file."""
    for old in rename:
        if old not in names:
            raise InputError(
                f"{file}: no column {old!r} (input.rename); the file has: {', '.join(names)}"
            )
    result: dict[str, str] = {}
    for name in names:
        new = rename.get(name, name)
        if new in result and (name in rename or result[new] in rename):
            raise InputError(
                f"{file}: input.rename: two columns would be named {new!r} "
                f"({result[new]!r} and {name!r}); choose another new name"
            )
        result.setdefault(new, name)  # a name twice in the file: refused if the job needs it
    return result


def _open(fmt: str, file: InputFile, batch_rows: int) -> Source:
    """The file's source, once the file is there, readable, not empty and not another format."""
    source = FORMATS[fmt](file, batch_rows)
    found = head(file)
    if not found:
        raise InputError(f"{file}: empty file (no header row)")
    source.check_head(found)
    return source
