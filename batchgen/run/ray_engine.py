"""``--engine ray``: the same run, with the calls made by Ray actors under one shared quota.

A thin layer over the backend seam (:mod:`batchgen.backends.base`): :class:`RayBackend` is a
backend like the online one. The driver (this process) keeps everything that writes: it reads and
renders the rows, decides how many calls may be in flight, and journals every outcome and ledger
entry through the runner's one writer, so the output, the journal, the failure records, the
ledger and the exit codes are the local engine's. Each row goes to a worker actor as one actor
call; the worker makes the row's calls (retries included) with the online backend's
:class:`~batchgen.backends.online.caller.RowCaller` and returns the row's outcome, the calls it
paid for and what the server asked for. Every worker's calls pass one quota
(:class:`~batchgen.backends.online.shared.QuotaKeeper` in one actor, leased in batches).

Why actors called per row rather than Ray Data's ``map_batches`` over the input: the driver then
knows exactly which rows are in flight. A killed worker loses only its calls in flight, and the
driver sends those rows again to another worker (a fresh one takes the dead one's place); a
killed driver takes its (non-detached) actors with it, and the journal holds every row it was
told of, so the next run pays again at most for the calls that were in flight. Ray Data, which
retries a failed block as a whole, would pay again for every row of the block, and its outputs
would still have to come back to one writer.

The run's context cache (:mod:`batchgen.run.caching`) is the driver's: it creates the cache,
records it, keeps it alive and deletes it, as the local engine does; each worker gets its name and
prefix (:class:`CacheTicket`) and sends its rows' calls with it through a
:class:`~batchgen.gemini.caches.CacheUse` of its own. A worker whose call the API refuses because
of the cache sends that row again uncached and goes uncached itself; its report says so, the
driver turns its own :class:`~batchgen.gemini.caches.CacheUse` off (said once), and every row it
sends after that tells its worker to go uncached: the other workers pay no refused call of their
own, only the rows already in flight on them may.

Ray is imported only here, and only when the engine is chosen; without it the engine is a
one-line error (exit 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from batchgen.backends.base import Gauges, RunContext, Sink
from batchgen.backends.media import MediaSender, media_sender
from batchgen.backends.online.caller import Pacing, RowCaller
from batchgen.backends.online.concurrency import ConcurrencyController, concurrency_for
from batchgen.backends.online.daily import DailyQuota
from batchgen.backends.online.rate import RateLimits
from batchgen.backends.online.shared import (
    Lease,
    LeaseAsk,
    QuotaKeeper,
    SharedLimits,
    TellingBreaker,
)
from batchgen.backends.stopping import RefusalWatch, StopControl, TransportWatch
from batchgen.errors import (
    BatchgenError,
    JobError,
    QuotaExhaustedError,
    RunStoppedError,
)
from batchgen.gemini.batch_client import BatchClient
from batchgen.gemini.caches import CacheUse
from batchgen.gemini.client import GeminiClient
from batchgen.gemini.connect import client_for
from batchgen.gemini.request import Prefix
from batchgen.job.spec import Job
from batchgen.plan import Plan
from batchgen.pricing.budget import Budget
from batchgen.records import Billed, Outcome, Work
from batchgen.redact import redact_url

__all__ = [
    "CacheTicket",
    "CallLog",
    "RayBackend",
    "RowReport",
    "quota_actor",
    "require_ray",
    "shared_pacing",
]

INSTALL = "pip install 'batchgen[ray]'"
LOST_MOST = 3  # a row whose worker died this many times stops the run (the row stays to do)
WORKER_CALLS = 4096  # calls one worker actor runs at once (async: they wait, not compute)


def require_ray() -> ModuleType:
    """The ``ray`` module, or the one-line error that says how to install it (exit 2)."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise JobError(f"--engine ray needs Ray: {INSTALL}") from None


def connect(ray: ModuleType, address: str | None) -> bool:
    """Join the cluster at ``address`` (None: a local instance); return whether we started it."""
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR"
        )
    except Exception as exc:  # Ray's own errors: no address, none there, versions that differ
        where = f"--ray-address {address}" if address else "--engine ray"
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JobError(f"{where}: cannot join or start Ray: {why}") from None
    return True


