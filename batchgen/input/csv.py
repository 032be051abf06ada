"""CSV input: every column read as strings (an empty cell is null), in blocks that grow for a
long row; a parse error is named by its row and line.

CSV has no types, and a type guessed from the first block can fail thousands of rows later, in
the middle of a night run: so strings. Quoted values may hold newlines.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from batchgen.errors import InputError, one_line
from batchgen.input.files import InputFile, arrow_input, open_bytes
from batchgen.input.locate import READ_ERRORS, RowTooLongError, find_csv_row
from batchgen.input.source import Batches, valid

CSV_BLOCK_BYTES = 1 << 20
# A CSV row may be as long as this: above any request the API takes (20 MB), so no real prompt is
# refused, yet an unclosed quote (which makes the rest of the file one value) is caught.
CSV_MAX_ROW_BYTES = 64 << 20

# Other formats named .csv, by their first bytes: what the file is and what to do.
_NOT_CSV = {
    b"PAR1": 'is a Parquet file; name it .parquet or set input.format = "parquet"',
    b"PK\x03\x04": "is a ZIP archive (an Excel workbook?); export the sheet as CSV (UTF-8)",
    b"\xff\xfe": "is UTF-16 text; re-encode the file as UTF-8",
    b"\xfe\xff": "is UTF-16 text; re-encode the file as UTF-8",
}

# What to do about a value that is not valid text.
FIX_TEXT = "re-encode the file as UTF-8"


class CsvSource:
    """A CSV file with a header row (a :class:`~.source.Source`).

    Records come in blocks of :data:`CSV_BLOCK_BYTES`, not a number of rows, so ``batch_rows``
    is not used.
    """

    def __init__(self, path: InputFile, batch_rows: int) -> None:
        self.path = path
        self.block = CSV_BLOCK_BYTES  # grows when a row is longer (and stays grown)
        self._header: list[str] | None = None

    def check_head(self, head: bytes) -> None:
        for magic, what in _NOT_CSV.items():
            if head.startswith(magic):
                raise InputError(f"{self.path}: {what}")

    def column_names(self) -> list[str]:
        if self._header is None:
            try:
                self._header = _header(self.path)
            except READ_ERRORS as exc:
                raise InputError(f"{self.path}: cannot read csv: {one_line(exc)}") from None
        return self._header

    def schema(self, columns: list[str]) -> pa.Schema:
        return pa.schema([pa.field(c, pa.string()) for c in columns])

    def batches(self, columns: list[str]) -> Batches:
        """Batches of string columns; a row longer than the block grows the block and restarts,
        skipping the rows already given."""
        done = 0
        while True:
            try:
                for batch in self._pass(columns, skip=done):
                    yield done, batch
                    done += batch.num_rows
                return
            except pa.ArrowInvalid as exc:
                if "straddling" not in str(exc):
                    raise self._error(exc, done) from None
                if self.block >= CSV_MAX_ROW_BYTES:
                    raise self._too_long(done) from None
                self.block = min(2 * self.block, CSV_MAX_ROW_BYTES)

    def _pass(self, columns: list[str], skip: int) -> Iterator[pa.RecordBatch]:
        # Read as bytes, then viewed as text only once checked: an undecodable byte is then
        # named by row and column, not reported as "invalid UTF8" for a whole block.
        with arrow_input(self.path) as source:
            yield from self._read(source, columns, skip)

    def _read(
        self, source: str | pa.NativeFile, columns: list[str], skip: int
    ) -> Iterator[pa.RecordBatch]:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=self.block),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.binary() for c in columns},
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=False,
            ),
        )
        position = 0
        try:
            for batch in reader:
                start, position = position, position + batch.num_rows
                if position <= skip or not batch.num_rows:
                    continue
                batch = batch.slice(max(0, skip - start))
                text = pa.RecordBatch.from_arrays(
                    [c.view(pa.string()) for c in batch.columns], names=batch.schema.names
                )
                yield valid(text, max(start, skip), self.path, FIX_TEXT)
        finally:
            reader.close()

    def _error(self, exc: pa.ArrowInvalid, done: int) -> InputError:
        """A parse error names no row: find it with Python's csv from the last good row on."""
        found = None
        if "Expected" in str(exc):
            width = len(self.column_names())
            try:
                found = find_csv_row(self.path, done, width, CSV_MAX_ROW_BYTES)
            except RowTooLongError as long:  # a quote never closed, up to the end of the file
                return self._too_long_at(f"row {long.position + 1:,} (from line {long.line:,})")
        if found is None:
            return InputError(f"{self.path}: after row {done:,}: cannot read csv: {one_line(exc)}")
        row, why = found
        return InputError(
            f"{self.path}: row {row.position + 1:,} (line {row.line:,}): {why}; check the "
            "quotes and commas of that row"
        )

    def _too_long(self, done: int) -> InputError:
        where = f"after row {done:,}"
        try:
            find_csv_row(self.path, done, len(self.column_names()), CSV_MAX_ROW_BYTES)
        except RowTooLongError as long:
            where = f"row {long.position + 1:,} (from line {long.line:,})"
        return self._too_long_at(where)

    def _too_long_at(self, where: str) -> InputError:
        return InputError(
            f"{self.path}: {where}: longer than {CSV_MAX_ROW_BYTES >> 20} MiB, the most batchgen "
            "reads in one row; a quote that is never closed does this: check the quotes there"
        )


def _header(path: InputFile) -> list[str]:
    """The header as Python's csv reads it, in pyarrow's dialect (BOM dropped, blank lines
    skipped, quoted newlines kept)."""
    with open_bytes(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        header = next((row for row in csv.reader(text) if row), None)
    if not header:
        raise InputError(f"{path}: empty file (no header row)")
    for index, name in enumerate(header):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            byte = ord(name[exc.start]) - 0xDC00
            raise InputError(
                f"{path}: header, column {index + 1}: not UTF-8 (byte 0x{byte:02x}); "
                "re-encode the file as UTF-8"
            ) from None
    return header
