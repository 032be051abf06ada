"""A file written whole or not at all: temporary name, fsync, rename, fsync the folder.

A file batchgen creates or replaces whole (part files, ``job.json``, batch chunk files) goes
through :func:`atomic_file`, so after a kill or a crash it holds its old content or its new
content, never half of each, and its new name survives a power cut (the folder is fsynced after
the rename). Files that only grow (the journal, ``runs.jsonl``, ``batches.jsonl``) are appended
to and fsynced by their owners. It sits at the bottom of the layers so that every layer that
writes files (store, gemini, backends) can use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def temporary_name(path: Path) -> Path:
    """Where :func:`atomic_file` writes ``path`` before the rename (``.<name>.tmp`` beside it)."""
    return path.with_name(f".{path.name}.tmp")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` through the yielded binary file; it appears, whole, when the block ends.

    If the block raises (or the fsync or the rename fails), the temporary file is removed and
    ``path`` keeps its old content (or stays absent). The folder must exist. A temporary file
    left by a killed process is overwritten.
    """
    tmp = temporary_name(path)
    try:
        with tmp.open("wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` through :func:`atomic_file`."""
    with atomic_file(path) as sink:
        sink.write(data)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (new or renamed files) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
