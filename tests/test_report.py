"""`report`: totals against hand-built ledgers, and against ledgers of real runs on the emulator."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.cli.render import format_report
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import CheckpointError, JobError
from batchgen.job.spec import Overrides, load_job
from batchgen.pricing.file import load_prices
from batchgen.reports.report import report as build_report
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.layout import part_files
from batchgen.store.output import ERRORS_SCHEMA
from batchgen.store.runs import read_run_records
from tests.helpers.ledger import call, write_output

KEY = "test-key-123456"
DAY1 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
DAY2 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
RUN1 = "20261101T100000-aaaaaa"
RUN2 = "20261102T093000-bbbbbb"


def result(row: str, at: datetime, model: str, **tokens: int) -> dict[str, Any]:
    counts = {f"{k}_tokens": tokens.get(k, 0) for k in ("prompt", "output", "thinking", "cached")}
    total = counts["prompt_tokens"] + counts["output_tokens"] + counts["thinking_tokens"]
    meta = {"model_version": model, "finish_reason": "STOP", "latency_ms": 120.0, "attempts": 1}
    return {
        "row_id": row,
        "recipe": "x",
        **counts,
        "total_tokens": total,
        **meta,
        "completed_at": at,
    }


def failure(row: str, category: str, at: datetime) -> dict[str, Any]:
    return dict.fromkeys(ERRORS_SCHEMA.names) | {
        "row_id": row,
        "category": category,
        "message": "m",
        "attempts": 2,
        "failed_at": at,
    }


@pytest.fixture
def outputs(tmp_path: Path) -> list[Path]:
    """Two jobs: cookies on gemini-2.5-flash over two days and runs, notes on an unpriced model.

    cookies, run 1 (day 1): r1 SAFETY then ok (its answer exploded into two result rows);
      r2 ok with 400 cached tokens; r3 SAFETY twice (failed); r4 failed on HTTP 500s (no usage).
    cookies, run 2 (day 2): r4 ok (so no longer failed); r3 SAFETY again (still failed).
    notes: one ok call on my-tuned-model, which has no price.
    """
    flash = "gemini-2.5-flash"
    run1 = [
        call(RUN1, "cookies", "r1", 1, flash, DAY1, "safety", prompt=100, finish="SAFETY"),
        call(RUN1, "cookies", "r1", 2, flash, DAY1, prompt=100, output=50, thinking=200),
        call(RUN1, "cookies", "r2", 1, flash, DAY1, prompt=1000, output=10, cached=400),
        call(RUN1, "cookies", "r3", 1, flash, DAY1, "safety", prompt=80, finish="SAFETY"),
        call(RUN1, "cookies", "r3", 2, flash, DAY1, "safety", prompt=80, finish="SAFETY"),
    ]
    run2 = [
        call(RUN2, "cookies", "r4", 1, flash, DAY2, prompt=300, output=30, thinking=70),
        call(RUN2, "cookies", "r3", 1, flash, DAY2, "safety", prompt=80, finish="SAFETY"),
    ]
    cookies = write_output(
        tmp_path / "cookies",
        "cookies",
        flash,
        {RUN1: run1, RUN2: run2},
        results={
            RUN1: [
                result("r1", DAY1, flash, prompt=100, output=50, thinking=200),
                result("r1", DAY1, flash, prompt=100, output=50, thinking=200),
                result("r2", DAY1, flash, prompt=1000, output=10, cached=400),
            ],
            RUN2: [result("r4", DAY2, flash, prompt=300, output=30, thinking=70)],
        },
        errors={
            RUN1: [failure("r3", "safety", DAY1), failure("r4", "server", DAY1)],
            RUN2: [failure("r3", "safety", DAY2)],
        },
    )
    tuned = "my-tuned-model"
    notes = write_output(
        tmp_path / "notes",
        "notes",
        tuned,
        {RUN2: [call(RUN2, "notes", "n1", 1, tuned, DAY2, prompt=10, output=5)]},
        results={RUN2: [result("n1", DAY2, tuned, prompt=10, output=5)]},
    )
    return [cookies, notes]


# Hand-computed at gemini-2.5-flash rates (0.30 in, 0.03 cached, 2.50 out per 1M):
R1_SAFETY = 100 * 0.30
R1_OK = 100 * 0.30 + 250 * 2.50
R2 = 600 * 0.30 + 400 * 0.03 + 10 * 2.50
R3_EACH = 80 * 0.30
R4 = 300 * 0.30 + 100 * 2.50
DAY1_USD = (R1_SAFETY + R1_OK + R2 + 2 * R3_EACH) / 1e6
DAY2_USD = (R4 + R3_EACH) / 1e6


def rows_by(frame: pd.DataFrame, key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in frame.to_dict("records")}


def test_totals_by_job_count_every_billed_call_and_each_row_once(outputs: list[Path]) -> None:
    rep = build_report(outputs, by="job")
    groups = rows_by(rep.groups, "job")
    cookies = groups["cookies"]
    assert cookies["requests"] == 7
    assert (cookies["rows_done"], cookies["rows_failed"]) == (3, 1)  # r4 done later; r3 failed
    assert cookies["prompt_tokens"] == 100 + 100 + 1000 + 80 * 3 + 300
    assert cookies["output_tokens"] == 50 + 10 + 30
    assert cookies["thinking_tokens"] == 200 + 70
    assert cookies["cached_tokens"] == 400
    assert cookies["cost_usd"] == pytest.approx(DAY1_USD + DAY2_USD)
    notes = groups["notes"]
    assert notes["requests"] == 1 and pd.isna(notes["cost_usd"])
    assert notes["unpriced_requests"] == 1
    assert rep.unpriced == ("my-tuned-model",)
    assert any("no price for model 'my-tuned-model'" in w for w in rep.warnings)
    assert rep.total["requests"] == 8 and rep.total["rows_done"] == 4
    assert rep.total["cost_usd"] is None  # part of it is unpriced: no total pretends otherwise


def test_by_day_run_model_and_finish_reason(outputs: list[Path]) -> None:
    days = rows_by(build_report(outputs[:1], by="day").groups, "day")
    assert days["2026-11-01"]["cost_usd"] == pytest.approx(DAY1_USD)
    assert days["2026-11-02"]["cost_usd"] == pytest.approx(DAY2_USD)
    assert (days["2026-11-01"]["rows_done"], days["2026-11-02"]["rows_done"]) == (2, 1)
    assert days["2026-11-02"]["rows_failed"] == 1  # r3's latest failure record

    runs = rows_by(build_report(outputs[:1], by="run").groups, "run")
    assert (runs[RUN1]["requests"], runs[RUN2]["requests"]) == (5, 2)
    assert runs[RUN2]["cost_usd"] == pytest.approx(DAY2_USD)

    models = rows_by(build_report(outputs, by="model").groups, "model")
    assert set(models) == {"gemini-2.5-flash", "my-tuned-model"}
    assert models["gemini-2.5-flash"]["requests"] == 7

    reasons = rows_by(build_report(outputs[:1], by="finish_reason").groups, "finish_reason")
    assert (reasons["SAFETY"]["requests"], reasons["STOP"]["requests"]) == (4, 3)
    assert reasons["SAFETY"]["rows_failed"] == 1 and reasons["STOP"]["rows_done"] == 3
    assert reasons["SAFETY"]["cost_usd"] == pytest.approx((R1_SAFETY + 3 * R3_EACH) / 1e6)


def test_model_version_is_priced_before_the_alias_asked_for(tmp_path: Path) -> None:
    # An alias has no price of its own; the version that answered does.
    alias = "gemini-flash-latest"
    out = write_output(
        tmp_path / "o",
        "j",
        alias,
        {RUN1: [call(RUN1, "j", "a", 1, alias, DAY1, prompt=1000, version="gemini-2.5-flash")]},
    )
    rep = build_report([out])
    assert rep.total["cost_usd"] == pytest.approx(1000 * 0.30 / 1e6) and not rep.unpriced


def test_formats(outputs: list[Path]) -> None:
    rep = build_report(outputs, by="job")
    table = format_report(rep, "table")
    assert "unpriced" in table and table.splitlines()[-2].startswith("total")
    assert "USD per 1M tokens at each call's UTC day (table checked 2026-11-25)" in table
    parsed = pd.read_csv(io.StringIO(format_report(rep, "csv")))
    assert list(parsed["job"]) == ["cookies", "notes"]
    assert parsed["cost_usd"].isna().tolist() == [False, True]
    data = json.loads(format_report(rep, "json"))
    assert data["groups"][1]["cost_usd"] is None and data["total"]["cost_usd"] is None
    assert data["unpriced_models"] == ["my-tuned-model"]
    assert data["prices"]["source_date"] == "2026-11-25"
    markdown = format_report(rep, "markdown").splitlines()
    assert markdown[0].startswith("| job | requests |") and markdown[1].startswith("| --- |")
    with pytest.raises(JobError, match="unknown format"):
        format_report(rep, "xml")


def test_an_output_without_a_ledger_falls_back_to_its_answers(tmp_path: Path) -> None:
    flash = "gemini-2.5-flash"
    out = write_output(
        tmp_path / "old",
        "old",
        flash,
        {},
        results={RUN1: [result("a", DAY1, flash, prompt=100), result("b", DAY1, flash, prompt=50)]},
    )
    rep = build_report([out])
    assert rep.total["requests"] == 2 and rep.total["prompt_tokens"] == 150
    assert any("no usage ledger" in w for w in rep.warnings)


def test_not_an_output_and_a_bad_grouping_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not a batchgen output \(no job.json\)"):
        build_report([tmp_path])
    with pytest.raises(JobError, match=r"by='week': unknown grouping"):
        build_report([tmp_path], by="week")


# --- against real runs on the emulator -----------------------------------------------------


def ledger(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in part_files(out, "usage")], ignore_index=True)


def test_report_of_real_runs_with_retries_and_failures(project: Path) -> None:
    # rv-1003/rv-1004 (Kindle): SAFETY on both answer attempts, twice (second run retries them);
    # Roomba: an invalid answer, then ok; Yeti: HTTP 500 (no usage, not billed), then ok.
    script = {"Kindle": ["safety"] * 8, "Roomba": ["invalid"], "Yeti": ["500"]}
    with EmulatorThread(EmulatorConfig(script=script)) as server:
        path = project / "jobs" / "review_insights.toml"
        job = load_job(path, Overrides(base_url=server.base_url))
        options = RunOptions(api_key=KEY, prices=load_prices())
        first = run_job(job, options)
        second = run_job(job, options)
        answered = server.emulator.counts["status:200"]
    out = job.output.directory
    rep = build_report([out], by="run")
    total = rep.total
    # Every call that got an answer is billed, and only those (not the 500).
    assert total["requests"] == answered == first.requests + second.requests - 1
    for kind in ("prompt", "output", "thinking", "cached", "total"):
        assert total[f"{kind}_tokens"] == first.usage[kind] + second.usage[kind]
    assert (total["rows_done"], total["rows_failed"]) == (18, 2)
    runs = rep.groups.set_index("run")
    assert list(runs["requests"]) == [first.requests - 1, second.requests]
    # gemini-2.5-flash-lite: 0.10 in, 0.40 out per 1M, no thinking (thinkingBudget 0).
    calls = ledger(out)
    expected = (calls["prompt_tokens"].sum() * 0.10 + calls["output_tokens"].sum() * 0.40) / 1e6
    assert total["cost_usd"] == pytest.approx(expected)
    # The runner's own bill in the run records agrees.
    ends = [r for r in read_run_records(out) if r["event"] == "end"]
    assert sum(r["cost_usd"] for r in ends) == pytest.approx(total["cost_usd"])
    outcomes = calls["outcome"].value_counts().to_dict()
    assert outcomes == {"ok": 18, "safety": 8, "schema": 1}
    reasons = rows_by(build_report([out], by="finish_reason").groups, "finish_reason")
    assert reasons["SAFETY"]["requests"] == 8 and reasons["SAFETY"]["rows_failed"] == 2
    assert reasons["SAFETY"]["output_tokens"] == 0


def test_cli_report(project: Path, tmp_path: Path) -> None:
    with EmulatorThread() as server:
        for name in ("review_insights", "cookie_recipes"):
            job = load_job(project / "jobs" / f"{name}.toml", Overrides(base_url=server.base_url))
            run_job(job, RunOptions(api_key=KEY, limit=4))
    outs = [str(project / "out" / n) for n in ("review_insights", "cookie_recipes")]
    runner = CliRunner()
    result = runner.invoke(main, ["report", *outs, "--by", "model", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [g["model"] for g in data["groups"]] == ["gemini-2.5-flash-lite", "gemini-3.8-flash"]
    assert data["total"]["rows_done"] == 8 and data["total"]["cost_usd"] > 0

    # An unpriced model: a warning naming it on stderr, "unpriced" in the table, exit 0.
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."gemini-2.5-flash"]\ninput = 0.5\noutput = 3\n')
    result = runner.invoke(main, ["report", outs[1], "--prices", str(prices)])
    assert result.exit_code == 0 and "warning" not in result.stderr
    result = runner.invoke(main, ["report", outs[0], "--by", "day", "--format", "markdown"])
    assert result.exit_code == 0 and result.stdout.startswith("| day |")

    bad = tmp_path / "bad.toml"
    bad.write_text('[models."x"]\ninput = 1\n')
    result = runner.invoke(main, ["report", outs[0], "--prices", str(bad)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {bad}: models.\"x\" needs 'output' (USD per 1M tokens)\n"


def test_cli_report_warns_about_an_unpriced_model(outputs: list[Path]) -> None:
    result = CliRunner().invoke(main, ["report", *map(str, outputs)])
    assert result.exit_code == 0, result.output
    assert "warning: no price for model 'my-tuned-model'" in result.stderr
    assert result.stderr.count("\n") == 1
    notes = next(line for line in result.stdout.splitlines() if line.startswith("notes"))
    assert notes.endswith("unpriced")


def test_cli_report_plot(outputs: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "usage.png"
    result = CliRunner().invoke(main, ["report", str(outputs[0]), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_by_run_shows_each_run_record_including_killed_and_stopped_runs(tmp_path: Path) -> None:
    from tests.helpers.jobs import make_job

    path = make_job(tmp_path, 30, concurrency=2)
    with EmulatorThread(EmulatorConfig()) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        run_job(job, RunOptions(api_key="k", limit=10))
        with pytest.raises(Exception, match="max_cost"):
            run_job(job, RunOptions(api_key="k", prices=load_prices(), max_cost=1e-9))
        run_job(job, RunOptions(api_key="k"))
    out = tmp_path / "out"
    with (out / "runs.jsonl").open("a") as f:  # a run that was SIGKILLed: a start, no end
        f.write(json.dumps({"event": "start", "run_id": "20991231T000000-dead00",
                            "started_at": "2099-12-31T00:00:00+00:00"}) + "\n")  # fmt: skip
    rep = build_report([out], by="run")
    runs = rep.groups.set_index("run")
    assert len(runs) == 4
    assert list(runs["exit"]) == ["0", "6", "0", "killed?"]
    assert list(runs["stopped_by"]) == ["", "max_cost", "", ""]
    assert list(runs["rows_done"]) == [10, 1, 19, 0]  # the capped run made one call
    text = format_report(rep, "table")
    assert "stopped_by" in text.splitlines()[0] and "max_cost" in text
