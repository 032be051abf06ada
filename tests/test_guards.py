"""Budget and time guards, run records and progress output, against the emulator."""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchgen.cli.progress import LineProgress, choose
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import BudgetReachedError, JobError, RunStoppedError
from batchgen.job.spec import Overrides, load_job
from batchgen.pricing.file import load_prices
from batchgen.pricing.table import PriceTable
from batchgen.run.progress import Snapshot
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.layout import part_files
from batchgen.store.runs import read_run_records
from tests.helpers.jobs import make_job

KEY = "guard-key-77"


def ledger_cost(out: Path, prices: PriceTable, run_id: str | None = None) -> tuple[float, float]:
    """(total cost, most expensive call) of the ledger, by hand from the price table."""
    costs = []
    for part in part_files(out, "usage"):
        for row in pq.read_table(part).to_pylist():
            if run_id is None or row["run_id"] == run_id:
                cost = prices.cost(row["model"], prompt=row["prompt_tokens"],
                                   output=row["output_tokens"], thinking=row["thinking_tokens"],
                                   cached=row["cached_tokens"])  # fmt: skip
                assert cost is not None
                costs.append(cost)
    return sum(costs), max(costs)


def test_max_cost_stops_within_one_call_of_the_cap_and_the_output_resumes(
    project: Path,
) -> None:
    prices = load_prices()
    with EmulatorThread(EmulatorConfig()) as server:
        job = load_job(
            project / "jobs" / "cookie_recipes.toml", Overrides(base_url=server.base_url)
        )
        cap = 0.012
        reached = r"max_cost \$0.012 reached"
        with pytest.raises(BudgetReachedError, match=reached) as info:
            run_job(job, RunOptions(api_key=KEY, prices=prices, max_cost=cap))
        summary = info.value.summary
        assert info.value.exit_code == 6 and summary.stopped_by == "max_cost"
        spent, dearest = ledger_cost(job.output.directory, prices, summary.run_id)
        assert summary.cost == pytest.approx(spent)
        assert cap - dearest <= spent <= cap + dearest  # within one call's cost of the cap
        end = read_run_records(job.output.directory)[-1]
        assert end["stopped_by"] == "max_cost" and end["cost_usd"] == pytest.approx(spent)
        rest = run_job(job, RunOptions(api_key=KEY, prices=prices))  # no cap: it resumes
    assert rest.rows_skipped == summary.rows_done and summary.rows_done + rest.rows_done == 12


def test_max_cost_needs_a_price(project: Path) -> None:
    job = load_job(project / "jobs" / "cookie_recipes.toml", Overrides(model="gemini-9-ultra"))
    with pytest.raises(JobError, match="no price for model 'gemini-9-ultra'"):
        run_job(job, RunOptions(api_key=KEY, prices=load_prices(), max_cost=1.0))


def test_time_budget_stops_cleanly_and_is_recorded(tmp_path: Path) -> None:
    path = make_job(tmp_path, 400, concurrency=2)
    with EmulatorThread(EmulatorConfig(latency_ms=100)) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        with pytest.raises(RunStoppedError, match="time budget of 2 s is used up") as info:
            run_job(job, RunOptions(api_key=KEY, time_budget=2.0, grace_seconds=0.5))
    summary = info.value.summary
    assert info.value.exit_code == 4 and summary.stopped_by == "time_budget"
    assert 0 < summary.rows_done < 400
    assert summary.seconds < 4  # stopped on time, not at the end of the input
    assert read_run_records(tmp_path / "out")[-1]["stopped_by"] == "time_budget"


def test_run_records_carry_usage_and_cost_and_never_the_key(project: Path) -> None:
    with EmulatorThread(EmulatorConfig()) as server:
        job = load_job(project / "jobs" / "review_insights.toml",
                       Overrides(base_url=server.base_url))  # fmt: skip
        summary = run_job(job, RunOptions(api_key=KEY, prices=load_prices()))
    start, end = read_run_records(job.output.directory)
    assert (start["event"], end["event"]) == ("start", "end")
    assert end["rows_done"] == 20 and end["exit_code"] == 0
    assert end["tokens"]["prompt"] == summary.usage["prompt"] > 0
    assert end["cost_usd"] == pytest.approx(summary.cost) and summary.cost > 0
    assert KEY not in (job.output.directory / "runs.jsonl").read_text()


def test_progress_lines_for_cron_and_json_for_collectors() -> None:
    snap = Snapshot(rows_todo=100, rows_done=40, rows_failed=2, tokens=12_345, cost=0.5,
                    elapsed=10.0)  # fmt: skip
    text = io.StringIO()
    LineProgress(every=0, stream=text).update(snap)
    assert (
        "42/100 rows (2 failed), 4.2 rows/s, 12,345 tokens, $0.5000, ETA 0m13s" in text.getvalue()
    )
    records = io.StringIO()
    progress = LineProgress(every=3600, as_json=True, stream=records)
    progress.update(snap)  # not yet due
    progress.close(snap)
    (line,) = records.getvalue().splitlines()
    assert json.loads(line) | {"ts": None} == {
        "ts": None, "event": "finished", "rows_todo": 100, "rows_done": 40, "rows_failed": 2,
        "rows_per_s": 4.2, "tokens": 12345, "cost_usd": 0.5, "eta_s": 14,
    }  # fmt: skip


def test_not_on_a_terminal_progress_is_lines_and_quiet_is_nothing() -> None:
    stream = io.StringIO()
    assert isinstance(choose(False, "text", 60, stream), LineProgress)
    assert type(choose(True, "text", 60, stream)).__name__ == "NoProgress"


class FlatPrice:
    """$1 per 1,000 tokens of any kind: easy sums."""

    def cost(self, model: str, *, prompt: int, output: int, thinking: int, cached: int,
             tier: str = "standard", at: date | None = None, audio: int = 0,
             cached_audio: int = 0) -> float | None:  # fmt: skip
        return (prompt + output + thinking) / 1000


async def test_budget_reserves_waits_and_stops_at_the_cap() -> None:
    import asyncio

    from batchgen.gemini.answers import Usage
    from batchgen.pricing.budget import Budget

    budget = Budget(FlatPrice(), "m", cap=3.0, max_output_tokens=500)
    first = await budget.reserve(500)  # expects 500 + 500 tokens: $1
    second = await budget.reserve(500)
    third = await budget.reserve(500)
    assert (first, second, third) == (1.0, 1.0, 1.0)
    fourth = asyncio.ensure_future(budget.reserve(500))
    await asyncio.sleep(0)
    assert not fourth.done()  # $3 held: it waits for a call to settle
    budget.settle(first, Usage(prompt=500, output=100))  # the real call cost $0.60
    budget.settle(second, None)  # a failed call costs nothing and frees its hold
    assert await fourth == pytest.approx(0.6)  # the estimate learnt from the real call
    budget.settle(third, Usage(prompt=500, output=1500))  # $2
    budget.settle(0.6, Usage(prompt=500, output=100))
    assert budget.spent == pytest.approx(3.2)
    with pytest.raises(BudgetReachedError, match=r"spent \$3.2000"):
        await budget.reserve(500)
