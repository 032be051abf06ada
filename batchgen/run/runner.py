"""Run a job: checks first, then a bounded async pipeline, reader → backend → writer.

The reader renders rows into request bodies and puts them on a bounded queue; a backend
(:mod:`batchgen.backends.base`; today :class:`~batchgen.backends.online.backend.OnlineBackend`,
which dispatches each row through :class:`~batchgen.backends.online.caller.RowCaller` at the
concurrency the limits allow) takes them as a stream and reports each row's outcome and each call's
cost; one writer puts every outcome and ledger entry in the journal as it arrives and compacts it
into part files on a schedule (:mod:`batchgen.store.writer`). Every queue is bounded, so memory does
not grow with the input.

No task dies silently: an error that belongs to one row is that row's failure record; anything
else stops the run through :class:`~batchgen.backends.stopping.StopControl` with one line, and the
writer keeps draining so that nothing already answered is lost. After any run every row it
considered is in results, in errors, or counted in ``rows_remaining``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from batchgen._version import __version__
from batchgen.backends.base import Backend, RunContext
from batchgen.backends.batch.backend import BatchBackend
from batchgen.backends.online.backend import OnlineBackend
from batchgen.backends.stopping import StopControl
from batchgen.errors import BatchgenError, CheckpointError, InputError, InternalError, JobError
from batchgen.gemini.caches import CacheUse
from batchgen.input.reader import Scan
from batchgen.job.spec import Job
from batchgen.keys import count_contained
from batchgen.plan import Plan, plan_job
from batchgen.pricing.budget import Budget, Pricer
from batchgen.records import REUSED, Billed, DoneState, Outcome, Work
from batchgen.run.batch_cache import BatchRunCache
from batchgen.run.caching import RunCache
from batchgen.run.dedupe import DedupeSink, Twins, leaders
from batchgen.run.idcheck import check_ids
from batchgen.run.progress import NoProgress, Progress, Snapshot
from batchgen.run.ray_engine import RayBackend, require_ray
from batchgen.run.summary import RunSummary
from batchgen.store.jobfile import check_fingerprint
from batchgen.store.outdir import OutputDir
from batchgen.store.remote import open_output
from batchgen.store.runs import append_run_record
from batchgen.store.writer import FRAME_SECONDS, RunWriter

__all__ = ["RunOptions", "RunSummary", "arun_job", "run_job"]

READ_CHUNK = 64  # rows rendered per hop to the reader thread
QUEUED = 4 * READ_CHUNK  # rendered rows waiting for the backend (memory stays bounded)
NOTE_AFTER = 1.0  # a server delay at least this long is shown in the progress output
NOTE_SHOWN = 30.0  # seconds a note said once stays on the progress line
T = TypeVar("T")


@dataclass(frozen=True)
class RunOptions:
    """How to run a job, beyond the job file."""

    api_key: str
    limit: int | None = None  # consider only the first N input rows
    fresh: bool = False  # move the existing output aside and start over
    skip_failed: bool = False  # do not retry rows recorded as failed by earlier runs
    grace_seconds: float = 30.0  # after a signal, how long calls in flight may take
    unreachable_after: int = 0  # calls in a row that reach no server stop the run (0: auto)
    prices: Pricer | None = None  # a PriceTable: costs in the summary and records
    max_cost: float | None = None  # USD this run may spend; needs prices for the model
    time_budget: float | None = None  # seconds, from the start of the run
    progress: Progress | None = None  # where progress goes (batchgen.run.progress.choose)
    handle_signals: bool = True  # SIGINT/SIGTERM stop the run cleanly (main thread only)
    wait: bool = True  # tier "batch": wait for the batches (False: submit, exit pending)
    engine: str = "local"  # "ray": the calls made by Ray actors under one quota (ray_engine)
    ray_address: str | None = None  # the Ray cluster to join (None: a local instance)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end, also from inside a running event loop (a notebook, an
    async service): there it runs on its own loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1, thread_name_prefix="batchgen") as pool:
        return pool.submit(asyncio.run, coro).result()


def run_job(job: Job, options: RunOptions) -> RunSummary:
    """Run a job until every row is done or failed; raise a BatchgenError if it cannot.

    An error raised after the run started carries ``summary`` (what was done and saved).
    """
    return run_sync(arun_job(job, options))


async def arun_job(job: Job, options: RunOptions) -> RunSummary:
    """:func:`run_job`, for callers with an event loop of their own."""
    started = time.monotonic()
    _check_engine(job, options)
    plan, scan = await asyncio.to_thread(_scan, job)
    max_output = job.generation.get("maxOutputTokens")
    budget = Budget(options.prices, job.model.name, options.max_cost, max_output)
    out = await asyncio.to_thread(open_output, job.output.directory, False)
    lock = out.lock()
    await asyncio.to_thread(_enter, out, lock)
    try:
        try:
            moved, folded, state = await asyncio.to_thread(_open_output, job, out, options.fresh)
            await asyncio.to_thread(check_ids, plan.reader, scan, out, state, options.limit)
        except CheckpointError as exc:
            raise out.named(exc) from None
        run = _Run(plan, options, out, state, budget, started, scan)
        run.summary.moved_aside, run.summary.folded = moved, folded
        return await run.main()
    finally:
        lock.__exit__(None, None, None)


def _check_engine(job: Job, options: RunOptions) -> None:
    """The engine exists, is installed, and can run the job's tier (before anything is read)."""
    if options.engine == "local":
        return
    if options.engine != "ray":
        raise JobError(f"--engine: {options.engine!r} is not an engine (local or ray)")
    require_ray()
    if job.model.tier == "batch":
        raise JobError(
            f'{job.path}: model.tier = "batch" runs on Batch Mode, not on Ray; '
            "run it without --engine ray"
        )


