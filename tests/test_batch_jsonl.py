"""Batch JSONL: request chunks out, result lines back into the outcomes online answers become."""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batchgen.backends.batch.jsonl import (
    LINE_ERROR,
    MISSING,
    ResultCollector,
    group_works,
    request_line,
    split_request_line,
    write_chunk,
)
from batchgen.emulator import EmulatorConfig, EmulatorServer
from batchgen.gemini.answers import parse_response, structured_value
from batchgen.gemini.batch_client import BatchClient
from batchgen.gemini.client import GeminiClient
from batchgen.gemini.transport import Transport
from batchgen.job.spec import Overrides, load_job
from batchgen.keys import EMPTY
from batchgen.plan import Plan, plan_job
from batchgen.records import DoneState, Work

KEY = "sk-jsonl-secret-0123456789"
AT = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(batch_line_error_rate=0.25, seed=3)) as s:
        yield s


def make_plan(project: Path, base_url: str = "http://127.0.0.1:9") -> Plan:
    job = load_job(project / "jobs" / "review_insights.toml", Overrides(base_url=base_url))
    return plan_job(job)


def works_of(plan: Plan, limit: int) -> list[Work]:
    items = plan.works(DoneState(EMPTY, EMPTY), limit, False, collections.Counter())
    return [w for w in items if isinstance(w, Work)]


def test_request_lines_carry_the_online_body_under_the_row_id(project: Path) -> None:
    plan = make_plan(project)
    work = works_of(plan, 1)[0]
    line = request_line(work)
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"key": work.row.row_id, "request": json.loads(work.body)}
    assert work.body in line  # the very bytes, not a re-encoding


@pytest.mark.parametrize("row_id", ["r-1", 'quote " and \\ back', "ünï 😀", '"request":'])
def test_a_request_line_gives_back_its_row_id_and_the_very_body(project: Path, row_id: str) -> None:
    """The online fallback reads bodies back from chunk files rather than keep them in memory."""
    work = works_of(make_plan(project), 1)[0]
    work = replace(work, row=replace(work.row, row_id=row_id))
    assert split_request_line(request_line(work)) == (row_id, work.body)
    for junk in (b"", b"not json\n", b'{"key":3,"request":{}}\n', request_line(work)[:-2]):
        assert split_request_line(junk) == (None, b"")


def test_chunks_keep_to_rows_bytes_and_unique_keys(project: Path, tmp_path: Path) -> None:
    works = works_of(make_plan(project), 20)
    assert [len(c) for c in group_works(works, max_rows=8)] == [8, 8, 4]
    sizes = [len(request_line(w)) for w in works]
    limit = max(sizes) * 3
    chunks = list(group_works(works, max_rows=1000, max_bytes=limit))
    assert all(sum(len(request_line(w)) for w in c) <= limit for c in chunks)
    assert [w for c in chunks for w in c] == works  # in order, none lost
    twice = [works[0], works[1], works[0]]  # a repeated id goes to the next chunk
    assert [[w.row.row_id for w in c] for c in group_works(twice, 10)] == [
        [works[0].row.row_id, works[1].row.row_id],
        [works[0].row.row_id],
    ]
    chunk = write_chunk(tmp_path / "c" / "chunk-1.jsonl", works[:3])
    assert chunk.rows == tuple(w.row.row_id for w in works[:3])
    assert chunk.path.read_bytes() == b"".join(request_line(w) for w in works[:3])
    assert chunk.size == chunk.path.stat().st_size
    assert not list(chunk.path.parent.glob(".*"))
    with pytest.raises(ValueError):
        next(group_works(works, max_rows=0))


