"""The seam between the pipeline and the calls: which rows, and where their answers go,
apart from how the calls are made.

The runner (:mod:`batchgen.run.runner`) reads rows, renders them into :class:`Work` and hands them
to a :class:`Backend` as an async stream; the backend makes the calls its own way and tells the
:class:`Sink` what became of each row and what each call cost. The runner's writer journals all of
it, and its stop control (:class:`~batchgen.backends.stopping.StopControl`, given to the backend
when it is built) says when to stop taking rows and when to end the calls in flight.

Both are built from one :class:`RunContext` (what every backend runs with, built once by the
runner) and build their client with :func:`~batchgen.gemini.connect.client_for`.

Two backends implement it: :class:`~batchgen.backends.online.backend.OnlineBackend` (a
``generateContent`` call per row, at the rate and concurrency the limits allow) and
:class:`~batchgen.backends.batch.backend.BatchBackend` (JSONL files submitted as Batch Mode jobs,
polled, collected), which reports the rows it collects through the same sink.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from batchgen.backends.online.caller import CallEvents
from batchgen.backends.stopping import StopControl
from batchgen.gemini.caches import CacheUse
from batchgen.plan import Plan
from batchgen.pricing.budget import Budget
from batchgen.records import Outage, Outcome, Work
from batchgen.store.outdir import OutputDir

__all__ = ["Backend", "Gauges", "RunContext", "Sink"]


@dataclass(frozen=True)
class RunContext:
    """What every backend runs with: the plan (and its job), the key, the run's budget, id,
    stop control and output directory. The runner builds one; a backend's own options are
    its constructor's keywords."""

    plan: Plan
    api_key: str
    budget: Budget
    run_id: str
    stop: StopControl
    out: OutputDir
    cache: CacheUse | None = None  # the run's context cache, while the API takes it


class Sink(CallEvents, Protocol):
    """Where a backend's results go: every row's outcome, every call's cost, as they happen.

    From :class:`~batchgen.backends.online.caller.CallEvents`: ``requested()`` for each request
    sent, ``billed(entry)`` for each call that returned usage (before the row ends, so the ledger
    holds it even if the run is killed), ``server_delay(delay, asked)`` when the server asks to
    wait.
    """

    async def outcome(self, outcome: Outcome) -> None:
        """A row ended: its result rows, or its failure record. Exactly once a row."""
        ...

    async def journaled(self) -> None:
        """Return once everything reported so far is in the journal on disk (a backend that
        records its own progress elsewhere, as Batch Mode does, writes it only after this)."""
        ...


@dataclass(frozen=True)
class Gauges:
    """What a backend shows of its pace, for progress and run records (None: not known)."""

    concurrency: int | None = None  # calls it lets be in flight now
    latency_p90: float | None = None  # seconds, over its recent calls
    outage: Outage | None = None  # an outage it is waiting out (no new rows meanwhile)


class Backend(Protocol):
    """Makes the calls for a stream of rows.

    ``run`` takes rows from ``works`` until it ends or the run stops taking rows (its
    StopControl's ``stopping``), reports each row it finishes to ``sink.outcome``, and returns
    once no call is in flight. A row it took and did not finish (the run stopped first) is
    simply not reported: the runner counts it as remaining, and the next run resumes it.
    Errors that stop the run go to the StopControl with one line, never out of ``run``.
    """

    async def run(self, works: AsyncIterator[Work], sink: Sink) -> None: ...

    def gauges(self) -> Gauges: ...