def _scan(job: Job) -> tuple[Plan, Scan]:
    plan = plan_job(job)
    scan = plan.reader.scan()
    pa.default_memory_pool().release_unused()  # the scan's columns are not needed any more
    if scan.rows == 0:
        raise InputError(f"{job.input.path}: no rows (the file has only a header)")
    return plan, scan


def _rows_todo(scan: Scan, state: DoneState, limit: int | None, skip_failed: bool) -> int:
    """Rows of the input (up to ``limit``) not done yet: exact with an id column."""
    rows = min(scan.rows, limit or scan.rows)
    skip = np.union1d(state.done, state.failed) if skip_failed else state.done
    if scan.id_keys is None:  # matched by request hash, known only once rendered
        return max(0, rows - len(skip))
    return rows - count_contained(skip, scan.id_keys, rows)


def _enter(out: OutputDir, lock: contextlib.AbstractContextManager[None]) -> None:
    try:
        out.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(
            f"{out.path}: cannot use the output directory: {exc.strerror}"
        ) from None
    lock.__enter__()


def _open_output(job: Job, out: OutputDir, fresh: bool) -> tuple[Any, int, DoneState]:
    """With the lock held: set aside, prepare, check the job, fold a killed run's journal."""
    out.pull()
    moved = out.start_fresh() if fresh else None
    out.prepare()
    check_fingerprint(job, out.path, __version__)
    folded = out.fold_journal()
    out.publish()
    return moved, folded, out.done_state("row_id" if job.input.id_column else "request_hash")


