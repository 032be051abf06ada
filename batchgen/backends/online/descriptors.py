"""Room for connections under the open-file limit (``ulimit -n``).

Each call in flight holds a socket, and a socket is a file descriptor. macOS starts shells at a
soft limit of 256, containers and cron often at 1,024, while automatic concurrency may want
several hundred calls in flight: past the limit, connections fail with "Too many open files".
So, as servers do, the run first raises its soft limit toward the hard one (only as far as it
needs), then keeps the calls in flight, and the connection pool, below what is left once the
descriptors already open and a reserve (the journal, part files, the input, the resolver) are
counted. POSIX only: elsewhere there is no such limit to read, and nothing changes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

RESERVE = 64  # descriptors kept for the run's own files beside its connections


@dataclass(frozen=True)
class FileRoom:
    """How many connections the open-file limit leaves room for, and that limit."""

    connections: int
    limit: int

    def note(self) -> str:
        """The one line that says the limit holds the calls in flight lower than asked."""
        return (
            f"at most {self.connections} calls in flight: the open-file limit (ulimit -n) is "
            f"{self.limit}; raise it to allow more"
        )


def file_room(wanted: int) -> FileRoom | None:
    """Raise the soft open-file limit toward the hard one, as far as ``wanted`` connections
    need; return the room left, or None when there is no limit to heed (Windows, unlimited)."""
    if sys.platform == "win32":
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = _open_descriptors()
    needed = wanted + in_use + RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # macOS refuses past its own kern.maxfilesperproc
            pass
    if soft == resource.RLIM_INFINITY:
        return None
    return FileRoom(max(1, soft - in_use - RESERVE), soft)


def _open_descriptors() -> int:
    """Descriptors this process holds now (Linux and macOS list them; else a guess)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return RESERVE
