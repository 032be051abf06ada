"""One writer per output: ``OUTPUT/.lock`` holds the running writer's pid, host and start."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from batchgen.atomic import create_new
from batchgen.errors import CheckpointError
from batchgen.store.layout import LOCK_FILE


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _process_start(pid) in (None, started)


def lock_record() -> dict[str, Any]:
    """This process's lock record: its pid, host and start (a reused pid is told apart)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _process_start(os.getpid()),
    }


def left_by_dead_run(holder: Mapping[str, Any]) -> bool:
    """Whether a lock record is a killed run's: written on this host by a process that is gone
    (another host's is taken as live: its processes cannot be seen from here)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname():
        return False
    return not _alive(pid, holder.get("started"))


@contextlib.contextmanager
def output_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory/.lock`` for the block; a lock left by a dead process is taken over."""
    lock = directory / LOCK_FILE
    me = lock_record()
    tmp = directory / f".lock.{os.getpid()}.tmp"
    try:
        with os.fdopen(create_new(tmp), "w") as f:  # never through a link planted there
            f.write(json.dumps(me))
    except OSError as exc:
        raise CheckpointError(
            f"{directory}: cannot write here ({exc.strerror}); fix the permissions or choose "
            "another output directory"
        ) from None
    try:
        for _ in range(3):
            try:
                os.link(tmp, lock)  # atomic: the lock is whole or absent, never half written
                break
            except FileExistsError:
                _take_over_if_stale(lock)
        else:
            raise CheckpointError(f"{lock}: could not take the lock; retry")
    finally:
        tmp.unlink(missing_ok=True)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def lock_holder(directory: Path) -> dict[str, Any] | None:
    """The running writer's lock record (pid, host, started), or None when no live process
    holds the lock: none, or one left by a killed run (on another host it is taken as live)."""
    try:
        holder = json.loads((directory / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return None
    return None if left_by_dead_run(holder) else holder


def _take_over_if_stale(lock: Path) -> None:
    try:
        holder = json.loads(lock.read_text())
    except FileNotFoundError:
        return  # released meanwhile: try again
    except (OSError, ValueError):
        holder = {}
    pid, where = holder.get("pid"), holder.get("host")
    if left_by_dead_run(holder):
        lock.unlink(missing_ok=True)  # its process is gone
        return
    if not isinstance(pid, int):
        raise CheckpointError(f"{lock}: unreadable lock file; if no run is using it, delete it")
    raise CheckpointError(
        f"{lock.parent}: another run (pid {pid} on {where}) is writing this output; "
        "wait for it, or delete the lock file if that run is gone"
    )