class _Books:
    """Where the backend's reports go (its :class:`~batchgen.backends.base.Sink`): every outcome and
    ledger entry into the journal as it arrives, compacted on schedule, and into the summary."""

    def __init__(
        self, plan: Plan, out: OutputDir, summary: RunSummary, budget: Budget, stop: StopControl
    ) -> None:
        self.out, self.summary, self.budget, self.stop = out, summary, budget, stop
        self.writer = RunWriter(out, summary.run_id, plan.layout.schema, plan.job.output)
        self.outcomes: asyncio.Queue[Outcome | Billed | object] = asyncio.Queue(QUEUED)
        self.broken = False  # the output cannot be written: drain, write nothing more
        self.note, self.note_until = "", 0.0

    # --- what the backend tells the run (batchgen.backends.base.Sink) -------------------------

    async def outcome(self, outcome: Outcome) -> None:
        await self.outcomes.put(outcome)

    def requested(self) -> None:
        self.summary.requests += 1

    async def billed(self, entry: Billed) -> None:
        if entry.outcome == REUSED:
            self.summary.rows_reused += 1
        self.summary.billed(entry.answer.usage, entry.answer.model_version)
        self.summary.cost = self.budget.cost
        await self.outcomes.put(entry)

    def server_delay(self, delay: float, asked: float | None) -> None:
        if delay < NOTE_AFTER:
            return
        capped = asked is not None and asked > delay
        why = f"{asked:.0f} s, capped by retry.max_server_delay_seconds" if capped else "it"
        self.note = f"waiting {delay:.0f} s: the server asked for {why}"
        self.note_until = time.monotonic() + delay

    async def journaled(self) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.outcomes.put(done)
        await done

    def tell(self, note: str) -> None:
        """A note said once: in the summary, and on the progress line for a while."""
        if note not in self.summary.notes:
            self.summary.notes.append(note)
            self.note, self.note_until = note, time.monotonic() + NOTE_SHOWN

    def show(self, note: str) -> None:
        """A note that stays until replaced (a backend's own state, e.g. its batches)."""
        self.note, self.note_until = note, float("inf") if note else 0.0

    def current_note(self) -> str:
        return self.note if time.monotonic() < self.note_until else ""

    # --- the writer task -----------------------------------------------------------------

    async def write(self, shown: Callable[[], None]) -> None:
        """Journal everything until None arrives, then call ``shown`` (the ticker shows
        progress every frame meanwhile)."""
        last = False
        while not last:
            items = [await self.outcomes.get()]
            while not self.outcomes.empty():
                items.append(self.outcomes.get_nowait())
            for item in items:
                last = last or item is None
                self._take(item)
            waiting = [i for i in items if isinstance(i, asyncio.Future)]
            if not self.broken:
                await self._commit(last, bool(waiting))
            for future in waiting:  # journaled(): what came before is on disk (or never will be)
                if not future.done():
                    future.set_result(None)
        shown()

    def _take(self, item: object) -> None:
        if isinstance(item, Billed):
            self.writer.add_usage(item.to_row())
        elif isinstance(item, Outcome):
            self.summary.finished(item)
            self.writer.add_rows(item.rows, item.failed)

    async def _commit(self, last: bool, now: bool = False) -> None:
        try:
            if last or now or self.writer.frame_due():
                self._unfit(await asyncio.to_thread(self.writer.commit))
            if last or self.writer.compaction_due():
                await asyncio.to_thread(self.writer.compact)
        except Exception as exc:  # the disk, or a bug: stop paying for answers we cannot keep
            self.broken = True
            if not isinstance(exc, BatchgenError):
                exc = InternalError(f"{self.out.path}: cannot write: {type(exc).__name__}: {exc}")
            self.stop.fail(exc, "disk")

    def _unfit(self, records: list[dict[str, Any]]) -> None:
        """Answers that did not fit their columns became failure records: count them so."""
        for message in {r["row_id"]: r["message"] for r in records}.values():
            self.summary.rows_done -= 1
            self.summary.finished(Outcome([], failed=True, category="output_type", message=message))


