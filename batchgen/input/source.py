"""The seam between :class:`~batchgen.input.reader.InputReader` and a file format.

A format is one module with one class that implements :class:`Source` (today
:mod:`batchgen.input.csv` and :mod:`batchgen.input.parquet`), registered by one line in
:data:`batchgen.input.reader.FORMATS`. The reader does what every format shares: the checks that
the path is a readable, non-empty file, the columns a job needs, the pre-scan, the rows, the check
that the file did not change, and turning any stray pyarrow or OS error into an
:class:`~batchgen.errors.InputError`. A source only reads: names and types of columns, and record
batches whose values are valid (:func:`valid`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import pyarrow as pa

from batchgen.errors import InputError
from batchgen.input.files import InputFile
from batchgen.input.locate import describe_invalid, first_invalid

Batches = Iterator[tuple[int, pa.RecordBatch]]  # (0-based position of its first row, batch)


class Source(Protocol):
    """One input file in one format.

    Built from the file's path and the rows per record batch wanted (where the format lets the
    reader choose), without touching the file. Errors it can place are an
    :class:`~batchgen.errors.InputError` naming the file, and the row and column wherever they
    can be found; the reader turns the others (pyarrow's, the OS's) into one naming the file.
    """

    def check_head(self, head: bytes) -> None:
        """Refuse a file whose first bytes (one to four) show that it is in another format."""

    def column_names(self) -> list[str]:
        """The file's column names, in file order."""

    def schema(self, columns: list[str]) -> pa.Schema:
        """The Arrow types of ``columns``, as :meth:`batches` gives them."""

    def batches(self, columns: list[str]) -> Batches:
        """Only ``columns``, in non-empty record batches, each passed through :func:`valid`."""


# How a format's class is built: Source(path, batch_rows).
Opener = Callable[[InputFile, int], Source]


def valid(
    batch: pa.RecordBatch, position: int, path: InputFile, fix: str, where: str = ""
) -> pa.RecordBatch:
    """The batch, once every value in it is valid (strings UTF-8); else the first bad one.

    ``fix`` says what to do about a bad value in this format; ``where`` adds to the row's place.
    """
    try:
        batch.validate(full=True)
        return batch
    except pa.ArrowInvalid:
        pass
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        index = first_invalid(column)
        if index is not None:
            what = describe_invalid(column, index)
            raise InputError(
                f"{path}: row {position + index + 1:,}{where}, column {name!r}: {what}; " + fix
            )
    return batch  # pragma: no cover - the batch failed, so one of its columns does
