"""An input file's bytes, on disk or in an object store, plain or gzip-compressed.

A file in a store (``s3://``, ``gs://``) is a :class:`StoreFile`, opened through pyarrow's
filesystems: read as one streaming GET (CSV, JSON Lines) or by ranges (Parquet's footer and row
groups), never copied to disk first. gzip is known by the file's first two bytes, not its name.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.fs as pafs

from batchgen.errors import INPUT, InputError
from batchgen.job.location import StoreError, open_store, said, store_url

GZIP_MAGIC = b"\x1f\x8b"
BUFFER = 1 << 20


class StoreFile:
    """An input file in an object store; ``str()`` is its URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = url.rstrip("/").rsplit("/", 1)[-1]
        try:
            self.fs, self.inner = open_store(url)
        except StoreError as exc:
            raise InputError(f"{url}: cannot open the store: {exc}") from None

    def __str__(self) -> str:
        return self.url

    def info(self) -> pafs.FileInfo:
        """What the store says of the object (a missing one is FileType.NotFound)."""
        try:
            return self.fs.get_file_info(self.inner)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{self.url}: cannot read: {said(exc)}") from None

    def stream(self) -> pa.NativeFile:
        return self.fs.open_input_stream(self.inner, compression=None)

    def random_access(self) -> pa.NativeFile:
        return self.fs.open_input_file(self.inner)


InputFile = Path | StoreFile


def input_file(path: Path) -> InputFile:
    """The input at ``path``: a store's object when it is a URL."""
    url = store_url(path)
    return Path(path) if url is None else StoreFile(url)


def stamp(file: InputFile) -> tuple[int, int]:
    """(size, modification time in ns): a cheap sign that the file changed under the reader."""
    if isinstance(file, Path):
        stat = file.stat()
        return stat.st_size, stat.st_mtime_ns
    info = file.info()
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(2, "no longer in the store")
    return info.size or 0, info.mtime_ns or 0


def head(file: InputFile, size: int = 4) -> bytes:
    """The first bytes of a file that is not missing, a folder, a device, or empty."""
    if isinstance(file, StoreFile):
        return _store_head(file, size)
    path = file
    if path.is_dir():
        return _refuse_dir(path)
    if not path.exists():
        raise InputError(f"{path}: input file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file (a pipe or device?); give a file")
    try:
        with path.open("rb") as f:
            return f.read(size)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def _refuse_dir(path: InputFile) -> bytes:
    raise InputError(f"{path}: is a directory; set input.path (or ", INPUT, ") to a file")


def _store_head(file: StoreFile, size: int) -> bytes:
    info = file.info()
    if info.type == pafs.FileType.Directory:
        return _refuse_dir(file)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{file}: input file not found in the store (check bucket and key)")
    try:
        with file.random_access() as f:
            return bytes(f.read(size))
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{file}: cannot read: {said(exc)}") from None


@contextlib.contextmanager
def arrow_input(file: InputFile) -> Iterator[str | pa.NativeFile]:
    """What pyarrow's readers take: a local plain file's path as it is, else a stream."""
    gzipped = head(file, 2) == GZIP_MAGIC
    if isinstance(file, Path) and not gzipped:
        yield str(file)
        return
    raw = pa.OSFile(str(file)) if isinstance(file, Path) else file.stream()
    with raw:
        if not gzipped:
            yield raw
            return
        with pa.CompressedInputStream(raw, "gzip") as unzipped:
            yield unzipped


@contextlib.contextmanager
def open_bytes(file: InputFile) -> Iterator[IO[bytes]]:
    """The file's bytes (decompressed when gzip) as a buffered Python stream; closed on leaving."""
    with arrow_input(file) as source:
        if isinstance(source, str):
            with open(source, "rb") as plain:
                yield plain
            return
        with io.BufferedReader(source, BUFFER) as buffered:
            yield buffered


def parquet_input(file: InputFile) -> str | pa.NativeFile:
    """What ``pyarrow.parquet.ParquetFile`` opens: a path, or a store's object by ranges."""
    return str(file) if isinstance(file, Path) else file.random_access()
