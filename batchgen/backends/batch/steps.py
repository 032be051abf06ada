"""The steps of one Batch Mode chunk, each recorded before the call that follows it.

::

    written ──upload──▶ uploaded ──(record)──▶ submitting ──create──▶ submitted ──wait──▶ ended
                                                   │  (after a kill: find by display name first)

:func:`upload_chunk` and :func:`submit_chunk` move a chunk forward and record each step in the
:class:`~batchgen.store.batches.BatchStore`; they take a chunk in whatever state a killed run left
it. Creating a batch is not idempotent, so ``submitting`` is on disk before the create request,
and a chunk found ``submitting`` is looked up by its display name before it is created again.
:func:`collect_chunk` returns a finished batch's outcomes without marking the chunk: the caller
writes them to the journal first, then marks the chunk with the returned state, so a kill
during collection downloads and collects the same results again, and never submits anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from batchgen.backends.batch.jsonl import Collected, CollectStats, ResultCollector
from batchgen.gemini.batch_client import BatchClient, BatchInfo, Sleep
from batchgen.gemini.client import ApiError
from batchgen.records import Work
from batchgen.store.batches import BatchStore, ChunkRecord

# A batch's ending state -> (the chunk's final state, the failure category of its rows).
_ENDINGS = {
    "BATCH_STATE_FAILED": ("failed", "batch_failed"),
    "BATCH_STATE_EXPIRED": ("expired", "batch_expired"),
    "BATCH_STATE_CANCELLED": ("cancelled", "batch_cancelled"),
}


@dataclass(frozen=True)
class Collection:
    """A finished chunk's rows and the state to mark once they are in the journal."""

    chunk: ChunkRecord
    state: str  # "collected", "failed", "expired" or "cancelled"
    collected: list[Collected]
    stats: CollectStats | None  # None when the batch gave no result file
    batch: BatchInfo | None  # None when the batch is gone (deleted, or never found)


async def upload_chunk(store: BatchStore, client: BatchClient, chunk: ChunkRecord) -> ChunkRecord:
    """``written`` → ``uploaded``: the chunk file goes to the Files API (again after a kill)."""
    if chunk.state != "written":
        return chunk
    file = await client.upload(store.chunk_path(chunk.chunk), chunk.display_name)
    return store.mark(chunk.chunk, "uploaded", file_name=file.name)


async def submit_chunk(store: BatchStore, client: BatchClient, chunk: ChunkRecord) -> ChunkRecord:
    """``uploaded``/``submitting`` → ``submitted``, never creating a second batch for a chunk."""
    if chunk.state == "submitting":
        found = await client.find(chunk.display_name)
        if found is not None:  # the create went through before the kill
            return store.mark(chunk.chunk, "submitted", batch_name=found.name)
    elif chunk.state != "uploaded":
        return chunk
    file_name = await _uploaded_file(store, client, chunk)
    if chunk.state != "submitting":
        chunk = store.mark(chunk.chunk, "submitting")
    batch = await client.create(file_name, chunk.display_name)
    return store.mark(chunk.chunk, "submitted", batch_name=batch.name)


async def _uploaded_file(store: BatchStore, client: BatchClient, chunk: ChunkRecord) -> str:
    """The chunk's uploaded file, uploaded again if the Files API no longer has it (uploads are
    deleted after 48 hours, so a run resumed later finds it gone)."""
    if chunk.file_name is None:
        raise ValueError(f"chunk {chunk.chunk} has no uploaded file")
    try:
        await client.get_file(chunk.file_name)
    except ApiError as exc:
        if exc.category != "not_found":
            raise
        file = await client.upload(store.chunk_path(chunk.chunk), chunk.display_name)
        store.mark(chunk.chunk, chunk.state, file_name=file.name)
        return file.name
    return chunk.file_name


async def collect_chunk(
    store: BatchStore,
    client: BatchClient,
    chunk: ChunkRecord,
    works: Mapping[str, Work],
    collector: ResultCollector,
    *,
    on_update: Callable[[BatchInfo], None] | None = None,
    sleep: Sleep | None = None,
    attempt: int = 1,
) -> Collection:
    """Wait for a submitted chunk's batch to end; its rows' outcomes (not yet marked).

    ``works`` holds the chunk's rows by id, rendered again from the input by the caller.
    """
    if chunk.state != "submitted" or chunk.batch_name is None:
        raise ValueError(f"chunk {chunk.chunk} is {chunk.state}, not submitted")
    mine = [works[row] for row in chunk.rows if row in works]
    try:
        batch = await client.wait(chunk.batch_name, on_update, sleep=sleep or asyncio.sleep)
    except ApiError as exc:
        if exc.category != "not_found":
            raise
        message = f"batch {chunk.batch_name} is gone ({exc.message}); its rows are retried"
        return Collection(chunk, "failed", collector.failed(mine, "batch_lost", message, attempt),
                          None, None)  # fmt: skip
    if batch.state in _ENDINGS or batch.responses_file is None:
        state, category = _ENDINGS.get(batch.state, ("failed", "batch_failed"))
        why = batch.error or f"{batch.state} without a result file"
        message = f"batch {batch.name} ended {batch.state} ({why}); its rows are retried"
        return Collection(chunk, state, collector.failed(mine, category, message, attempt), None,
                          batch)  # fmt: skip
    results = store.results_path(chunk.chunk)
    await client.download(batch.responses_file, results)
    collected, stats = collector.collect({w.row.row_id: w for w in mine}, results, attempt)
    return Collection(chunk, "collected", collected, stats, batch)
