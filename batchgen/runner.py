"""The bounded async pipeline: reader → workers → writer.

The reader renders rows into request bodies and puts them on a queue of at most two per worker;
``concurrency`` workers send them through one ``aiohttp.ClientSession`` under an ``aiolimiter``
requests-per-minute limit; one writer buffers the outcomes and writes a part file every
``flush_rows`` rows or ``flush_seconds`` seconds. Every queue is bounded, so memory does not grow
with the input.
"""

from __future__ import annotations

import asyncio
import random
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
from aiolimiter import AsyncLimiter

from batchgen.answers import AnswerError, Usage, parse_response, structured_value
from batchgen.client import ApiError, GeminiClient
from batchgen.errors import (
    BatchgenError,
    CheckpointError,
    FatalApiError,
    InputError,
    TemplateError,
)
from batchgen.inputs import InputReader, InputRow
from batchgen.job import Job
from batchgen.output import (
    ERRORS_DIR,
    ERRORS_SCHEMA,
    RESULTS_DIR,
    OutputLayout,
    PartWriter,
    done_ids,
    error_row,
)
from batchgen.prompts import PromptTemplate
from batchgen.request import RequestBuilder, request_hash
from batchgen.schema import AnswerValidator

# Transient HTTP failures (429, 5xx, timeouts, dropped connections) get this many attempts.
MAX_ATTEMPTS = 3
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


@dataclass(frozen=True)
class RunOptions:
    """How to run a job, beyond the job file."""

    api_key: str
    limit: int | None = None  # consider only the first N input rows


@dataclass
class RunSummary:
    """What a run did; ``exit_code`` is 0 when every row it tried succeeded."""

    output: Path
    rows_skipped: int = 0  # already in the output from an earlier run
    rows_done: int = 0
    rows_failed: int = 0
    output_rows: int = 0
    requests: int = 0
    usage: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    parts: int = 0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.rows_failed else 0


@dataclass(frozen=True)
class _Work:
    row: InputRow
    body: bytes
    hash: str


@dataclass(frozen=True)
class _Outcome:
    rows: list[dict[str, Any]]  # result rows (several when exploded) or one failure record
    failed: bool
    category: str | None = None


_TICK = object()  # wakes the writer so that a quiet run still flushes on time


@dataclass
class Plan:
    """Everything checked and compiled before the first request: see :func:`plan_job`."""

    job: Job
    reader: InputReader
    template: PromptTemplate
    builder: RequestBuilder
    layout: OutputLayout
    validator: AnswerValidator

    def works(
        self, skip: set[str], limit: int | None, counts: Counter[str]
    ) -> Iterator[_Work | _Outcome]:
        """Rendered requests for the rows still to do; template failures as outcomes."""
        seen = 0
        for batch in self.reader.batches():
            for row in batch:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                if row.row_id in skip:
                    counts["skipped"] += 1
                    continue
                yield self._render(row)

    def first_request(self) -> bytes:
        """The request body for the first input row, or the reason it cannot be rendered."""
        for batch in self.reader.batches():
            for row in batch:
                user, system = self.template.render(row.values, row.row_id)
                return self.builder.body(user, system)
        raise InputError(f"{self.reader.path}: no rows")

    def _render(self, row: InputRow) -> _Work | _Outcome:
        try:
            user, system = self.template.render(row.values, row.row_id)
        except TemplateError as exc:
            record = error_row(
                row.row_id,
                "template",
                f"{self.reader.path}: {exc}",
                attempts=0,
                at=datetime.now(UTC),
            )
            return _Outcome([record], failed=True, category="template")
        body = self.builder.body(user, system)
        return _Work(row, body, request_hash(body))


def plan_job(job: Job) -> Plan:
    """Check the job against its input and compile everything; no network, no writes."""
    template = PromptTemplate(job.prompt, str(job.path))
    needs = dict.fromkeys(template.variables, "used in the prompt")
    needs.update(dict.fromkeys(job.input.carry, "input.carry"))
    if job.input.id_column:
        needs[job.input.id_column] = "input.id_column"
    reader = InputReader(job.input, needs)
    carry = pa.schema([reader.arrow_schema().field(c) for c in job.input.carry])
    layout = OutputLayout(job.response_schema, job.output.explode, carry, str(job.path))
    return Plan(
        job, reader, template, RequestBuilder(job), layout, AnswerValidator(job.response_schema)
    )


def run_job(job: Job, options: RunOptions) -> RunSummary:
    """Run a job to the end (or until a fatal error) and return what it did."""
    plan = plan_job(job)
    return asyncio.run(_Run(plan, options).main())