@dataclass(frozen=True)
class RowReport:
    """What a worker did for one row: its outcome, and every call it made and paid for."""

    outcome: Outcome | None  # None: the row stopped the run (``stop``) before it ended
    billed: list[Billed] = field(default_factory=list)
    requests: int = 0
    delays: list[tuple[float, float | None]] = field(default_factory=list)
    stop: BatchgenError | None = None
    by: str | None = None
    cache_refused: str | None = None  # why the API refused the context cache on this row


@dataclass(frozen=True)
class CacheTicket:
    """What a worker needs of the driver's context cache: its name and the prefix it holds."""

    name: str
    prefix: Prefix


class QuotaActor:
    """The Ray actor around the run's :class:`QuotaKeeper` (one per run, no CPU of its own)."""

    def __init__(self, rpm: float, tpm: float | None, per_day: int | None, used: int) -> None:
        self.keeper = QuotaKeeper(rpm, tpm, per_day, used)

    def lease(self, ask: LeaseAsk) -> Lease:
        return self.keeper.lease(ask)

    def rejected(self, delay: float | None, quota: str | None, sent_at: float, charged: int) -> int:
        return self.keeper.rejected(delay, quota, sent_at, charged)

    def outage(self, worker: str, opened: bool) -> int:
        return self.keeper.outage(worker, opened)

    def granted(self) -> int:
        return self.keeper.granted


def shared_pacing(job: Job, keeper: Any, out: Path) -> tuple[Pacing, StopControl]:
    """What a worker's calls pass: the quota actor ``keeper``'s limits and day's count, its
    own breaker and watches (their verdict in the returned StopControl's ``reason``)."""

    async def lease(ask: LeaseAsk) -> Lease:
        return cast(Lease, await keeper.lease.remote(ask))

    async def reject(delay: float | None, quota: str | None, at: float, charged: int) -> int:
        return cast(int, await keeper.rejected.remote(delay, quota, at, charged))

    async def outage(worker: str, opened: bool) -> int:
        return cast(int, await keeper.outage.remote(worker, opened))

    rpm, worker = job.limits.requests_per_minute, uuid.uuid4().hex[:12]
    limits = SharedLimits(lease, reject, rpm, outage=outage, worker=worker)
    stop = StopControl(out, 0.0)
    where = redact_url(job.model.base_url)
    watch = TransportWatch(stop, where, 20)
    refusals = RefusalWatch(stop, job.model.base_url, where, 20)
    told = limits.breaker_changed
    breaker = TellingBreaker(told, job.retry.outage_minutes, where=where, clock=time.time)
    controller = ConcurrencyController(limits.per_second, pinned=1)  # the driver's job
    day = DailyQuota(None)  # the keeper counts the day
    return Pacing(cast(RateLimits, limits), controller, breaker, day, watch, refusals), stop


def quota_actor(ray: ModuleType, job: Job, name: str, used: int = 0, **options: Any) -> Any:
    """Start the quota actor for ``job``'s limits (``used``: requests already sent today)."""
    spec = job.limits
    actor = ray.remote(QuotaActor).options(name=name, num_cpus=0, **options)
    return actor.remote(
        spec.requests_per_minute, spec.tokens_per_minute, spec.requests_per_day, used
    )


class CallLog:
    """A row's call events (:class:`~batchgen.backends.online.caller.CallEvents`), kept for its
    report."""

    def __init__(self) -> None:
        self.requests = 0
        self.entries: list[Billed] = []
        self.delays: list[tuple[float, float | None]] = []

    def requested(self) -> None:
        self.requests += 1

    async def billed(self, entry: Billed) -> None:
        self.entries.append(entry)

    def server_delay(self, delay: float, asked: float | None) -> None:
        self.delays.append((delay, asked))


