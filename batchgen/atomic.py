"""A file written whole or not at all: temporary name, fsync, rename, fsync the folder.

A file batchgen creates or replaces whole (part files, ``job.json``, batch chunk files) goes through
:func:`atomic_file`, so after a kill or a crash it holds its old content or its new content, never
half of each, and its new name survives a power cut (the folder is fsynced after the rename). Files
that only grow (the journal, ``runs.jsonl``, ``batches.jsonl``) are appended to and fsynced by their
owners (``batchgen.store.files.open_append``). Nothing is written through a symbolic link batchgen
did not make (:func:`create_new`). It sits at the bottom of the layers so that every
layer that writes files (store, gemini, backends) can use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# A folder that others can write to (a shared OUTPUT) may hold a link, planted under a name
# batchgen writes, to a file elsewhere: a file created with O_EXCL is never written through one.
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC


def temporary_name(path: Path) -> Path:
    """Where :func:`atomic_file` writes ``path`` before the rename (``.<name>.tmp`` beside it)."""
    return path.with_name(f".{path.name}.tmp")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` through the yielded binary file; it appears, whole, when the block ends.

    If the block raises (or the fsync or the rename fails), the temporary file is removed and
    ``path`` keeps its old content (or stays absent). The folder must exist. A temporary file
    left by a killed process (or a link planted under its name) is replaced, never written
    through; the rename replaces a link at ``path`` itself, not the file it points to.
    """
    tmp = temporary_name(path)
    try:
        with os.fdopen(create_new(tmp), "wb") as sink:
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


def create_new(path: Path) -> int:
    """A descriptor on ``path`` created anew for writing: whatever is there (a killed run's
    file, a link) is removed first, and O_EXCL refuses to follow a link made meanwhile."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return os.open(path, _NEW, 0o644)
