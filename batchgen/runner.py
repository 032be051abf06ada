"""Run a job: checks first, then a bounded async pipeline, reader → workers → writer.

The reader renders rows into request bodies and puts them on a queue of at most two per worker;
``concurrency`` workers send them through one ``aiohttp.ClientSession`` under an ``aiolimiter``
requests-per-minute limit, each row in its own retry loop (:mod:`batchgen.retry`); one writer
buffers the outcomes and writes a part file every ``flush_rows`` rows or ``flush_seconds``
seconds. Every queue is bounded, so memory does not grow with the input.

A run holds the output's lock, refuses an output written by a different job, skips what is
done, and on SIGINT/SIGTERM stops taking rows, lets the calls in flight finish within the grace
period, flushes, and raises :class:`RunStoppedError`. A second signal stops at once, after the
flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa

from batchgen import __version__
from batchgen.answers import Answer, AnswerError, Usage, parse_response, structured_value
from batchgen.budget import Budget, BudgetReachedError, Pricer
from batchgen.checkpoint import (
    DoneSet,
    append_run_record,
    check_fingerprint,
    compact_errors,
    output_lock,
    read_done,
    remove_temporaries,
    start_fresh,
)
from batchgen.client import ApiError, GeminiClient
from batchgen.errors import (
    BatchgenError,
    CheckpointError,
    InputError,
    RunStoppedError,
)
from batchgen.job import Job
from batchgen.limits import RateLimits
from batchgen.output import (
    ERRORS_DIR,
    ERRORS_SCHEMA,
    RESULTS_DIR,
    USAGE_DIR,
    USAGE_SCHEMA,
    PartWriter,
    error_row,
)
from batchgen.plan import Outcome, Plan, Work, plan_job
from batchgen.progress import NoProgress, Progress, Snapshot
from batchgen.retry import RetryPolicy

READ_CHUNK = 64  # rows rendered per hop to the reader thread
TRANSPORT_CATEGORIES = frozenset({"connection", "timeout"})


@dataclass(frozen=True)
class RunOptions:
    """How to run a job, beyond the job file."""

    api_key: str
    limit: int | None = None  # consider only the first N input rows
    fresh: bool = False  # move the existing output aside and start over
    skip_failed: bool = False  # do not retry rows recorded as failed by earlier runs
    grace_seconds: float = 30.0  # after a signal, how long calls in flight may take
    unreachable_after: int = 0  # consecutive transport failures that stop the run (0: auto)
    prices: Pricer | None = None  # batchgen.usage.PriceTable: costs in the summary and records
    max_cost: float | None = None  # USD this run may spend; needs prices for the model
    time_budget: float | None = None  # seconds, from the start of run_job
    progress: Progress | None = None  # where progress goes (batchgen.progress.choose)


@dataclass
class RunSummary:
    """What a run did."""

    output: Path
    run_id: str = ""
    rows_total: int = 0  # rows in the input (or --limit)
    rows_skipped: int = 0  # already done by an earlier run (or failed, with skip_failed)
    rows_done: int = 0
    rows_failed: int = 0
    output_rows: int = 0
    requests: int = 0
    usage: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    first_errors: dict[str, str] = field(default_factory=dict)  # category → first message
    parts: int = 0
    seconds: float = 0.0
    moved_aside: Path | None = None  # where --fresh moved the previous output
    cost: float | None = None  # USD billed by this run; None when the model has no price
    stopped_by: str | None = None  # signal, time_budget, max_cost, unreachable, api, input, disk

    @property
    def exit_code(self) -> int:
        return 1 if self.rows_failed else 0


_TICK = object()  # wakes the writer so that a quiet run still flushes on time


def run_job(job: Job, options: RunOptions) -> RunSummary:
    """Run a job until every row is done or failed; raise a BatchgenError if it cannot.

    An error raised after the run started carries ``summary`` (what was done and flushed).
    """
    started = time.monotonic()
    plan = plan_job(job)
    max_output = job.generation.get("maxOutputTokens")
    budget = Budget(options.prices, job.model.name, options.max_cost, max_output)
    total = plan.reader.scan().rows
    pa.default_memory_pool().release_unused()  # the scan's id column is not needed any more
    if total == 0:
        raise InputError(f"{job.input.path}: no rows (the file has only a header)")
    out = job.output.directory
    try:
        out.mkdir(parents=True, exist_ok=True)
        with output_lock(out):
            moved = start_fresh(out) if options.fresh else None
            remove_temporaries(out)
            check_fingerprint(job, out, __version__)
            rows = min(total, options.limit or total)
            run = _Run(plan, options, read_done(out), budget, started, rows)
            run.summary.moved_aside = moved
            return asyncio.run(run.main())
    except OSError as exc:
        raise CheckpointError(f"{out}: cannot use the output directory: {exc.strerror}") from None


class _Run:
    def __init__(
        self,
        plan: Plan,
        options: RunOptions,
        done: DoneSet,
        budget: Budget,
        started: float,
        rows_total: int,
    ) -> None:
        self.plan = plan
        self.budget = budget
        self.started = started
        self.progress = options.progress or NoProgress()
        already = done.ids if plan.job.input.id_column else done.hashes
        skipped = len(already) + (len(done.failed) if options.skip_failed else 0)
        self.rows_todo = max(0, rows_total - skipped)  # for progress and its ETA
        self.job = plan.job
        self.options = options
        self.done = done
        self.out = self.job.output.directory
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.summary = RunSummary(output=self.out, run_id=self.run_id, rows_total=rows_total)
        self.results_writer = PartWriter(self.out / RESULTS_DIR, self.run_id)
        self.errors_writer = PartWriter(self.out / ERRORS_DIR, self.run_id)
        concurrency = self.job.limits.concurrency
        self.work: asyncio.Queue[Work | None] = asyncio.Queue(maxsize=2 * concurrency)
        self.outcomes: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * concurrency)
        limits = self.job.limits
        self.limits = RateLimits(limits.requests_per_minute, limits.tokens_per_minute)
        self.ledger: list[dict[str, Any]] = []
        self.usage_writer = PartWriter(self.out / USAGE_DIR, self.run_id)
        self.retry = RetryPolicy(self.job.retry)
        self.stop: BatchgenError | None = None
        self.stopping = asyncio.Event()
        self.workers: list[asyncio.Task[None]] = []
        self.timers: list[asyncio.TimerHandle] = []  # time budget and grace period
        self.signals = 0
        self.transport_failures = 0
        self.unreachable_after = options.unreachable_after or max(20, 2 * concurrency)

    async def main(self) -> RunSummary:
        started_at = datetime.now(UTC)
        await asyncio.to_thread(append_run_record, self.out, self._record("start", started_at))
        concurrency = self.job.limits.concurrency
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = GeminiClient(
                session, self.job.model, self.options.api_key, self.job.limits.timeout_seconds
            )
            writer = asyncio.create_task(self._write())
            ticker = asyncio.create_task(self._tick())
            reader = asyncio.create_task(self._read())
            self.workers = [asyncio.create_task(self._worker(client)) for _ in range(concurrency)]
            self._watch_time_budget()
            with self._signal_handlers():
                await asyncio.gather(*self.workers, return_exceptions=True)
                for timer in self.timers:  # the work is over: a late timer must not stop it
                    timer.cancel()
                for task in (reader, ticker):
                    task.cancel()
                await asyncio.gather(reader, ticker, return_exceptions=True)
                await self.outcomes.put(None)
                await writer
        self.summary.cost = self.budget.cost
        await asyncio.to_thread(self._finish, started_at)
        self.summary.seconds = time.monotonic() - self.started
        self.progress.close(self._snapshot())
        if self.stop is not None:
            self.stop.summary = self.summary
            raise self.stop
        return self.summary

    def _finish(self, started_at: datetime) -> None:
        """Fold the failure records and append the run's end record."""
        compact_errors(self.out, self.run_id)
        append_run_record(self.out, self._record("end", started_at))

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
            record |= {
                "ended_at": datetime.now(UTC).isoformat(),
                "rows_done": s.rows_done,
                "rows_failed": s.rows_failed,
                "rows_skipped": s.rows_skipped,
                "requests": s.requests,
                "tokens": dict(s.usage),
                "failures": dict(s.failures),
                "cost_usd": s.cost,
                "exit_code": self.stop.exit_code if self.stop is not None else s.exit_code,
                "stopped_by": s.stopped_by,
                "stopped": str(self.stop) if self.stop is not None else None,
            }
        return record

    # --- stopping -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (RuntimeError, ValueError):  # not the main thread: the caller handles signals
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.signals += 1
        if self.signals == 1:
            grace = self.options.grace_seconds
            self._halt(
                RunStoppedError(
                    f"{self.out}: stopped by {sig.name}: results so far are saved; "
                    "rerun the same command to resume"
                ),
                "signal",
            )
            self.timers.append(asyncio.get_running_loop().call_later(grace, self._cancel_workers))
        else:
            self._cancel_workers()

    def _halt(self, reason: BatchgenError, by: str) -> None:
        """Stop taking rows; the first reason given is the one reported."""
        if self.stop is None:
            self.stop = reason
            self.summary.stopped_by = by
        self.stopping.set()

    def _watch_time_budget(self) -> None:
        """Stop taking rows a grace period before the budget ends; stop the calls at its end."""
        budget = self.options.time_budget
        if budget is None:
            return
        left = budget - (time.monotonic() - self.started)
        grace = min(self.options.grace_seconds, budget / 4)
        loop = asyncio.get_running_loop()
        stop = RunStoppedError(
            f"{self.out}: the time budget of {budget:g} s is used up; results so far are "
            "saved: the next run resumes"
        )
        self.timers.append(loop.call_later(max(0.0, left - grace), self._halt, stop, "time_budget"))
        # the calls still in flight then end just before the budget does, leaving time to flush
        end = loop.call_later(max(0.0, left - min(1.0, grace / 4)), self._cancel_workers)
        self.timers.append(end)

    def _cancel_workers(self) -> None:
        """Stop the calls in flight now (only ever after a reason to stop was given)."""
        assert self.stop is not None, "workers cancelled without a reason to stop"
        for task in self.workers:
            task.cancel()

    # --- the pipeline ---------------------------------------------------------------------

    async def _read(self) -> None:
        """Feed the workers; a bad input stops the reading, not the rows already queued."""
        counts: Counter[str] = Counter()
        works = self.plan.works(self.done, self.options.limit, self.options.skip_failed, counts)
        try:
            while not self.stopping.is_set():
                chunk = await asyncio.to_thread(lambda: list(itertools.islice(works, READ_CHUNK)))
                if not chunk:
                    break
                for item in chunk:
                    if isinstance(item, Outcome):
                        await self.outcomes.put(item)
                    else:
                        await self.work.put(item)
        except BatchgenError as exc:
            self._halt(exc, "input")
        finally:
            self.summary.rows_skipped = counts["skipped"]
        for _ in range(self.job.limits.concurrency):  # not reached when cancelled
            await self.work.put(None)

    async def _worker(self, client: GeminiClient) -> None:
        while not self.stopping.is_set():
            work = await self.work.get()
            if work is None:
                return
            try:
                outcome = await self._row(client, work)
            except BudgetReachedError as exc:
                self._halt(exc, "max_cost")
                return
            except BatchgenError as exc:  # a bad key, an unknown model, a used-up daily quota
                self._halt(exc, "api")
                return
            await self.outcomes.put(outcome)
            self._watch_transport(outcome)

    def _watch_transport(self, outcome: Outcome) -> None:
        """Stop when every recent row failed to reach the API at all: it is down, not the rows."""
        if outcome.category not in TRANSPORT_CATEGORIES:
            self.transport_failures = 0
            return
        self.transport_failures += 1
        if self.transport_failures >= self.unreachable_after:
            self._halt(
                RunStoppedError(
                    f"{self.job.model.base_url}: unreachable ({self.transport_failures} rows in "
                    f"a row failed: {outcome.message}); rerun to resume"
                ),
                "unreachable",
            )

    async def _row(self, client: GeminiClient, work: Work) -> Outcome:
        """One row through its retry loop; what still fails becomes a failure record."""
        attempt = 0
        try:
            async for retrying in self.retry.for_row():
                with retrying:
                    attempt = retrying.retry_state.attempt_number
                    return await self._attempt(client, work, attempt)
        except ApiError as exc:
            return self._failure(work, exc.category, exc.message, attempt, status=exc.status)
        except AnswerError as exc:
            return self._failure(work, exc.category, exc.message, attempt, text=exc.text)
        raise AssertionError("the retry loop ended without an outcome")  # pragma: no cover

    async def _attempt(self, client: GeminiClient, work: Work, attempt: int) -> Outcome:
        charged = self.limits.estimate(work.tokens)
        held = await self.budget.reserve(charged)
        usage: Usage | None = None
        try:
            await self.limits.acquire(charged)
            self.summary.requests += 1
            payload, latency_ms = await client.generate(work.body)
            answer = parse_response(payload)
            usage = answer.usage
        except ApiError as exc:
            if exc.status == 429:
                self.limits.rejected(exc.retry_delay, exc.quota)
            raise
        finally:  # also when the call fails, is cancelled or stops the run
            self.budget.settle(held, usage)
        self.summary.cost = self.budget.cost
        await self.limits.settle(work.tokens, charged, answer.usage.prompt)
        try:
            value = structured_value(answer, self.plan.validator)
        except AnswerError as exc:
            self._bill(work, attempt, answer, exc.category)
            raise
        self._bill(work, attempt, answer, "ok")
        meta = _meta(answer, latency_ms, attempt, work.hash)
        row = work.row
        ids = {"row_id": row.row_id, **{c: row.values[c] for c in self.job.input.carry}}
        return Outcome(self.plan.layout.rows(ids, value, meta), failed=False)

    def _bill(self, work: Work, attempt: int, answer: Answer, outcome: str) -> None:
        """One ledger row for a call that returned usage: every such call is paid for."""
        usage = answer.usage
        self._count(usage)
        self.ledger.append(
            {
                "run_id": self.run_id,
                "job": self.job.name,
                "row_id": work.row.row_id,
                "attempt": attempt,
                "model": self.job.model.name,
                "model_version": answer.model_version,
                "prompt_tokens": usage.prompt,
                "output_tokens": usage.output,
                "thinking_tokens": usage.thinking,
                "cached_tokens": usage.cached,
                "total_tokens": usage.total,
                "http_status": 200,
                "outcome": outcome,
                "finish_reason": answer.finish_reason,
                "at": datetime.now(UTC),
            }
        )

    def _failure(
        self,
        work: Work,
        category: str,
        message: str,
        attempts: int,
        *,
        status: int | None = None,
        text: str | None = None,
    ) -> Outcome:
        record = error_row(
            work.row.row_id,
            category,
            message,
            status=status,
            attempts=attempts,
            text=text,
            request_hash=work.hash,
            at=datetime.now(UTC),
        )
        return Outcome([record], failed=True, category=category, message=message)

    def _count(self, usage: Usage) -> None:
        u = self.summary.usage
        u["prompt"] += usage.prompt
        u["output"] += usage.output
        u["thinking"] += usage.thinking
        u["cached"] += usage.cached
        u["total"] += usage.total

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.job.output.flush_seconds)
            await self.outcomes.put(_TICK)

    async def _write(self) -> None:
        """Buffer outcomes; write a part every flush_rows rows or flush_seconds seconds."""
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        last = time.monotonic()
        while True:
            item = await self.outcomes.get()
            if item is None:
                break
            if item is not _TICK:
                self._tally(item)
                (errors if item.failed else results).extend(item.rows)
            due = time.monotonic() - last >= self.job.output.flush_seconds
            if len(results) + len(errors) >= self.job.output.flush_rows or (due and item is _TICK):
                await self._flush(results, errors)
                results, errors, last = [], [], time.monotonic()
        await self._flush(results, errors)

    def _tally(self, outcome: Outcome) -> None:
        s = self.summary
        if outcome.failed:
            s.rows_failed += 1
            category = outcome.category or "unknown"
            s.failures[category] += 1
            s.first_errors.setdefault(category, outcome.message or "")
        else:
            s.rows_done += 1
            s.output_rows += len(outcome.rows)
        self.progress.update(self._snapshot())

    def _snapshot(self) -> Snapshot:
        s = self.summary
        return Snapshot(
            rows_todo=self.rows_todo,
            rows_done=s.rows_done,
            rows_failed=s.rows_failed,
            tokens=s.usage["total"],
            cost=self.budget.cost,
            elapsed=time.monotonic() - self.started,
        )

    async def _flush(self, results: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        ledger, self.ledger = self.ledger, []
        try:
            if ledger:
                table = pa.Table.from_pylist(ledger, schema=USAGE_SCHEMA)
                await asyncio.to_thread(self.usage_writer.write, table)
            if results:
                table = pa.Table.from_pylist(results, schema=self.plan.layout.schema)
                await asyncio.to_thread(self.results_writer.write, table)
                self.summary.parts += 1
            if errors:
                table = pa.Table.from_pylist(errors, schema=ERRORS_SCHEMA)
                await asyncio.to_thread(self.errors_writer.write, table)
        except CheckpointError as exc:  # disk full, folder gone: stop paying for lost answers
            self._halt(exc, "disk")
            self._cancel_workers()


def _meta(answer: Answer, latency_ms: float, attempts: int, request_hash: str) -> dict[str, Any]:
    usage = answer.usage
    return {
        "prompt_tokens": usage.prompt,
        "output_tokens": usage.output,
        "thinking_tokens": usage.thinking,
        "cached_tokens": usage.cached,
        "total_tokens": usage.total,
        "model_version": answer.model_version,
        "response_id": answer.response_id,
        "finish_reason": answer.finish_reason,
        "latency_ms": round(latency_ms, 3),
        "attempts": attempts,
        "completed_at": datetime.now(UTC),
        "request_hash": request_hash,
    }
