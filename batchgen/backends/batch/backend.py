"""The Batch Mode backend: the run's rows as batch jobs, at half the standard price.

::

    earlier run's open chunks ──advance (upload, submit)──┐
    works ──┬─ row in an open chunk: kept to collect it   ├──▶ poll all ──ended──▶ collect ──▶ sink
            └─ the rest ──group_works──▶ write, upload,   │     (backoff)            │
                                          submit ─────────┘                   journal, then mark

Every chunk's steps are recorded in OUTPUT (:class:`~batchgen.store.batches.BatchStore`) before
the call that follows them, and a row in a chunk that has not ended is never put in another one,
so a run killed anywhere re-attaches to its batches and submits no row twice. A batch's rows are
reported to the sink (ledger entries first, each settled in the budget at the batch tier), the
journal is flushed, and only then is the chunk marked ended: a kill while collecting collects
the same result file again. Line errors, missing keys and the rows of an expired, failed or
cancelled batch are failure records the next run retries, or, with ``[batch] fallback =
"online"``, are asked online at the standard tier in the same run.

A signal, the time budget or ``--no-wait`` stop the waiting, never the batches: they go on
server-side and the next run collects them (``--no-wait`` ends with :class:`BatchPendingError`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from batchgen.backends.base import Gauges, RunContext, Sink
from batchgen.backends.batch.cache import BatchCacheUse, verdict
from batchgen.backends.batch.jsonl import (
    BATCH_TIER,
    LINE_ERROR,
    MISSING,
    ResultCollector,
    group_works,
    split_request_line,
    write_chunk,
)
from batchgen.backends.batch.steps import Collection, collect_chunk, submit_chunk, upload_chunk
from batchgen.backends.media import MediaFailedError, MediaSender, media_sender
from batchgen.backends.online.backend import OnlineBackend
from batchgen.errors import (
    BatchPendingError,
    CheckpointError,
    FatalApiError,
    InternalError,
    RunStoppedError,
)
from batchgen.gemini.batch_client import NOT_RELAYED, BatchClient, BatchInfo, not_relayed
from batchgen.gemini.client import ApiError
from batchgen.gemini.connect import client_for
from batchgen.gemini.request import Prefix
from batchgen.job.spec import ModelSpec
from batchgen.records import Outcome, Work
from batchgen.redact import redact_url
from batchgen.store.batches import BatchStore, ChunkRecord
from batchgen.store.output import error_row

__all__ = ["BatchBackend", "cancel_output"]

# Failures the online fallback takes: the batch gave no answer (not a user's cancel, and not
# an answer that failed validation, which online would most likely fail the same way).
FALLBACK_CATEGORIES = frozenset(
    {LINE_ERROR, MISSING, "batch_expired", "batch_failed", "batch_lost"}
)
POLL_FACTOR = 1.5
CANCEL_TIMEOUT = 60.0

Note = Callable[[str], None]


class BatchBackend:
    """Submits the rows as Batch Mode jobs, waits for them, collects them (see the module)."""

    def __init__(
        self,
        ctx: RunContext,
        *,
        wait: bool = True,
        note: Note | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.plan, self.job, self.api_key = ctx.plan, ctx.plan.job, ctx.api_key
        self.budget, self.run_id, self.stop, self.out = ctx.budget, ctx.run_id, ctx.stop, ctx.out
        self.wait, self.note, self.clock = wait, note or (lambda _: None), clock
        self.store = BatchStore(ctx.out.path, ctx.out.publish)
        self.collector = ResultCollector(ctx.plan, ctx.run_id)
        # the rows of the chunks not collected yet, slimmed once their chunk file is written
        # (id, carried values, request hash): a batch run's memory does not hold its bodies
        self.works: dict[str, Work] = {}
        self.retry: list[tuple[str, Work]] = []  # (chunk, row) for the online fallback
        self.held: dict[str, float] = {}  # row id -> its expected cost, held in the budget
        self.capped = False  # max_cost stopped the submitting
        self._chunks = 0
        self.media: MediaSender | None = None  # set on the run's client, when the job has media
        # the run's context cache: probed by the first row submitted, then named by every line
        self.cache = ctx.cache if isinstance(ctx.cache, BatchCacheUse) else None

    def gauges(self) -> Gauges:
        return Gauges()  # no calls in flight of its own: the batches run server-side

    async def run(self, works: AsyncIterator[Work], sink: Sink) -> None:
        """Submit, wait for and collect every row of ``works``; stop waiting when told to."""
        async with client_for(self.job, self.api_key, BatchClient) as client:
            self.media = media_sender(self.plan, self.out.path, client, force_upload=True)
            try:
                await self._run(client, works, sink)
            except ApiError as exc:
                self.stop.halt(self._api_stop(exc), "api")
        self.note("")
        if self.capped:  # what was submitted is collected: now stop (exit 6)
            self.stop.halt(self.budget.reached(), "max_cost")
        if self.retry and not self.stop.stopping.is_set():
            await self._fallback(sink)

    async def _run(self, client: BatchClient, works: AsyncIterator[Work], sink: Sink) -> None:
        held = self.store.rows_in_flight()
        for chunk in self.store.open_chunks():  # an earlier run's chunks, in whatever step
            await self._advance(client, chunk)
        if not await self._take(client, works, held, sink):
            return
        await self._wait_all(client, sink)

    async def _take(
        self, client: BatchClient, works: AsyncIterator[Work], held: set[str], sink: Sink
    ) -> bool:
        """Keep the works of rows in flight, submit the others by chunk; False if stopped."""
        pending: list[Work] = []
        size = self.job.batch.rows_per_chunk
        async for work in works:
            if work.row.row_id in held:  # in an earlier run's chunk file already
                self.works[work.row.row_id] = self._slim(work)  # collected below
            elif not self.capped:
                cost = self.budget.hold(work.tokens, BATCH_TIER)
                if cost is None:  # max_cost: submit what fits, collect it, then stop
                    self.capped = True  # (the input is read on, for earlier runs' rows)
                else:
                    self.held[work.row.row_id] = cost
                    if self.cache is not None and self.cache.probing:
                        back = await self._probe(client, work, sink)
                        pending.extend(back)
                    else:
                        pending.append(work)
            if len(pending) >= size or (self.capped and pending):
                await self._submit(client, pending, sink)
                pending = []
            if self.stop.stopping.is_set():
                return False
        if pending:
            await self._submit(client, pending, sink)
        return not self.stop.stopping.is_set()

    async def _submit(
        self, client: BatchClient, works: Sequence[Work], sink: Sink
    ) -> list[ChunkRecord]:
        """Write, record, upload and submit ``works`` as one or more chunks (a request a row).

        Media rows are built first: every local file is uploaded (and recorded in
        OUTPUT/uploads.jsonl) before the chunk that names it is written, so a killed run
        neither uploads a content again nor submits a row twice."""
        if self.media is not None:  # without the context files while the cache holds them
            short = self.cache is not None and self.cache.holds_context
            works = await self._built(works, sink, context=not short)
        if self.cache is not None and self.cache.active:  # the lines name the cache
            works = [self._cached(w) for w in works]
        chunks = []
        for group in group_works(works, self.job.batch.rows_per_chunk):
            self._chunks += 1
            name = f"{self.run_id}-{self._chunks:05d}"
            written = await asyncio.to_thread(write_chunk, self.store.chunk_path(name), group)
            self.works.update((w.row.row_id, self._slim(w)) for w in group)
            chunk = await asyncio.to_thread(self.store.add, name, self.run_id, written.rows)
            chunks.append(await self._advance(client, chunk))
            for _ in written.rows:
                sink.requested()
        return chunks

    def _cached(self, work: Work) -> Work:
        """The row's line naming the cache, without the prefix the cache holds (as it is when
        the body does not start with that prefix)."""
        assert self.cache is not None
        body = self.cache.wire(work.body)
        if isinstance(body, bytes):
            return dataclasses.replace(work, body=body)
        if self.cache.prefix.holds_context and work.text is None:  # built without its context
            raise InternalError(f"row {work.row.row_id}: its line lacks the context files")
        return work

    async def _probe(self, client: BatchClient, work: Work, sink: Sink) -> list[Work]:
        """Submit ``work`` alone, naming the cache, wait for it and judge (see
        :mod:`batchgen.backends.batch.cache`); the rows still to submit: none when the probe's
        answer is the row's result (or the run stopped meanwhile: the chunk is collected by
        the next run), else ``work``, which goes uncached with the rest."""
        assert self.cache is not None
        original = work  # built again, whole, if it goes uncached after all
        if self.media is not None and work.media:
            built = await self._built([work], sink, context=not self.cache.holds_context)
            if not built:
                return []  # its media failed: reported as the row's failure
            work = built[0]
        if not isinstance(self.cache.wire(work.body), bytes):
            return [original]  # this row's body does not start with the prefix: probe the next
        self.cache.used -= 1  # counted again when the row is submitted
        self.note("batch: probing the context cache with a one-row batch")
        chunks = await self._submit(client, [work], sink)
        chunk = chunks[0]
        delay = self.job.batch.poll_initial_seconds
        while (info := await self._state(client, chunk)) is not None and not info.terminal:
            if not await self._pause(delay):
                return []
            delay = min(self.job.batch.poll_max_seconds, delay * POLL_FACTOR)
        done = await collect_chunk(self.store, client, chunk, self.works, self.collector)
        said = verdict(done.collected[0] if done.collected else None, done.state)
        if said.kind == "ok":
            self.cache.probed = True
        else:
            await self.cache.give_up(said.why)
        if said.keep:
            await self._report(done, sink)
            return []
        await asyncio.to_thread(self.store.mark, chunk.chunk, done.state,
                                error=f"context cache probe: {said.why}")  # fmt: skip
        self.works.pop(work.row.row_id, None)
        return [original]

    async def _built(self, works: Sequence[Work], sink: Sink, context: bool = True) -> list[Work]:
        """The works with their whole lines built (``context`` false: without the context
        files, which the run's cache holds); a row whose media fail is reported failed."""
        assert self.media is not None
        built = []
        for work in works:
            if not work.media:
                built.append(work)
                continue
            try:
                built.append(await self.media.built(work, context))
            except MediaFailedError as exc:
                message = f"{self.plan.reader.path}: {exc}"
                record = error_row(work.row.row_id, "input", message, attempts=0,
                                   at=datetime.now(UTC))  # fmt: skip
                await sink.outcome(Outcome([record], failed=True, category="input",
                                           message=message))  # fmt: skip
        return built

    async def _advance(self, client: BatchClient, chunk: ChunkRecord) -> ChunkRecord:
        return await submit_chunk(self.store, client, await upload_chunk(self.store, client, chunk))

    # --- waiting ---------------------------------------------------------------------------

    async def _wait_all(self, client: BatchClient, sink: Sink) -> None:
        """Poll every open batch with backoff, collecting each as it ends."""
        spec, started = self.job.batch, self.clock()
        delay = spec.poll_initial_seconds
        while chunks := self.store.open_chunks():
            seen = [(c, await self._state(client, c)) for c in chunks]
            self.note(progress_note(seen, self.clock() - started))
            for chunk, info in seen:
                if info is None or info.terminal:
                    await self._collect(client, chunk, sink)
            still = [c for c, info in seen if info is not None and not info.terminal]
            if not still:
                continue
            if not self.wait:
                rows = sum(len(c.rows) for c in still)
                self.stop.halt(BatchPendingError(
                    f"{self.out.path}: {len(still)} batches ({rows} rows) are running "
                    "server-side; run the same command later to collect them"
                ), "pending")  # fmt: skip
                return
            if not await self._pause(delay):
                return
            delay = min(spec.poll_max_seconds, delay * POLL_FACTOR)

    async def _state(self, client: BatchClient, chunk: ChunkRecord) -> BatchInfo | None:
        """The chunk's batch as the server has it now; None when it is gone."""
        if chunk.batch_name is None:  # not submitted: _advance raised before; never here
            raise RunStoppedError(f"{self.out.path}: chunk {chunk.chunk} is not submitted")
        try:
            return await client.get(chunk.batch_name)
        except ApiError as exc:
            if exc.category == "not_found":
                return None
            if exc.retryable:  # a blip while polling: poll again later
                return BatchInfo(chunk.batch_name, "BATCH_STATE_UNSPECIFIED")
            raise

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; False (at once) if the run stops meanwhile."""
        try:
            await asyncio.wait_for(self.stop.stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _collect(self, client: BatchClient, chunk: ChunkRecord, sink: Sink) -> None:
        """Report an ended batch's rows, flush the journal, then mark the chunk ended."""
        await self._report(await collect_chunk(self.store, client, chunk, self.works,
                                               self.collector), sink)  # fmt: skip

    async def _report(self, done: Collection, sink: Sink) -> None:
        fallback, chunk = self.job.batch.fallback == "online", done.chunk
        for item in done.collected:
            usage = item.billed.answer.usage if item.billed is not None else None
            held = self.held.pop(item.row_id, None)
            if held is not None:
                self.budget.settle(held, usage, BATCH_TIER)
            elif usage is not None:  # submitted by an earlier run: nothing held for it
                self.budget.charge(usage, BATCH_TIER)
            if item.billed is not None:
                await sink.billed(item.billed)
            category = item.outcome.category
            if fallback and item.outcome.failed and category in FALLBACK_CATEGORIES:
                self.retry.append((chunk.chunk, self.works[item.row_id]))
            else:
                await sink.outcome(item.outcome)
        await sink.journaled()
        await asyncio.to_thread(self._mark, done)
        for row in chunk.rows:  # collected: nothing more is asked of them here
            self.works.pop(row, None)

    def _slim(self, work: Work) -> Work:
        """What collecting a row needs: its id, carried values and request hash (the body is
        in its chunk file)."""
        carry = {c: work.row.values[c] for c in self.job.input.carry}
        row = dataclasses.replace(work.row, values=carry)
        return dataclasses.replace(work, row=row, body=b"", media=(), text=None)

    def _mark(self, done: Collection) -> None:
        error = None
        if done.state != "collected":
            error = (done.batch.error if done.batch else None) or done.state
        self.store.mark(done.chunk.chunk, done.state, error=error)

    async def _fallback(self, sink: Sink) -> None:
        """Ask the rows the batches did not answer online, at the standard tier."""
        model = msgspec.structs.replace(self.job.model, tier="standard")
        plan = dataclasses.replace(self.plan, job=dataclasses.replace(self.job, model=model))
        online = OnlineBackend(dataclasses.replace(self.ctx, plan=plan))
        self.note(f"asking {len(self.retry)} rows online that the batches did not answer")
        prefix = self.plan.prefix()  # a line that named a context cache is asked whole
        if prefix is not None and prefix.holds_context:  # the files the batch uploaded
            async with client_for(self.job, self.api_key, BatchClient) as client:
                files = media_sender(self.plan, self.out.path, client, force_upload=True)
                assert files is not None  # the job has context files
                prefix = prefix.with_context(await files.context_parts(self.plan.context))
        works = await asyncio.to_thread(self._with_bodies, self.retry, prefix)
        await online.run(_stream(works), sink)
        self.note("")

    def _with_bodies(self, rows: Sequence[tuple[str, Work]], prefix: Prefix | None) -> list[Work]:
        """The rows with their request bodies, read back from their chunk files (each line is
        ``{"key":…,"request":<the body>}``, the body verbatim); a line naming a cache that
        holds ``prefix`` with the prefix put back."""
        wanted: dict[str, dict[str, Work]] = {}
        for chunk, work in rows:
            wanted.setdefault(chunk, {})[work.row.row_id] = work
        found: list[Work] = []
        for chunk, works in wanted.items():
            with self.store.chunk_path(chunk).open("rb") as lines:
                for line in lines:
                    key, body = split_request_line(line)
                    if key in works:
                        if prefix is not None:
                            body = self.plan.builder.uncached(body, prefix)
                        found.append(dataclasses.replace(works.pop(key), body=body))
            if works:
                raise CheckpointError(
                    f"{self.store.chunk_path(chunk)}: no request line for row "
                    f"{next(iter(works))!r} to ask online; its rows are left for the next "
                    "run: rerun the same command"
                )
        return found

    def _api_stop(self, exc: ApiError) -> RunStoppedError | FatalApiError:
        where = redact_url(self.job.model.base_url)
        if exc.category == NOT_RELAYED:  # a setting: rerunning as is cannot help
            return FatalApiError(not_relayed(where, exc.message))
        if exc.retryable:
            return RunStoppedError(
                f"{self.out.path}: Batch Mode at {where} failed: {exc.message}; what was "
                "submitted is recorded: rerun the same command to resume"
            )
        return FatalApiError(f"{self.out.path}: Batch Mode at {where} refused: {exc.message}")


def progress_note(seen: Sequence[tuple[ChunkRecord, BatchInfo | None]], elapsed: float) -> str:
    """One line: batches by state, lines answered of lines sent, time waited."""
    states: Counter[str] = Counter()
    answered = total = 0
    for chunk, info in seen:
        state = "gone" if info is None else info.state.removeprefix("BATCH_STATE_").lower()
        states[state] += 1
        total += info.request_count if info and info.request_count else len(chunk.rows)
        answered += (info.successful_count + info.failed_count) if info else 0
    by = ", ".join(f"{n} {s}" for s, n in states.most_common())
    minutes, seconds = divmod(int(elapsed), 60)
    return f"batches: {by}; {answered}/{total} lines answered; waited {minutes}m{seconds:02d}s"


async def _stream(works: Sequence[Work]) -> AsyncIterator[Work]:
    for work in works:
        yield work


async def cancel_output(output: Path, model: ModelSpec, api_key: str) -> list[ChunkRecord]:
    """Ask the server to cancel every submitted batch of ``output`` that has not ended.

    The chunks stay open: the next run collects each batch as it ended (its rows failed as
    ``batch_cancelled``, retried by the run after it). A batch already gone is passed over.
    """
    store = BatchStore(output)
    if not store.path.exists():
        raise CheckpointError(f"{store.path}: no such file: {output} has no batches to cancel")
    cancelled: list[ChunkRecord] = []
    async with client_for(model, api_key, BatchClient, timeout=CANCEL_TIMEOUT) as client:
        for chunk in store.open_chunks():
            if chunk.state != "submitted" or chunk.batch_name is None:
                continue
            try:
                await client.cancel(chunk.batch_name)
            except ApiError as exc:
                if exc.category == "not_found":
                    continue
                where = redact_url(model.base_url)
                raise RunStoppedError(
                    f"{output}: cancelling {chunk.batch_name} at {where} failed: {exc.message}; "
                    f"{len(cancelled)} cancelled so far: run the same command again"
                ) from None
            cancelled.append(chunk)
    return cancelled