class RowWorker:
    """A Ray actor that makes rows' calls: one client, one breaker, the shared quota."""

    def __init__(
        self,
        plan: Plan,
        api_key: str,
        run_id: str,
        keeper: Any,
        out: str,
        cache: CacheTicket | None = None,
    ) -> None:
        self.plan, self.api_key, self.run_id, self.keeper = plan, api_key, run_id, keeper
        self.out = Path(out)
        self.cache: CacheUse | None = None
        if cache is not None:  # the driver says the refusal, once for the run
            self.cache = CacheUse(plan.builder, cache.prefix, cache.name, lambda _: None)
        self._refusal_told = False
        self.media: MediaSender | None = None
        self._stack = contextlib.AsyncExitStack()
        self._ready: asyncio.Future[tuple[GeminiClient, Pacing]] | None = None
        self._told = False

    async def _start(self) -> tuple[GeminiClient, Pacing]:
        job = self.plan.job
        pacing, self.stop = shared_pacing(job, self.keeper, self.out)
        connections = job.limits.most_in_flight
        client = await self._stack.enter_async_context(
            client_for(job, self.api_key, GeminiClient, connections=connections)
        )
        # a media row's files are read (and uploaded when shared) here, where it is sent
        self.media = media_sender(self.plan, self.out, BatchClient(client.transport))
        return client, pacing

    async def call(self, work: Work, cached: bool = True) -> RowReport:
        """Make the row's calls; report its outcome and what they cost. ``cached`` false: the
        driver has turned the context cache off (another worker's call was refused)."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._start())
        client, pacing = await self._ready
        events = CallLog()
        budget = Budget(None, self.plan.job.model.name)  # the driver keeps the run's budget
        if self.cache is not None and not cached:
            self.cache.active = False
        caller = RowCaller(self.plan, client, pacing, budget, self.run_id, events,
                           media=self.media, cache=self.cache)  # fmt: skip
        outcome: Outcome | None = None
        stop: BatchgenError | None = None
        by: str | None = None
        try:
            outcome = await caller.call(work, 0)
        except QuotaExhaustedError as exc:
            stop, by = exc, "api"
        except RunStoppedError as exc:
            stop, by = exc, "outage"
        except BatchgenError as exc:
            stop, by = exc, "api"
        if stop is None and self.stop.reason is not None and not self._told:
            self._told = True  # the worker's watches saw every call fail the same way
            stop, by = self.stop.reason, self.stop.by
        refused = None
        if self.cache is not None and self.cache.why is not None and not self._refusal_told:
            self._refusal_told, refused = True, self.cache.why
        return RowReport(outcome, events.entries, events.requests, events.delays, stop, by, refused)


class _Pool:
    """The worker actors, replaced when one dies."""

    def __init__(self, make: Callable[[int], Any], size: int) -> None:
        self.make = make
        self._made = itertools.count()
        self.workers = [make(next(self._made)) for _ in range(size)]
        self._turn = itertools.count()

    def pick(self) -> Any:
        return self.workers[next(self._turn) % len(self.workers)]

    def replace(self, dead: Any) -> None:
        """A worker died: a fresh one takes its place (once, however many rows saw it die)."""
        for i, worker in enumerate(self.workers):
            if worker is dead:
                self.workers[i] = self.make(next(self._made))


class RayBackend:
    """The calls made by Ray worker actors under one quota actor (see the module)."""

    def __init__(
        self,
        ctx: RunContext,
        address: str | None = None,
        workers: int | None = None,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.ray = require_ray()
        self.ctx, self.plan, self.job = ctx, ctx.plan, ctx.plan.job
        self.stop, self.budget = ctx.stop, ctx.budget
        self.address, self.size = address, workers
        spec = self.job.limits
        self.limits = RateLimits(spec.requests_per_minute, spec.tokens_per_minute)
        self.controller = concurrency_for(spec, self.limits, None, note)
        self._rows: set[asyncio.Task[None]] = set()
        self.keeper: Any = None
        self.cache = ctx.cache  # the run's context cache (the runner may set it once created)
        # joined here, before the run installs its signal handlers: ray.init sets its own
        self.started = connect(self.ray, address)

    def gauges(self) -> Gauges:
        return Gauges(self.controller.target, self.controller.latency())

    async def run(self, works: AsyncIterator[Work], sink: Sink) -> None:
        """Send every row of ``works`` to a worker; return once none is in flight."""
        from batchgen.backends.online.backend import requests_today

        ray = self.ray
        spec = self.job.limits
        used = 0
        if spec.requests_per_day is not None:
            used = await asyncio.to_thread(requests_today, self.ctx.out, datetime.now(UTC))
        named = f"batchgen-{self.ctx.run_id}"  # the run's actors, by name (ray list actors)
        self.keeper = quota_actor(ray, self.job, f"{named}-quota", used)
        plan = _shippable(self.plan)
        actor = ray.remote(RowWorker)
        out = str(self.ctx.out.path)

        ticket = None
        if self.cache is not None:
            ticket = CacheTicket(self.cache.name, self.cache.prefix)

        def make(number: int) -> Any:
            name = f"{named}-worker-{number}"
            worker = actor.options(name=name, num_cpus=0, max_concurrency=WORKER_CALLS)
            ctx = self.ctx
            return worker.remote(plan, ctx.api_key, ctx.run_id, self.keeper, out, ticket)

        size = self.size or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.pool = _Pool(make, size)
        try:
            body = self.stop.guard("dispatcher", self._dispatch(works, sink))
            await asyncio.gather(self.stop.track(asyncio.create_task(body)))
            while self._rows:
                if self.stop.by == "outage":  # rows waiting out the outage: the next run's
                    for task in self._rows:
                        task.cancel()
                await asyncio.wait(set(self._rows), timeout=1.0)
        finally:
            for worker in self.pool.workers:
                ray.kill(worker)
            ray.kill(self.keeper)
            if self.started:
                ray.shutdown()

    async def _dispatch(self, works: AsyncIterator[Work], sink: Sink) -> None:
        async for work in works:
            slot = await self.controller.acquire()
            if self.stop.stopping.is_set():
                self.controller.release(slot)
                return
            row = self.stop.guard("worker", self._row(work, slot, sink))
            task = self.stop.track(asyncio.create_task(row))
            self._rows.add(task)
            task.add_done_callback(self._rows.discard)
            if self.stop.stopping.is_set():
                return

    async def _row(self, work: Work, slot: int, sink: Sink) -> None:
        """One row on a worker; a dead worker's row goes to another. Workers that keep dying
        (LOST_MOST times under one row) stop the run: the row stays to do, never dropped."""
        try:
            for _ in range(LOST_MOST):
                worker = self.pool.pick()
                self.controller.sending(slot)
                started = time.monotonic()
                try:
                    cached = self.cache is not None and self.cache.active
                    report: RowReport = await worker.call.remote(work, cached)
                except self.ray.exceptions.RayActorError as exc:
                    self.pool.replace(worker)
                    died = exc
                    continue
                self.controller.observe(time.monotonic() - started)
                await self._report(report, sink)
                return
        finally:
            self.controller.release(slot)
        why = str(died).strip().splitlines()[0] if str(died).strip() else type(died).__name__
        self.stop.halt(
            RunStoppedError(
                f"{self.ctx.out.path}: Ray workers keep dying ({LOST_MOST} under row "
                f"{work.row.row_id}: {why}); results so far are saved; rerun to resume"
            ),
            "ray",
        )

    async def _report(self, report: RowReport, sink: Sink) -> None:
        if report.cache_refused is not None and self.cache is not None:
            self.cache.refused(report.cache_refused)  # said once; the next rows go uncached
        for _ in range(report.requests):
            sink.requested()
        for entry in report.billed:
            self.budget.charge(entry.answer.usage, entry.tier)
            await sink.billed(entry)
        for delay, asked in report.delays:
            sink.server_delay(delay, asked)
        if report.stop is not None:
            self.stop.halt(report.stop, report.by or "api")
        if self.budget.cap is not None and self.budget.spent >= self.budget.cap:
            self.stop.halt(self.budget.reached(), "max_cost")
        if report.outcome is not None:
            await sink.outcome(report.outcome)


def _shippable(plan: Plan) -> Plan:
    """The plan a worker needs: the job, the validator, the output layout and the request
    builder (for the cached variant of a body); not the reader, which holds the open input, nor
    the templates, which the driver renders."""
    return replace(plan, reader=cast(Any, None), template=cast(Any, None))