class _Run:
    def __init__(self, plan: Plan, options: RunOptions) -> None:
        self.plan = plan
        self.job = plan.job
        self.options = options
        out = self.job.output.directory
        self.summary = RunSummary(output=out)
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.results_writer = PartWriter(out / RESULTS_DIR, run_id)
        self.errors_writer = PartWriter(out / ERRORS_DIR, run_id)
        concurrency = self.job.limits.concurrency
        self.work: asyncio.Queue[_Work | None] = asyncio.Queue(maxsize=2 * concurrency)
        self.outcomes: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * concurrency)
        self.limiter = AsyncLimiter(self.job.limits.requests_per_minute, 60)
        self.fatal: BatchgenError | None = None
        self.stopping = asyncio.Event()

    async def main(self) -> RunSummary:
        started = time.monotonic()
        try:
            self.job.output.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"{self.job.output.directory}: cannot create output directory: {exc.strerror}"
            ) from None
        skip = done_ids(self.job.output.directory)
        concurrency = self.job.limits.concurrency
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = GeminiClient(
                session, self.job.model, self.options.api_key, self.job.limits.timeout_seconds
            )
            writer = asyncio.create_task(self._write())
            ticker = asyncio.create_task(self._tick())
            reader = asyncio.create_task(self._read(skip))
            workers = [asyncio.create_task(self._worker(client)) for _ in range(concurrency)]
            await asyncio.gather(*workers)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            ticker.cancel()
            await self.outcomes.put(None)
            await writer
        self.summary.seconds = time.monotonic() - started
        if self.fatal is not None:
            raise self.fatal
        return self.summary

    async def _read(self, skip: set[str]) -> None:
        """Feed the workers; a bad input stops the reading, not the rows already queued."""
        counts: Counter[str] = Counter()
        works = self.plan.works(skip, self.options.limit, counts)
        try:
            while not self.stopping.is_set():
                item = await asyncio.to_thread(next, works, None)
                if item is None:
                    break
                if isinstance(item, _Outcome):
                    await self.outcomes.put(item)
                else:
                    await self.work.put(item)
        except BatchgenError as exc:
            self.fatal = exc
        finally:
            self.summary.rows_skipped = counts["skipped"]
            for _ in range(self.job.limits.concurrency):
                await self.work.put(None)

    async def _worker(self, client: GeminiClient) -> None:
        while not self.stopping.is_set():
            work = await self.work.get()
            if work is None:
                return
            try:
                outcome = await self._call(client, work)
            except FatalApiError as exc:
                if self.fatal is None:
                    self.fatal = exc
                self.stopping.set()
                return
            await self.outcomes.put(outcome)

    async def _call(self, client: GeminiClient, work: _Work) -> _Outcome:
        """One row: call (retrying transient failures), check the answer, shape the rows."""
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire()
            self.summary.requests += 1
            try:
                payload, latency_ms = await client.generate(work.body)
            except ApiError as exc:
                if exc.retryable and attempt < MAX_ATTEMPTS:
                    await asyncio.sleep(_backoff(exc.retry_delay, attempt))
                    continue
                return self._failure(work, exc.category, exc.message, attempt, status=exc.status)
            answer = parse_response(payload)
            self._count(answer.usage)
            try:
                value = structured_value(answer, self.plan.validator)
            except AnswerError as exc:
                return self._failure(work, exc.category, exc.message, attempt, text=exc.text)
            meta = _meta(
                answer.usage,
                answer.model_version,
                answer.response_id,
                answer.finish_reason,
                latency_ms,
                attempt,
                work.hash,
            )
            ids = {
                "row_id": work.row.row_id,
                **{c: work.row.values[c] for c in self.job.input.carry},
            }
            return _Outcome(self.plan.layout.rows(ids, value, meta), failed=False)

    def _failure(
        self,
        work: _Work,
        category: str,
        message: str,
        attempts: int,
        *,
        status: int | None = None,
        text: str | None = None,
    ) -> _Outcome:
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
        return _Outcome([record], failed=True, category=category)

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

    def _tally(self, outcome: _Outcome) -> None:
        if outcome.failed:
            self.summary.rows_failed += 1
            self.summary.failures[outcome.category or "unknown"] += 1
        else:
            self.summary.rows_done += 1
            self.summary.output_rows += len(outcome.rows)

    async def _flush(self, results: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        if results:
            table = pa.Table.from_pylist(results, schema=self.plan.layout.schema)
            await asyncio.to_thread(self.results_writer.write, table)
            self.summary.parts += 1
        if errors:
            table = pa.Table.from_pylist(errors, schema=ERRORS_SCHEMA)
            await asyncio.to_thread(self.errors_writer.write, table)


def _backoff(server_delay: float | None, attempt: int) -> float:
    """The server's delay when it gave one, else capped exponential backoff with jitter."""
    if server_delay is not None:
        return server_delay
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))


def _meta(
    usage: Usage,
    model_version: str | None,
    response_id: str | None,
    finish_reason: str | None,
    latency_ms: float,
    attempts: int,
    request_hash: str,
) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt,
        "output_tokens": usage.output,
        "thinking_tokens": usage.thinking,
        "cached_tokens": usage.cached,
        "total_tokens": usage.total,
        "model_version": model_version,
        "response_id": response_id,
        "finish_reason": finish_reason,
        "latency_ms": round(latency_ms, 3),
        "attempts": attempts,
        "completed_at": datetime.now(UTC),
        "request_hash": request_hash,
    }
