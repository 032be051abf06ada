"""What a run tells about its progress: a :class:`Snapshot`, given to a :class:`Progress`.

The runner calls ``update`` often (at least every few tenths of a second, also while nothing
completes) and ``close`` once. The command line's reporters (a tqdm bar on a terminal, periodic
lines or JSON records for cron) live in :mod:`batchgen.cli.progress`; the library's (a bar in a
notebook, quiet elsewhere by default) in :mod:`batchgen.run.notebook`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from batchgen.records import Outage


@dataclass(frozen=True)
class Snapshot:
    """The figures a progress report shows."""

    rows_todo: int  # rows this run has to do (input minus already done)
    rows_done: int
    rows_failed: int
    tokens: int
    cost: float | None  # None when the model has no price
    elapsed: float
    note: str = ""  # what the run is waiting for, when it waits (e.g. on the server)
    concurrency: int | None = None  # calls the backend lets be in flight now (its target)
    latency_p90: float | None = None  # seconds, over the backend's recent calls
    outage: Outage | None = None  # the outage the run waits out: failing since, the last error


class Progress(Protocol):
    """Receives snapshots; the runner calls ``update`` often and ``close`` once."""

    def update(self, snap: Snapshot) -> None: ...

    def close(self, snap: Snapshot) -> None: ...


class NoProgress:
    """Nothing (the library's default, and --quiet)."""

    def update(self, snap: Snapshot) -> None:
        pass

    def close(self, snap: Snapshot) -> None:
        pass
