"""A chunk's steps against the emulator, resumed from every state a kill can leave behind."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from batchgen.backends.batch.jsonl import ResultCollector, write_chunk
from batchgen.backends.batch.steps import collect_chunk, submit_chunk, upload_chunk
from batchgen.emulator import Emulator, EmulatorConfig, EmulatorServer
from batchgen.gemini.batch_client import BatchClient
from batchgen.gemini.transport import Transport
from batchgen.job.spec import Overrides, load_job
from batchgen.keys import EMPTY
from batchgen.plan import Plan, plan_job
from batchgen.records import DoneState, Work
from batchgen.store.batches import BatchStore, ChunkRecord
from tests.helpers.clock import Clock

KEY = "sk-steps-secret-0123456789"


class Setup:
    """An emulator, a plan against it, a store in OUTPUT and one written chunk."""

    def __init__(self, emulator: Emulator, plan: Plan, client: BatchClient, out: Path) -> None:
        self.emulator = emulator
        self.clock = Clock()
        emulator.clock = self.clock
        self.plan = plan
        self.client = client
        self.store = BatchStore(out)
        items = plan.works(DoneState(EMPTY, EMPTY), 12, False, collections.Counter())
        self.works = {w.row.row_id: w for w in items if isinstance(w, Work)}
        self.collector = ResultCollector(plan, "run-2", lambda: datetime(2026, 12, 1, tzinfo=UTC))

    def written(self) -> ChunkRecord:
        chunk = write_chunk(self.store.chunk_path("run-1-00001"), list(self.works.values()))
        return self.store.add("run-1-00001", "run-1", chunk.rows)

    async def sleep(self, seconds: float) -> None:
        self.clock.now += seconds

    def resumed(self) -> ChunkRecord:
        """The chunk as the next run reads it from OUTPUT."""
        return BatchStore(self.store.folder.parent).records()["run-1-00001"]


@pytest.fixture
async def setup(project: Path, tmp_path: Path) -> AsyncIterator[Setup]:
    config = EmulatorConfig(batch_pending_s=30, batch_running_s=30)
    async with EmulatorServer(config) as server, aiohttp.ClientSession() as session:
        job = load_job(
            project / "jobs" / "review_insights.toml", Overrides(base_url=server.base_url)
        )
        client = BatchClient(Transport(session, job.model, KEY, 30))
        yield Setup(server.emulator, plan_job(job), client, tmp_path / "out")


async def test_a_chunk_goes_through_every_step(setup: Setup) -> None:
    chunk = await upload_chunk(setup.store, setup.client, setup.written())
    assert chunk.state == "uploaded" and chunk.file_name
    chunk = await submit_chunk(setup.store, setup.client, chunk)
    assert setup.resumed().state == "submitted" and chunk.batch_name
    states: list[str] = []
    done = await collect_chunk(
        setup.store,
        setup.client,
        chunk,
        setup.works,
        setup.collector,
        on_update=lambda b: states.append(b.state),
        sleep=setup.sleep,
    )
    assert states[0] == "BATCH_STATE_PENDING" and states[-1] == "BATCH_STATE_SUCCEEDED"
    assert done.state == "collected" and done.stats is not None and not done.stats.missing
    assert sorted(c.row_id for c in done.collected) == sorted(setup.works)
    assert all(not c.outcome.failed and c.billed is not None for c in done.collected)
    assert setup.resumed().state == "submitted"  # marked by the caller, after the journal
    setup.store.mark(chunk.chunk, done.state)
    assert setup.store.rows_in_flight() == set()


async def test_killed_after_upload_the_next_run_submits_once(setup: Setup) -> None:
    await upload_chunk(setup.store, setup.client, setup.written())
    chunk = await submit_chunk(setup.store, setup.client, setup.resumed())
    assert chunk.state == "submitted"
    assert setup.emulator.counts["upload_start"] == 1  # not uploaded again
    assert setup.emulator.counts["batchGenerateContent"] == 1
    assert setup.emulator.counts["batch_rows"] == len(setup.works)


async def test_killed_between_create_and_its_record_no_second_batch(setup: Setup) -> None:
    chunk = await upload_chunk(setup.store, setup.client, setup.written())
    chunk = setup.store.mark(chunk.chunk, "submitting")
    assert chunk.file_name
    created = await setup.client.create(chunk.file_name, chunk.display_name)  # then the kill
    resumed = await submit_chunk(setup.store, setup.client, setup.resumed())
    assert resumed.batch_name == created.name
    assert setup.emulator.counts["batchGenerateContent"] == 1
    assert setup.emulator.counts["batch_rows_repeated"] == 0


async def test_killed_during_collect_the_same_results_come_again(setup: Setup) -> None:
    chunk = await upload_chunk(setup.store, setup.client, setup.written())
    chunk = await submit_chunk(setup.store, setup.client, chunk)
    first = await collect_chunk(
        setup.store, setup.client, chunk, setup.works, setup.collector, sleep=setup.sleep
    )
    again = await collect_chunk(
        setup.store, setup.client, setup.resumed(), setup.works, setup.collector, sleep=setup.sleep
    )
    assert [c.outcome for c in again.collected] == [c.outcome for c in first.collected]
    assert setup.emulator.counts["batch_rows"] == len(setup.works)  # nothing sent twice
    assert max(setup.emulator.batches.submissions.values()) == 1


@pytest.mark.parametrize(("ending", "state"), [("expire", "expired"), ("fail", "failed")])
async def test_a_batch_that_ends_badly_fails_its_rows(
    project: Path, tmp_path: Path, ending: str, state: str
) -> None:
    async with EmulatorServer(EmulatorConfig(batch_script=[ending])) as server:
        async with aiohttp.ClientSession() as session:
            job = load_job(
                project / "jobs" / "review_insights.toml", Overrides(base_url=server.base_url)
            )
            client = BatchClient(Transport(session, job.model, KEY, 30))
            setup = Setup(server.emulator, plan_job(job), client, tmp_path)
            chunk = await upload_chunk(setup.store, setup.client, setup.written())
            chunk = await submit_chunk(setup.store, setup.client, chunk)
            done = await collect_chunk(
                setup.store, setup.client, chunk, setup.works, setup.collector, sleep=setup.sleep
            )
    assert done.state == state and done.stats is None
    assert {c.outcome.category for c in done.collected} == {f"batch_{state}"}
    assert len(done.collected) == len(setup.works)
    message = done.collected[0].outcome.message or ""
    assert chunk.batch_name in message and "retried" in message


async def test_a_deleted_batch_fails_its_rows_as_lost(setup: Setup) -> None:
    chunk = await upload_chunk(setup.store, setup.client, setup.written())
    chunk = await submit_chunk(setup.store, setup.client, chunk)
    assert chunk.batch_name
    await setup.client.delete(chunk.batch_name)
    done = await collect_chunk(setup.store, setup.client, chunk, setup.works, setup.collector)
    assert done.state == "failed" and done.batch is None
    assert {c.outcome.category for c in done.collected} == {"batch_lost"}


async def test_an_uploaded_file_gone_before_submit_is_uploaded_again(setup: Setup) -> None:
    chunk = await upload_chunk(setup.store, setup.client, setup.written())
    assert chunk.file_name
    await setup.client.delete_file(chunk.file_name)  # as the Files API does after 48 hours
    resumed = await submit_chunk(setup.store, setup.client, setup.resumed())
    assert resumed.state == "submitted" and resumed.file_name != chunk.file_name
    assert setup.resumed().file_name == resumed.file_name
    assert setup.emulator.counts["upload_start"] == 2
    assert setup.emulator.counts["batchGenerateContent"] == 1