async def test_batch_results_become_what_online_answers_become(
    project: Path, tmp_path: Path, server: EmulatorServer
) -> None:
    plan = make_plan(project, server.base_url)
    works = works_of(plan, 20)
    async with aiohttp.ClientSession() as session:
        batches = BatchClient(Transport(session, plan.job.model, KEY, 30))
        chunk = write_chunk(tmp_path / "chunk.jsonl", works)
        file = await batches.upload(chunk.path, "chunk")
        batch = await batches.wait((await batches.create(file.name, "chunk")).name)
        assert batch.responses_file
        await batches.download(batch.responses_file, tmp_path / "results.jsonl")
        collected, stats = ResultCollector(plan, "run-1", lambda: AT).collect(
            {w.row.row_id: w for w in works}, tmp_path / "results.jsonl"
        )
        online = GeminiClient(Transport(session, plan.job.model, KEY, 30))
        answers = [parse_response((await online.generate(w.body))[0]) for w in works]
    assert [c.row_id for c in collected] != [w.row.row_id for w in works]  # shuffled lines
    assert sorted(c.row_id for c in collected) == sorted(w.row.row_id for w in works)
    assert stats.lines == 20 and not stats.missing and not stats.unknown
    by_id = {c.row_id: c for c in collected}
    failed = [c for c in collected if c.outcome.failed]
    assert 0 < len(failed) < 10 and all(c.outcome.category == LINE_ERROR for c in failed)
    assert all(c.billed is None for c in failed)  # an error line bills nothing
    assert {c.outcome.rows[0]["http_status"] for c in failed} == {429}
    for work, answer in zip(works, answers, strict=True):
        got = by_id[work.row.row_id]
        if got.outcome.failed:
            continue
        value = structured_value(answer, plan.validator)
        ids = {"row_id": work.row.row_id, **{c: work.row.values[c] for c in plan.job.input.carry}}
        (online_row,) = plan.layout.rows(ids, value, {})
        (row,) = got.outcome.rows
        assert {k: row[k] for k in online_row} == online_row  # same typed values as online
        assert row["request_hash"] == work.hash and row["latency_ms"] is None
        assert got.billed is not None
        ledger = got.billed.to_row()
        assert (ledger["prompt_tokens"], ledger["output_tokens"], ledger["total_tokens"]) == (
            answer.usage.prompt,
            answer.usage.output,
            answer.usage.total,
        )
        assert (ledger["outcome"], ledger["run_id"], ledger["attempt"]) == ("ok", "run-1", 1)
        assert ledger["tier"] == "batch"  # priced at the batch rate


def test_line_errors_missing_keys_and_junk_become_failures(project: Path, tmp_path: Path) -> None:
    plan = make_plan(project)
    works = works_of(plan, 5)
    ids = [w.row.row_id for w in works]
    answer = {"candidates": [{"content": {"parts": [{"text": '{"not": "the schema"}'}]},
              "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": "7"}}  # fmt: skip
    lines: list[Any] = [
        {"key": ids[0], "error": {"code": 13, "message": "Internal   error"}},
        {"key": ids[1], "response": answer},  # breaks the schema: billed, then failed
        {"key": ids[2], "response": "no response at all"},
        {"key": ids[2], "error": {"code": 3, "message": "second line for the same key"}},
        {"key": "someone-else", "error": {"code": 3, "message": "not ours"}},
        {"error": {"code": 3, "message": "no key"}},
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "{cut short\n")
    collected, stats = ResultCollector(plan, "r", lambda: AT).collect(
        {w.row.row_id: w for w in works}, path, attempt=2
    )
    got = {c.row_id: c for c in collected}
    assert len(collected) == 5 and all(c.outcome.failed for c in collected)
    first = got[ids[0]].outcome.rows[0]
    assert first["category"] == LINE_ERROR and "error 13: Internal error" in first["message"]
    assert first["http_status"] is None and first["attempts"] == 2  # 13 is an rpc code
    assert got[ids[1]].outcome.category == "schema"
    assert got[ids[1]].billed is not None and got[ids[1]].billed.to_row()["prompt_tokens"] == 7
    assert got[ids[2]].outcome.category == "malformed_response" and got[ids[2]].billed is None
    assert {got[i].outcome.category for i in ids[3:]} == {MISSING}
    assert stats.missing == ids[3:]
    assert (stats.lines, stats.unreadable, stats.unknown, stats.repeated) == (7, 2, 1, 1)


def test_a_batch_that_ended_without_results_fails_its_rows(project: Path) -> None:
    plan = make_plan(project)
    works = works_of(plan, 3)
    failed = ResultCollector(plan, "r", lambda: AT).failed(works, "batch_expired", "expired")
    assert [c.row_id for c in failed] == [w.row.row_id for w in works]
    assert all(c.outcome.rows[0]["category"] == "batch_expired" for c in failed)
    assert all(
        c.outcome.rows[0]["request_hash"] == w.hash for c, w in zip(failed, works, strict=True)
    )
