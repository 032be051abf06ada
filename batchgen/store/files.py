"""Writing in OUTPUT without leaving it: OUTPUT may be shared, and a link planted there under a
name batchgen writes (``runs.jsonl``, ``batches/batches.jsonl``, a folder) must not carry the
writes to a file elsewhere. Whole files are created anew (:func:`batchgen.atomic.create_new`);
the files that grow are opened here with O_NOFOLLOW.
"""

from __future__ import annotations

import os
from pathlib import Path

from batchgen.errors import CheckpointError

__all__ = ["linked", "open_append"]

_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC


def open_append(path: Path) -> int:
    """A descriptor appending to ``path`` (created if absent); a CheckpointError when ``path``
    is a symbolic link."""
    try:
        return os.open(path, _APPEND, 0o644)
    except OSError:
        if path.is_symlink():
            raise linked(path) from None
        raise


def linked(path: Path) -> CheckpointError:
    """The error for a symbolic link where batchgen writes."""
    return CheckpointError(
        f"{path} is a symbolic link; batchgen does not write through links it did not make: "
        "remove it"
    )
