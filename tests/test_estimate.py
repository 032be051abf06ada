"""`estimate`: prompt tokens counted before a run, checked against what the run then reports."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from msgspec import structs

from batchgen.cli import main
from batchgen.cli.render import format_estimate
from batchgen.emulator import EmulatorConfig, EmulatorServer, EmulatorThread
from batchgen.errors import CheckpointError, FatalApiError
from batchgen.gemini.client import GeminiClient
from batchgen.gemini.request import RequestBuilder
from batchgen.gemini.transport import Transport
from batchgen.job.response_schema import resolve_schema
from batchgen.job.schema import AnswerValidator, normalize_schema
from batchgen.job.spec import Job, LimitsSpec, Overrides, load_job
from batchgen.reports.estimate import (
    Estimate,
    OutputGuess,
    TimeBounds,
    count_request,
    estimate_job,
    rough_tokens,
    sample_positions,
    small_answer,
    time_bounds,
)
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.layout import part_files
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.jobs import item_job
from tests.helpers.paths import ROOT
from tests.helpers.strategies import GEMINI_SCHEMAS, JSON_SCHEMAS

KEY = "test-key-123456"
JOBS = ["review_insights", "cookie_recipes"]


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(EmulatorConfig(api_keys=frozenset({KEY})))


def load(project: Path, name: str, server: EmulatorThread, **overrides: Path) -> Job:
    return load_job(
        project / "jobs" / f"{name}.toml", Overrides(base_url=server.base_url, **overrides)
    )


def ledger(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in part_files(out, "usage")], ignore_index=True)


@pytest.mark.parametrize("name", JOBS)
@pytest.mark.parametrize(
    ("sample", "offline"),
    [(None, False), (200, False), (5, False), (5, True)],
    ids=["all", "default-sample", "sample-5", "offline-sample-5"],
)
def test_estimate_predicts_the_prompt_tokens_a_run_reports(
    project: Path, emulator: EmulatorThread, name: str, sample: int | None, offline: bool
) -> None:
    job = load(project, name, emulator)
    est = estimate_job(job, api_key=KEY, sample=sample, offline=offline)
    counts = emulator.emulator.counts
    assert counts["generateContent"] == 0  # nothing paid for while estimating
    assert counts["countTokens"] == (0 if offline else est.sampled)
    run_job(job, RunOptions(api_key=KEY))
    reported = int(ledger(job.output.directory)["prompt_tokens"].sum())
    assert est.prompt_tokens == pytest.approx(reported, rel=0.10)
    if sample is None or sample >= est.rows:  # every row counted: exactly what was billed
        assert est.prompt_tokens == reported


async def test_count_tokens_counts_the_system_instruction(project: Path) -> None:
    path = project / "jobs" / "cookie_recipes.toml"
    body = RequestBuilder(load_job(path)).body(
        "List 3 vegan cookie recipes.", "You are a pastry chef who writes precise recipes."
    )
    async with EmulatorServer() as server, aiohttp.ClientSession() as session:
        job = load_job(path, Overrides(base_url=server.base_url))
        client = GeminiClient(Transport(session, job.model, KEY, 10))
        contents = json.dumps({"contents": json.loads(body)["contents"]}).encode()
        alone = await client.count_tokens(contents)
        whole = await client.count_tokens(count_request(job.model.name, body))
        answer, _ = await client.generate(body)
    assert alone == rough_tokens("List 3 vegan cookie recipes.")
    assert whole == answer["usageMetadata"]["promptTokenCount"] > alone


def test_output_range_from_the_schema_and_max_output_tokens(
    project: Path, emulator: EmulatorThread
) -> None:
    job = load(project, "cookie_recipes", emulator)
    est = estimate_job(job, api_key=KEY, at=date(2026, 12, 2))
    minimal = rough_tokens(json.dumps(small_answer(job.response_schema), separators=(",", ":")))
    assert (est.output_low, est.output_high) == (12 * minimal, 12 * 8192)
    assert "maxOutputTokens 8,192" in est.output_source
    # gemini-3.8-flash in 2026: 0.75 in, 3.75 out per 1M; output at the ceiling for every row.
    assert est.cost_high == pytest.approx((est.prompt_tokens * 0.75 + 12 * 8192 * 3.75) / 1e6)
    assert est.cost_low == pytest.approx((est.prompt_tokens * 0.75 + 12 * minimal * 3.75) / 1e6)
    # Flex and Batch side by side, each half of standard; the doubling on 2027-01-01 is noted.
    assert est.tier_costs["flex"] == est.tier_costs["batch"]
    assert est.tier_costs["batch"] == pytest.approx((est.cost_low / 2, est.cost_high / 2))
    assert any("price changes on 2027-01-01: 1.5 in / 7.5 out" in n for n in est.notes)
    text = format_estimate(est)
    assert "  cost     standard  USD " in text and "           batch     USD " in text
    assert "priced as gemini-3.8-flash at its rates of 2026-12-02" in text
    # On the day it doubles the estimate doubles (the prompts are counted the same way).
    later = estimate_job(job, api_key=KEY, at=date(2027, 1, 1))
    assert later.cost_high == pytest.approx(2 * est.cost_high)
    # 12 rows at 600 requests per minute; no tokens_per_minute in the job.
    assert est.minutes_requests == pytest.approx(12 / 600) and est.minutes_tokens is None


def test_output_measured_in_a_pilot_run(project: Path, emulator: EmulatorThread) -> None:
    job = load(project, "cookie_recipes", emulator)
    run_job(job, RunOptions(api_key=KEY, limit=4))
    calls = ledger(job.output.directory)
    per_row = float((calls["output_tokens"] + calls["thinking_tokens"]).mean())
    est = estimate_job(job, api_key=KEY)
    assert est.output_low == round(12 * per_row) == est.output_high
    assert est.output_source.startswith(f"measured in {job.output.directory} (4 answers")
    assert est.minutes_latency is not None
    text = format_estimate(est)
    assert "measured in" in text and "USD " in text

    # The same output under a changed prompt is another job: its sizes are not used.
    changed = replace(job, prompt=structs.replace(job.prompt, user=job.prompt.user + " Be brief."))
    est = estimate_job(changed, api_key=KEY)
    assert est.output_high == 12 * 8192
    assert any("written by a different job (prompt.user changed)" in n for n in est.notes)
    with pytest.raises(CheckpointError, match="not a batchgen output"):
        estimate_job(job, api_key=KEY, history=project)


def test_tokens_per_minute_bounds_the_run_time(project: Path, emulator: EmulatorThread) -> None:
    job = load(project, "review_insights", emulator)
    job = replace(
        job, limits=structs.replace(job.limits, tokens_per_minute=100, requests_per_minute=60)
    )
    est = estimate_job(job, api_key=KEY)
    assert est.minutes_tokens == pytest.approx(est.prompt_tokens / 100)
    assert est.minutes == est.minutes_tokens > est.minutes_requests == pytest.approx(20 / 60)
    assert "at tokens_per_minute 100" in format_estimate(est)


def test_an_unpriced_model_has_no_cost(project: Path, emulator: EmulatorThread) -> None:
    job = load_job(
        project / "jobs" / "review_insights.toml",
        Overrides(base_url=emulator.base_url, model="gemini-flash-latest"),
    )
    est = estimate_job(job, api_key=KEY)
    assert est.cost_low is None and est.cost_high is None and est.prompt_tokens > 0
    assert "unpriced" in format_estimate(est)
    assert any("no price for model 'gemini-flash-latest'" in n for n in est.notes)


def test_a_refused_key_or_unknown_model_stops_the_estimate(
    project: Path, emulator: EmulatorThread
) -> None:
    job = load(project, "review_insights", emulator)
    with pytest.raises(FatalApiError, match=r"refused the key in \$GEMINI_API_KEY") as info:
        estimate_job(job, api_key="wrong-key-987")
    assert "wrong-key-987" not in str(info.value)
    with pytest.raises(FatalApiError, match="HTTP 404"):
        estimate_job(replace(job, model=structs.replace(job.model, name="gemini-9")), api_key=KEY)


def test_sample_positions_spread_over_the_input() -> None:
    assert sample_positions(10, 3) == [0, 3, 6]
    assert sample_positions(1000, 4) == [0, 250, 500, 750]
    assert sample_positions(5, 200) == sample_positions(5, None) == [0, 1, 2, 3, 4]


@settings(max_examples=200, deadline=None)
@given(GEMINI_SCHEMAS)
def test_the_minimal_answer_conforms_to_any_schema(schema: dict[str, object]) -> None:
    canonical = normalize_schema(schema, "test")
    assert AnswerValidator(canonical).problem(small_answer(canonical)) is None


@settings(max_examples=150, deadline=None)
@given(JSON_SCHEMAS)
def test_the_minimal_answer_conforms_to_any_json_schema(schema: dict[str, Any]) -> None:
    resolved = resolve_schema({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})
    assert resolved.validator().problem(small_answer(resolved.wire)) is None


def test_a_json_schema_job_estimates_the_same_minimal_answer_as_its_gemini_twin() -> None:
    gemini = json.loads((ROOT / "jobs" / "review_insights.schema.json").read_text())
    twin = {
        "type": "object",
        "$defs": {"Aspect": {"type": "object", "required": ["aspect", "sentiment"],
                             "properties": {"aspect": {"type": "string"},
                                            "sentiment": {"enum": ["positive", "negative"]},
                                            "quote": {"type": ["string", "null"]}}}},
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative", "mixed"]},
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "summary": {"type": "string"},
            "would_recommend": {"type": ["boolean", "null"]},
            "defect_count": {"type": "integer", "minimum": 0, "maximum": 10},
            "aspects": {"type": "array", "maxItems": 5, "items": {"$ref": "#/$defs/Aspect"}},
        },
        "required": ["sentiment", "score", "summary", "defect_count", "aspects"],
    }  # fmt: skip
    assert small_answer(twin) == {
        "sentiment": "mixed", "score": 0.5, "summary": "xxxxxx", "defect_count": 1,
        "aspects": [{"aspect": "xxxxxx", "sentiment": "positive"}],
    }  # fmt: skip
    assert small_answer(twin).keys() == small_answer(normalize_schema(gemini, "g")).keys()
    # before: a JSON Schema read as Gemini's came out as null, estimated at 1 token
    assert rough_tokens(json.dumps(small_answer(twin))) > 10


def test_cli_estimate(project: Path) -> None:
    runner = CliRunner()
    job = str(project / "jobs" / "review_insights.toml")
    result = runner.invoke(main, ["estimate", job, "--emulator", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["rows"], data["sampled"], data["method"]) == (20, 20, "countTokens")
    result = runner.invoke(main, ["estimate", job, "--offline", "--sample", "4"])
    assert result.exit_code == 0, result.output
    assert "on 4 of 20 rows spread over the input, scaled" in result.stdout
    assert "USD " in result.stdout and "at requests_per_minute 1,000" in result.stdout

    result = runner.invoke(main, ["estimate", job])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {job}: no API key: set $GEMINI_API_KEY or $GOOGLE_API_KEY (model.api_key_env), "
        "or use --offline or --emulator\n"
    )


def test_run_time_under_auto_concurrency_is_the_rate_not_a_placeholder(project: Path) -> None:
    """The issue's numbers: 100,000 rows at 1,000 requests a minute after a run that saw 8 s
    answers take about 100 minutes (rate-bound), not 100,000 x 8 s / 32 = 7 hours."""
    job = load_job(project / "jobs" / "review_insights.toml")
    guess = OutputGuess(low=100, high=100, source="earlier run", latency_ms=8_000)

    def bounds(**limits: Any) -> TimeBounds:
        spec = LimitsSpec(requests_per_minute=1_000, **limits)
        return time_bounds(replace(job, limits=spec), guess, rows=100_000, prompt_tokens=1e7)

    auto = bounds()
    # the run's controller: 1,000/60 a second x 8 s x 1.2 headroom = 160 in flight
    assert auto.in_flight == 160 and auto.concurrency is None
    assert auto.minutes_latency == pytest.approx(100_000 * 8 / 160 / 60)
    assert auto.minutes_latency is not None
    assert auto.minutes_latency < auto.minutes_requests == pytest.approx(100)
    # within a ceiling the latency binds: 100 in flight x 8 s each = 12.5 a second
    capped = bounds(max_concurrency=100)
    assert capped.in_flight == 100 and capped.minutes_latency == pytest.approx(100_000 * 8 / 6000)
    # a fixed concurrency is used as given: 32 in flight is the 7 hours
    pinned = bounds(concurrency=32)
    assert (pinned.in_flight, pinned.concurrency) == (32, 32)
    assert pinned.minutes_latency == pytest.approx(100_000 * 8 / 32 / 60)
    # 1,000,000 input tokens a minute at 100 a row: 10,000 rows a minute, so the RPM binds
    assert bounds(tokens_per_minute=1_000_000).minutes_tokens == pytest.approx(10)
    # 40,000 requests a day: three Pacific days, two whole days between the first and last
    assert bounds(requests_per_day=40_000).minutes_daily == 2 * 24 * 60
    assert bounds(requests_per_day=100_000).minutes_daily is None

    def time_line(spec: TimeBounds) -> str:
        est = Estimate(
            "job", "model", 100_000, 100_000, 0, "offline", 10**7, 10**7, 10**7, "", 1.0,
            None, None, None, "", **asdict(spec),
        )  # fmt: skip
        return next(line for line in format_estimate(est).splitlines() if "time" in line)

    assert time_line(auto) == (
        "  time     at least 100.0 min: 100.0 min at requests_per_minute 1,000; 83.3 min at the "
        "earlier run's latency with 160 calls in flight (auto)"
    )
    assert time_line(bounds(requests_per_day=40_000)).endswith(
        "; 3 Pacific days at requests_per_day 40,000 (the run stops at each day's quota; rerun "
        "it the next day)"
    )


@pytest.mark.parametrize(
    ("rows", "rpm", "latency", "limits"),
    [
        (150, 3_000, 0.4, {}),  # rate-bound: 50 a second; auto keeps ~24 in flight
        (64, 60_000, 0.25, {"max_concurrency": 4}),  # latency-bound: 4 in flight / 0.25 s
    ],
    ids=["rate-bound", "latency-bound"],
)
def test_estimated_run_time_matches_a_real_run_under_auto_concurrency(
    tmp_path: Path, rows: int, rpm: int, latency: float, limits: dict[str, int]
) -> None:
    """A pilot run measures the latency; the estimate of the whole job is then within 2x of
    the wall time of running it."""
    path = item_job(
        tmp_path,
        rows,
        limits={"requests_per_minute": rpm, **limits},
        output={"flush_rows": 50, "flush_seconds": 0.2},
    )
    config = EmulatorConfig(api_keys=frozenset({KEY}), latency_ms=latency * 1000, rpm_limit=rpm)
    with EmulatorThread(config) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        run_job(job, RunOptions(api_key=KEY, limit=rows // 4))
        est = estimate_job(job, api_key=KEY, offline=True)
        started = time.monotonic()
        summary = run_job(job, RunOptions(api_key=KEY, fresh=True))
        took = time.monotonic() - started
        assert server.emulator.counts["status:429"] == 0
    assert summary.rows_done == rows and est.in_flight is not None
    bound = "requests" if not limits else "latency"
    minutes = {"requests": est.minutes_requests, "latency": est.minutes_latency}
    assert est.minutes == minutes[bound], est
    print(f"estimated {est.minutes * 60:.2f} s ({est.in_flight} in flight), ran {took:.2f} s")
    assert took / 2 <= est.minutes * 60 <= took * 2
    assert f"{est.in_flight} calls in flight (auto)" in format_estimate(est)