class _Run:
    """One run's pipeline: reader → backend → writer (:class:`_Books`), and its records."""

    def __init__(
        self,
        plan: Plan,
        options: RunOptions,
        out: OutputDir,
        state: DoneState,
        budget: Budget,
        started: float,
        scan: Scan,
    ) -> None:
        self.plan, self.job, self.options, self.out = plan, plan.job, options, out
        self.state, self.budget, self.started = state, budget, started
        self.progress = options.progress or NoProgress()
        rows_total = min(scan.rows, options.limit or scan.rows)
        # for progress, its ETA and what remains
        self.rows_todo = _rows_todo(scan, state, options.limit, options.skip_failed)
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.summary = RunSummary(output=out.path, run_id=self.run_id, rows_total=rows_total)
        self.stop = StopControl(out.path, options.grace_seconds)
        self.books = _Books(plan, out, self.summary, budget, self.stop)
        self.work: asyncio.Queue[Work | None] = asyncio.Queue(maxsize=QUEUED)
        self.backend = self._backend(budget)
        caches = BatchRunCache if self.job.model.tier == "batch" else RunCache
        self.cache = caches(plan, options.api_key, out, options.prices, budget, self.run_id,
                            self.books.tell, self.books.billed)  # fmt: skip
        self.emitted = 0  # rows the reader handed on (to the backend, or as template failures)
        self.exhausted = False  # the reader reached the end of the input (or the limit)

    def _backend(self, budget: Budget, cache: CacheUse | None = None) -> Backend:
        """Batch Mode for a ``tier = "batch"`` job; else calls one by one."""
        o = self.options
        ctx = RunContext(self.plan, o.api_key, budget, self.run_id, self.stop, self.out, cache)
        if self.job.model.tier == "batch":
            return BatchBackend(ctx, wait=o.wait, note=self.books.show)
        if o.engine == "ray":
            return RayBackend(ctx, o.ray_address, note=self.books.tell)
        return OnlineBackend(ctx, o.unreachable_after, note=self.books.tell)

    async def main(self) -> RunSummary:
        started_at = datetime.now(UTC)
        await asyncio.to_thread(append_run_record, self.out.path, self._record("start", started_at))
        await asyncio.to_thread(self.out.publish)
        writer = asyncio.create_task(self.books.write(self._show))
        ticker = asyncio.create_task(self._tick())
        try:
            with self.stop.signal_handlers(self.options.handle_signals):
                await self._run_calls(ticker)
                await self.books.outcomes.put(None)
                await writer
                await self._finish(started_at)
        finally:  # also on a failure or an interrupt: no cache left billing storage
            if not writer.done():
                writer.cancel()
            await asyncio.shield(self.cache.finish(journal=False))
        if self.stop.reason is not None:
            self.stop.reason.summary = self.summary
            raise self.stop.reason
        return self.summary

    async def _run_calls(self, ticker: asyncio.Task[None]) -> None:
        """The context cache (if any), then the reader and the backend until they end."""
        keeper: asyncio.Task[None] | None = None
        use = await self.cache.start(self.rows_todo, self.summary.moved_aside)
        if isinstance(self.backend, RayBackend):  # joined Ray already: given the cache instead
            self.backend.cache = use
        elif use is not None:
            self.backend = self._backend(self.budget, use)
        if use is not None:
            over = functools.partial(self.stop.halt, by="max_cost")  # its storage crossed the cap
            keeper = asyncio.create_task(self.cache.keep_alive(over))
        reader = asyncio.create_task(self.stop.guard("reader", self._read()))
        calls = await self._calls()
        backend = asyncio.create_task(self.stop.guard("backend", calls))
        self.stop.watch_time_budget(self.options.time_budget, self.started)
        await asyncio.gather(backend, return_exceptions=True)
        self.stop.end()
        tasks = [t for t in (reader, ticker, keeper) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.cache.finish()  # deleted, its storage in the ledger before the writer ends

    async def _calls(self) -> Coroutine[Any, Any, None]:
        """The backend's run over the rendered rows; with ``output.dedupe``, over the distinct
        requests only, the twins answered by the sink (:mod:`batchgen.run.dedupe`)."""
        if not self.job.output.dedupe:
            return self.backend.run(self._works(), self.books)
        twins = Twins(self.plan, self.run_id)
        if self.job.input.id_column is not None:  # without one, done twins are skipped already
            await asyncio.to_thread(twins.earlier, self.out)
        sink = DedupeSink(self.books, twins)
        return self.backend.run(leaders(self._works(), sink), sink)

    async def _finish(self, started_at: datetime) -> None:
        """Count what remains, fold the failure records, append the run's end record."""
        s = self.summary
        s.cost = self.budget.cost
        s.parts = self.books.writer.parts
        finished = s.rows_done + s.rows_failed
        in_queue = max(0, self.emitted - finished)
        s.rows_remaining = in_queue if self.exhausted else max(in_queue, self.rows_todo - finished)
        if s.rows_remaining and self.stop.reason is None:  # never report success with rows left
            self.stop.halt(
                InternalError(
                    f"{self.out.path}: {s.rows_remaining} rows were not attempted; results so "
                    "far are saved; rerun to resume (and please report this)"
                ),
                "internal",
            )
        s.stopped_by = self.stop.by
        try:
            if not self.books.broken:
                await asyncio.to_thread(self.out.compact_errors, self.run_id)
            await asyncio.to_thread(
                append_run_record, self.out.path, self._record("end", started_at)
            )
            await asyncio.to_thread(self.out.publish)
        except BatchgenError as exc:
            self.stop.halt(exc, "disk")
        s.seconds = time.monotonic() - self.started
        self.progress.close(self._snapshot())

    def _record(self, event: str, started_at: datetime) -> dict[str, Any]:
        """A run record: what ran and what it did; never the key or the base URL."""
        s = self.summary
        record: dict[str, Any] = {
            "event": event,
            "run_id": self.run_id,
            "job": self.job.name,
            "model": self.job.model.name,
            "started_at": started_at.isoformat(),
            "rows_total": s.rows_total,
            "batchgen_version": __version__,
        }
        if event == "end":
            reason = self.stop.reason
            record |= {
                "ended_at": datetime.now(UTC).isoformat(),
                "rows_done": s.rows_done,
                "rows_failed": s.rows_failed,
                "rows_skipped": s.rows_skipped,
                "rows_remaining": s.rows_remaining,
                "requests": s.requests,
                "rows_reused": s.rows_reused,
                "tokens": dict(s.usage),
                "failures": dict(s.failures),
                "answered_by": dict(s.answered_by),
                "cost_usd": s.cost,
                "exit_code": reason.exit_code if reason is not None else s.exit_code,
                "stopped_by": self.stop.by,
                "stopped": str(reason) if reason is not None else None,
            }
            gauges = self.backend.gauges()
            record["concurrency"] = gauges.concurrency
            record["latency_p90_s"] = gauges.latency_p90 and round(gauges.latency_p90, 3)
        return record

    # --- the pipeline -----------------------------------------------------------------

    async def _read(self) -> None:
        """Feed the backend; a bad input stops the reading, not the rows already queued."""
        counts: dict[str, int] = {"skipped": 0}
        works = self.plan.works(self.state, self.options.limit, self.options.skip_failed, counts)
        try:
            while not self.stop.stopping.is_set():
                chunk = await asyncio.to_thread(lambda: list(itertools.islice(works, READ_CHUNK)))
                if not chunk:
                    self.exhausted = True
                    break
                for item in chunk:
                    self.emitted += 1
                    if isinstance(item, Outcome):  # a row that failed to render
                        await self.books.outcome(item)
                    else:
                        await self.work.put(item)
        except BatchgenError as exc:
            self.stop.halt(exc, "input")
        except Exception as exc:  # the input failed under us: stop taking rows, keep the rest
            self.stop.halt(InputError(f"{self.job.input.path}: cannot read: {exc}"), "input")
        finally:
            self.summary.rows_skipped = counts["skipped"]
        await self.work.put(None)  # not reached when cancelled

    async def _works(self) -> AsyncIterator[Work]:
        """The rendered rows, as the backend takes them, until the reader is done."""
        while (work := await self.work.get()) is not None:
            yield work

    async def _tick(self) -> None:
        """Wake the writer on time, and show progress even while nothing completes."""
        while True:
            await asyncio.sleep(FRAME_SECONDS)
            await self.books.outcomes.put(_TICK)
            self._show()

    def _show(self) -> None:
        self.progress.update(self._snapshot())

    def _snapshot(self) -> Snapshot:
        s = self.summary
        gauges = self.backend.gauges()
        return Snapshot(
            rows_todo=self.rows_todo,
            rows_done=s.rows_done,
            rows_failed=s.rows_failed,
            tokens=s.usage["total"],
            cost=self.budget.cost,
            elapsed=time.monotonic() - self.started,
            note=self.books.current_note(),
            concurrency=gauges.concurrency,
            latency_p90=gauges.latency_p90,
            outage=gauges.outage,
        )


_TICK = object()  # wakes the writer so that a quiet run still writes on time
