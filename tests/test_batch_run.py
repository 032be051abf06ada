"""Runs at tier "batch" against the emulator: the same rows as online at half the price,
resumed from every step a kill can interrupt, line errors and an expired batch retried,
--no-wait, cancel."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import (
    BatchPendingError,
    BudgetReachedError,
    InternalError,
    JobError,
    RunStoppedError,
)
from batchgen.job.spec import Overrides, load_job
from batchgen.pricing.file import load_prices
from batchgen.run.runner import RunOptions, RunSummary, run_job
from batchgen.store.batches import BatchStore
from batchgen.store.outdir import OutputDir
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.paths import ROOT, write_job

KEY = "sk-batch-run-secret-0123456789"
MODEL = "gemini-2.5-flash-lite"
FAST = EmulatorConfig(batch_pending_s=0.05, batch_running_s=0.1)
ANSWER_COLUMNS = ["row_id", "product", "sentiment", "score", "summary", "would_recommend",
                  "price_mentioned", "defect_count", "aspects"]  # fmt: skip


def batch_job(folder: Path, rows: int = 40, per_chunk: int = 15, extra: str = "") -> Path:
    """review_insights' schema and prompt over ``rows`` reviews, ``per_chunk`` rows a batch."""
    sample = pq.read_table(ROOT / "sample_inputs" / "product_reviews.parquet")
    table = pa.concat_tables([sample] * (rows // sample.num_rows + 1)).slice(0, rows)
    ids = pa.array([f"rv-{i:05d}" for i in range(rows)])
    pq.write_table(table.set_column(0, "review_id", ids), folder / "reviews.parquet")
    (folder / "schema.json").write_text((ROOT / "jobs" / "review_insights.schema.json").read_text())
    return write_job(
        folder,
        f"""
        name = "batch_reviews"
        schema_file = "schema.json"
        [input]
        path = "reviews.parquet"
        id_column = "review_id"
        carry = ["product"]
        [model]
        name = "{MODEL}"
        tier = "batch"
        [prompt]
        user = "Product: {{{{ product }}}}. Review: {{{{ review_text }}}}"
        [generation]
        thinkingConfig = {{ thinkingBudget = 0 }}
        [limits]
        concurrency = 16
        [retry]
        backoff_initial_seconds = 0.005
        backoff_max_seconds = 0.02
        [batch]
        rows_per_chunk = {per_chunk}
        poll_initial_seconds = 0.02
        poll_max_seconds = 0.05
        {extra}
        [output]
        directory = "out"
        """,
    )


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(FAST)


def run(path: Path, server: EmulatorThread, **options: Any) -> RunSummary:
    tier = options.pop("tier", None)
    job = load_job(path, Overrides(base_url=server.base_url, tier=tier))
    return run_job(job, RunOptions(api_key=KEY, handle_signals=False, **options))


def results(out: Path) -> pa.Table:
    table = OutputDir(out).read("results")
    assert table is not None
    return table.sort_by("row_id")


def failed_rows(out: Path) -> set[str]:
    return set(OutputDir(out).latest_failures(["row_id"]).column("row_id").to_pylist())


def ledger_cost(out: Path) -> tuple[float, set[str]]:
    usage = OutputDir(out).read("usage")
    assert usage is not None
    prices, total = load_prices(), 0.0
    for row in usage.to_pylist():
        total += prices.cost(row["model"], prompt=row["prompt_tokens"], output=row["output_tokens"],
                             thinking=row["thinking_tokens"], cached=row["cached_tokens"],
                             tier=row["tier"]) or 0.0  # fmt: skip
    return total, set(usage.column("tier").to_pylist())


def test_batch_gives_the_online_rows_at_half_the_cost(tmp_path: Path, emulator: Any) -> None:
    path = batch_job(tmp_path, rows=30, per_chunk=12)
    summary = run(path, emulator, prices=load_prices())
    assert (summary.rows_done, summary.rows_failed, summary.exit_code) == (30, 0, 0)
    assert summary.requests == 30  # a batch line is a request
    counts = emulator.emulator.counts
    assert counts["batchGenerateContent"] == 3 and counts["batch_rows"] == 30
    assert counts["generateContent"] == 0  # nothing asked one by one
    online = run(path, emulator, tier="standard", fresh=True)
    assert online.rows_done == 30 and counts["generateContent"] == 30
    batch_out = sorted(tmp_path.glob("out/previous-*"))[0]
    by_batch, by_online = results(batch_out), results(tmp_path / "out")
    assert by_batch.select(ANSWER_COLUMNS).equals(by_online.select(ANSWER_COLUMNS))
    assert by_batch.schema.field("score").type == by_online.schema.field("score").type
    assert by_batch.column("total_tokens").equals(by_online.column("total_tokens"))
    (batch_cost, batch_tiers), (online_cost, online_tiers) = (
        ledger_cost(batch_out), ledger_cost(tmp_path / "out"))  # fmt: skip
    assert batch_tiers == {"batch"} and online_tiers == {"standard"}
    assert batch_cost / online_cost == pytest.approx(0.5, abs=0.01)
    assert summary.cost == pytest.approx(batch_cost)  # the budget settled at the batch tier
    states = {r.state for r in BatchStore(batch_out).records().values()}
    assert states == {"collected"}


def test_max_cost_submits_what_fits_collects_it_and_stops(tmp_path: Path, emulator: Any) -> None:
    """Batch rows are priced before they are submitted: the cap bounds what is submitted."""
    path = batch_job(tmp_path, rows=40, per_chunk=10)
    prices = load_prices()
    per_row = prices.cost(MODEL, prompt=40, output=1024, thinking=0, cached=0, tier="batch")
    assert per_row is not None
    cap = 14.5 * per_row  # room for 13 or 14 rows at the first guess (maxOutputTokens unset)
    with pytest.raises(BudgetReachedError, match=r"max_cost \$[0-9.e-]+ reached"):
        run(path, emulator, prices=prices, max_cost=cap)
    counts = emulator.emulator.counts
    submitted = counts["batch_rows"]
    assert 5 <= submitted < 40  # the cap stopped the submitting ...
    assert results(tmp_path / "out").num_rows == submitted  # ... and what went was collected
    cost, _ = ledger_cost(tmp_path / "out")
    assert cost <= cap
    states = {r.state for r in BatchStore(tmp_path / "out").records().values()}
    assert states == {"collected"}
    rest = run(path, emulator, prices=prices)  # no cap: the rest, nothing submitted twice
    assert (rest.rows_done, rest.exit_code) == (40 - submitted, 0)
    assert counts["batch_rows"] == 40


def _interrupt(monkeypatch: pytest.MonkeyPatch, state: str, after: bool = False) -> None:
    """Make the run die the first time it records ``state`` (before, or just after, the step)."""
    original = BatchStore.mark
    fired: list[bool] = []

    def mark(self: BatchStore, chunk: str, new: str, **fields: Any) -> Any:
        if new == state and not fired:
            fired.append(True)
            if after:
                original(self, chunk, new, **fields)
            raise _KilledError(f"killed at {state}")
        return original(self, chunk, new, **fields)

    monkeypatch.setattr(BatchStore, "mark", mark)


class _KilledError(Exception):
    """Stands for SIGKILL: the run ends where it is, with what it recorded."""


@pytest.mark.parametrize(
    ("state", "after"),
    [("submitting", False), ("submitted", False), ("submitted", True), ("collected", False)],
    ids=["after-upload", "after-create-request", "before-collect", "during-collect"],
)
def test_a_killed_run_resumes_without_submitting_a_row_twice(
    tmp_path: Path, emulator: Any, monkeypatch: pytest.MonkeyPatch, state: str, after: bool
) -> None:
    path = batch_job(tmp_path, rows=30, per_chunk=10)
    with monkeypatch.context() as patch:
        _interrupt(patch, state, after)
        with pytest.raises(InternalError, match=f"killed at {state}"):
            run(path, emulator)
    summary = run(path, emulator)
    assert summary.exit_code == 0
    counts = emulator.emulator.counts
    assert counts["batch_rows_repeated"] == 0 and counts["batch_rows"] == 30
    table = results(tmp_path / "out")
    assert table.num_rows == 30 and len(set(table.column("row_id").to_pylist())) == 30
    assert all(r.ended for r in BatchStore(tmp_path / "out").records().values())


def test_line_errors_and_an_expired_batch_are_retried_exactly(tmp_path: Path) -> None:
    config = EmulatorConfig(batch_pending_s=0.02, batch_running_s=0.05, batch_line_error_rate=0.02,
                            batch_script=["ok", "expire", "ok", "ok"], seed=7)  # fmt: skip
    path = batch_job(tmp_path, rows=200, per_chunk=50)
    with EmulatorThread(config) as server:
        first = run(path, server)
        failed = failed_rows(tmp_path / "out")
        done = set(results(tmp_path / "out").column("row_id").to_pylist())
        assert first.exit_code == 1 and len(done) + len(failed) == 200 and not done & failed
        categories = dict(first.failures)
        assert categories["batch_expired"] == 50 and categories.get("batch_line_error", 0) >= 1
        assert "ended BATCH_STATE_EXPIRED" in first.first_errors["batch_expired"]
        run(path, server)
        again = {k for k, n in server.emulator.batches.submissions.items() if n == 2}
        assert again == failed  # the rerun asked exactly the failed rows, each once more
        assert max(server.emulator.batches.submissions.values()) == 2


def test_fallback_online_asks_the_unanswered_rows_in_the_same_run(tmp_path: Path) -> None:
    config = EmulatorConfig(batch_pending_s=0.02, batch_running_s=0.05, batch_script=["expire"])
    path = batch_job(tmp_path, rows=20, per_chunk=10, extra='fallback = "online"')
    with EmulatorThread(config) as server:
        summary = run(path, server)
        assert summary.exit_code == 0 and summary.rows_done == 20
        assert server.emulator.counts["generateContent"] == 10  # the expired batch's rows
    _, tiers = ledger_cost(tmp_path / "out")
    assert tiers == {"batch", "standard"}


PENDING = EmulatorConfig(batch_pending_s=0.5, batch_running_s=0.1)  # outlasts one --no-wait run


def submit_no_wait(path: Path, server: EmulatorThread) -> tuple[list[str], Result]:
    """``batchgen run --no-wait``: submitted, exit 75; the args to run the job again."""
    args = ["run", str(path), "--base-url", server.base_url, "--quiet"]
    pending = CliRunner().invoke(main, [*args, "--no-wait"])
    assert pending.exit_code == BatchPendingError.exit_code == 75, pending.output
    return args, pending


def test_no_wait_exits_pending_then_a_run_collects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = batch_job(tmp_path, rows=20, per_chunk=10)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with EmulatorThread(PENDING) as server:
        args, pending = submit_no_wait(path, server)
        assert "2 batches (20 rows) are running server-side" in pending.stderr
        assert "20 rows remain" in pending.stdout
        done = CliRunner().invoke(main, args)
        assert done.exit_code == 0, done.output
        assert server.emulator.counts["batchGenerateContent"] == 2
    assert results(tmp_path / "out").num_rows == 20
    assert KEY not in (tmp_path / "out" / "runs.jsonl").read_text()
    assert KEY not in (tmp_path / "out" / "batches" / "batches.jsonl").read_text()


def test_cancel_stops_the_running_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = batch_job(tmp_path, rows=20, per_chunk=10)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with EmulatorThread(EmulatorConfig(batch_pending_s=60)) as server:
        args = ["run", str(path), "--base-url", server.base_url, "--quiet", "--no-wait"]
        assert CliRunner().invoke(main, args).exit_code == 75
        out = str(tmp_path / "out")
        cancelled = CliRunner().invoke(main, ["cancel", out, "--base-url", server.base_url])
        assert cancelled.exit_code == 0, cancelled.output
        assert cancelled.stdout.count("cancelled batches/") == 2
        assert server.emulator.counts["batch_cancel"] == 2
        collected = CliRunner().invoke(main, args)
        assert collected.exit_code == 1, collected.output  # the rows failed: cancelled
        assert "20 batch_cancelled" in collected.stdout
    nothing = CliRunner().invoke(main, ["cancel", str(tmp_path / "none")])
    assert nothing.exit_code == 2 and "has no batches to cancel" in nothing.stderr


def test_fresh_refuses_to_abandon_running_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moved aside, batches still running would bill for answers nobody collects."""
    path = batch_job(tmp_path, rows=20, per_chunk=10)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with EmulatorThread(PENDING) as server:
        args, _ = submit_no_wait(path, server)
        before = sorted(p.name for p in (tmp_path / "out").iterdir())
        fresh = CliRunner().invoke(main, [*args, "--fresh"])
        assert fresh.exit_code == 2, fresh.output
        assert ": --fresh would abandon 2 Batch Mode job(s)" in fresh.stderr
        assert f"batchgen cancel {tmp_path / 'out'}" in fresh.stderr
        assert "Traceback" not in fresh.output
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before  # nothing moved
        assert CliRunner().invoke(main, args).exit_code == 0  # collected
        again = CliRunner().invoke(main, [*args, "--fresh"])
        assert again.exit_code == 0, again.output  # nothing running: a fresh start
        assert server.emulator.counts["batchGenerateContent"] == 4
    assert list((tmp_path / "out").glob("previous-*/batches/batches.jsonl"))


def test_fresh_still_moves_aside_an_output_whose_batch_record_is_unreadable(
    tmp_path: Path,
) -> None:
    (tmp_path / "out" / "batches" / "batches.jsonl").mkdir(parents=True)  # unreadable as a file
    aside = OutputDir(tmp_path / "out").start_fresh()
    assert aside is not None and (aside / "batches" / "batches.jsonl").is_dir()


def test_no_wait_needs_the_batch_tier(tmp_path: Path) -> None:
    path = batch_job(tmp_path)
    result = CliRunner().invoke(main, ["run", str(path), "--tier", "flex", "--no-wait"])
    assert result.exit_code == 2
    assert "--no-wait: only a batch run can be left running" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('fallback = "later"', 'batch.fallback must be "none" or "online"'),
        ("fallback = 3", "batch.fallback must be"),
        ("chunk_rows = 5", "[batch] unknown key 'chunk_rows'"),
    ],
)
def test_bad_batch_keys_are_one_line_errors(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(JobError) as err:
        load_job(batch_job(tmp_path, extra=extra))
    assert message in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(JobError, match="batch.rows_per_chunk must be > 0"):
        load_job(batch_job(tmp_path, per_chunk=0))


def test_a_signal_stops_waiting_and_the_next_run_reattaches(tmp_path: Path) -> None:
    path = batch_job(tmp_path, rows=10, per_chunk=10)
    with EmulatorThread(EmulatorConfig(batch_pending_s=0.6, batch_running_s=0.05)) as server:
        with pytest.raises(RunStoppedError, match="time budget"):
            run(path, server, time_budget=0.3, grace_seconds=0.1)
        assert BatchStore(tmp_path / "out").open_chunks()[0].state == "submitted"
        summary = run(path, server)
        assert summary.rows_done == 10 and server.emulator.counts["batchGenerateContent"] == 1


def test_sigkill_while_waiting_then_the_next_run_collects(tmp_path: Path) -> None:
    path = batch_job(tmp_path, rows=30, per_chunk=10)
    record = tmp_path / "out" / "batches" / "batches.jsonl"
    with EmulatorThread(EmulatorConfig(batch_pending_s=1.2, batch_running_s=0.1)) as server:
        env = {**os.environ, "GEMINI_API_KEY": KEY}
        args = [sys.executable, "-m", "batchgen", "run", str(path), "--base-url", server.base_url]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while _submitted(record) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        assert _submitted(record) == 3 and not list((tmp_path / "out" / "results").glob("*"))
        summary = run(path, server)
        counts = server.emulator.counts
        assert summary.rows_done == 30 and counts["batchGenerateContent"] == 3
        assert counts["batch_rows"] == 30 and counts["batch_rows_repeated"] == 0


def _submitted(record: Path) -> int:
    text = record.read_text() if record.exists() else ""
    return text.count('"state": "submitted"')
