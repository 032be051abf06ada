"""JSON Lines input (``.jsonl``, ``.ndjson``, either gzip-compressed): one JSON object a line.

Read line by line with msgspec's JSON decoder (a line that is not JSON, or not an object, is
named by its row and line, which pyarrow's JSON reader cannot do), in record batches of
``batch_rows``. The columns are the keys of the first :data:`HEAD_ROWS` rows, in first-seen
order; a key a line lacks is null, as an empty CSV cell is. Each column's type comes from the
same rows: whole numbers → int64; numbers with a fraction among them → float64; true/false →
bool; anything else (strings, mixed kinds, nested objects and arrays) → string, where a
non-string value is its JSON text. A later value that does not fit its column's type (a string
in a column of numbers) is an error naming row, line and column: the pre-scan finds it before
the first paid call.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa

from batchgen.errors import InputError
from batchgen.input.files import InputFile, open_bytes
from batchgen.input.source import Batches

HEAD_ROWS = 1000  # the rows that name the columns and fix their types
_INT64 = (-(2**63), 2**63 - 1)

# Other formats named .jsonl, by their first bytes.
_NOT_JSONL = {
    b"PAR1": 'is a Parquet file; name it .parquet or set input.format = "parquet"',
    b"PK\x03\x04": "is a ZIP archive; unzip it first",
    b"\xff\xfe": "is UTF-16 text; re-encode the file as UTF-8",
    b"\xfe\xff": "is UTF-16 text; re-encode the file as UTF-8",
}


@dataclass(frozen=True)
class _Line:
    position: int  # 0-based row
    line: int  # 1-based physical line
    values: dict[str, Any]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _type_of(kinds: set[str]) -> pa.DataType:
    if kinds == {"a whole number"}:
        return pa.int64()
    if kinds and kinds <= {"a whole number", "a number"}:
        return pa.float64()
    if kinds == {"true/false"}:
        return pa.bool_()
    return pa.string()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# A column's type → (does a non-null value fit, what it becomes, what the column holds).
_FITS: dict[pa.DataType, tuple[Callable[[Any], bool], Callable[[Any], Any], str]] = {
    pa.int64(): (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and _INT64[0] <= v <= _INT64[1],
        lambda v: v,
        "whole numbers",
    ),
    pa.float64(): (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        float,
        "numbers",
    ),
    pa.bool_(): (lambda v: isinstance(v, bool), lambda v: v, "true/false"),
    pa.string(): (lambda v: True, _text, "text"),
}


# A column's type → the Python types pyarrow takes into it as they are (no conversion).
_PLAIN: dict[pa.DataType, tuple[type, ...]] = {
    pa.int64(): (int,),
    pa.float64(): (float, int),
    pa.bool_(): (bool,),
    pa.string(): (str,),
}


class JsonlSource:
    """A JSON Lines file, plain or gzip-compressed (a :class:`~.source.Source`)."""

    def __init__(self, path: InputFile, batch_rows: int) -> None:
        self.path = path
        self.batch_rows = batch_rows
        self._types: dict[str, pa.DataType] | None = None

    def check_head(self, head: bytes) -> None:
        for magic, what in _NOT_JSONL.items():
            if head.startswith(magic):
                raise InputError(f"{self.path}: {what}")

    def column_names(self) -> list[str]:
        return list(self._head())

    def schema(self, columns: list[str]) -> pa.Schema:
        types = self._head()
        return pa.schema([pa.field(c, types[c]) for c in columns])

    def batches(self, columns: list[str]) -> Batches:
        types = self._head()
        rows: list[_Line] = []
        for item in self._lines():
            rows.append(item)
            if len(rows) == self.batch_rows:
                yield rows[0].position, self._batch(rows, columns, types)
                rows = []
        if rows:
            yield rows[0].position, self._batch(rows, columns, types)

    def _batch(
        self, rows: list[_Line], columns: list[str], types: dict[str, pa.DataType]
    ) -> pa.RecordBatch:
        arrays = []
        for name in columns:
            column = [row.values.get(name) for row in rows]
            plain = _PLAIN[types[name]]
            if all(v is None or type(v) in plain for v in column):  # the common case, fast
                try:
                    arrays.append(pa.array(column, types[name]))
                    continue
                except (pa.ArrowException, OverflowError):
                    pass  # an int beyond int64, say: found and named below
            arrays.append(self._checked(rows, name, types[name]))
        return pa.RecordBatch.from_arrays(arrays, names=columns)

    def _checked(self, rows: list[_Line], name: str, kind: pa.DataType) -> pa.Array:
        """One column value by value: converted where it fits, else the row that does not."""
        fits, convert, holds = _FITS[kind]
        values = []
        for row in rows:
            value = row.values.get(name)
            if value is not None and not fits(value):
                raise self._error(
                    row,
                    f"column {name!r} is {_kind(value)}, where the first rows hold {holds}; "
                    "give the column one type in every line (quote the values to make it text)",
                )
            values.append(None if value is None else convert(value))
        return pa.array(values, kind)

    def _head(self) -> dict[str, pa.DataType]:
        """Column → type, from the first :data:`HEAD_ROWS` rows (read once)."""
        if self._types is None:
            kinds: dict[str, set[str]] = {}
            with contextlib.closing(self._lines()) as items:
                for item in items:
                    for name, value in item.values.items():
                        seen = kinds.setdefault(name, set())
                        if value is not None:
                            seen.add(_kind(value))
                    if item.position + 1 >= HEAD_ROWS:
                        break
            if not kinds:
                raise InputError(f"{self.path}: no rows (no JSON object on any line)")
            self._types = {name: _type_of(k) for name, k in kinds.items()}
        return self._types

    def _lines(self) -> Generator[_Line, None, None]:
        """Every row: a JSON object per non-blank line."""
        position = 0
        decode = msgspec.json.decode
        with open_bytes(self.path) as stream:
            for number, raw in enumerate(stream, start=1):
                if number == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")
                try:
                    values = decode(raw)
                except msgspec.DecodeError as exc:
                    if not raw.strip():
                        continue  # a blank line: skipped, as pyarrow skips one in a CSV
                    raise self._bad(_Line(position, number, {}), raw, exc) from None
                if type(values) is not dict:
                    raise self._error(
                        _Line(position, number, {}),
                        f"{_kind(values)}, not a JSON object; each line must be one "
                        'object ({"column": value, ...})',
                    )
                yield _Line(position, number, values)
                position += 1

    def _bad(self, item: _Line, raw: bytes, exc: msgspec.DecodeError) -> InputError:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            byte = raw[bad.start]
            return self._error(item, f"not UTF-8 (byte 0x{byte:02x}); re-encode the file as UTF-8")
        why = str(exc).removeprefix("JSON is malformed: ")
        return self._error(item, f"not valid JSON ({why}); fix that line")

    def _error(self, item: _Line, what: str) -> InputError:
        return InputError(f"{self.path}: row {item.position + 1:,} (line {item.line:,}): {what}")
