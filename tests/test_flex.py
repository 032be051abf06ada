"""The Flex tier: the job key and --tier, the request, the served tier in the ledger and in the
cost, capacity errors, the fallback to standard, and the emulator's side of it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import batchgen
from batchgen.backends.online.caller import FlexFallback
from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorServer, EmulatorThread
from batchgen.errors import JobError
from batchgen.gemini.client import ApiError, served_tier
from batchgen.gemini.request import RequestBuilder, request_hash, standard_body
from batchgen.job.spec import FLEX_TIMEOUT_SECONDS, LimitsSpec, Overrides, RetrySpec, load_job
from batchgen.pricing.budget import Budget
from batchgen.pricing.file import load_prices
from batchgen.records import Usage
from batchgen.reports.report import report as build_report
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.jobfile import fingerprint_parts
from batchgen.store.layout import part_files
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.paths import ROOT, write_job

KEY = "test-key-123456"
MODEL = "gemini-2.5-flash-lite"  # 0.10 in, 0.40 out per 1M at standard


def flex_job(folder: Path, rows: int = 20, extra: str = "", tier: str = "flex") -> Path:
    """review_insights' schema and prompt over ``rows`` reviews (the sample repeated)."""
    sample = pq.read_table(ROOT / "sample_inputs" / "product_reviews.parquet")
    table = pa.concat_tables([sample] * (rows // sample.num_rows + 1)).slice(0, rows)
    ids = pa.array([f"rv-{i:05d}" for i in range(rows)])
    pq.write_table(table.set_column(0, "review_id", ids), folder / "reviews.parquet")
    schema = (ROOT / "jobs" / "review_insights.schema.json").read_text()
    (folder / "schema.json").write_text(schema)
    return write_job(
        folder,
        f"""
        name = "flex_reviews"
        schema_file = "schema.json"
        [input]
        path = "reviews.parquet"
        id_column = "review_id"
        [model]
        name = "{MODEL}"
        tier = "{tier}"
        [prompt]
        user = "Product: {{{{ product }}}}. Review: {{{{ review_text }}}}"
        [generation]
        thinkingConfig = {{ thinkingBudget = 0 }}
        [limits]
        requests_per_minute = 1000000
        concurrency = 64
        [retry]
        attempts = 12
        backoff_initial_seconds = 0.005
        backoff_max_seconds = 0.02
        {extra}
        [output]
        directory = "out"
        """,
    )


def ledger(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in part_files(out, "usage")], ignore_index=True)


# --- the job file and --tier ---------------------------------------------------------------


def test_tier_defaults_to_standard_and_flex_waits_longer(tmp_path: Path) -> None:
    standard = load_job(flex_job(tmp_path, tier="standard"))
    assert standard.model.tier == "standard"
    assert standard.limits.timeout_seconds == LimitsSpec().timeout_seconds
    flex = load_job(standard.path, Overrides(tier="flex"))
    assert flex.model.tier == "flex" and flex.limits.timeout_seconds == FLEX_TIMEOUT_SECONDS
    # the same job: same fingerprint, so the same output directory goes on
    assert fingerprint_parts(flex) == fingerprint_parts(standard)


def test_a_timeout_the_job_sets_is_kept_at_flex(tmp_path: Path) -> None:
    path = flex_job(tmp_path, extra="")
    text = path.read_text().replace("concurrency = 64", "concurrency = 64\ntimeout_seconds = 42")
    path.write_text(text)
    assert load_job(path).limits.timeout_seconds == 42


def test_bad_tiers_are_one_line_errors(tmp_path: Path) -> None:
    path = flex_job(tmp_path, tier="cheap")
    with pytest.raises(JobError) as err:
        load_job(path)
    expected = f'{path}: model.tier must be "standard" or "flex" or "batch", not \'cheap\''
    assert str(err.value) == expected
    path = flex_job(tmp_path, extra="flex_fallback_seconds = 0")
    with pytest.raises(JobError, match=r"retry.flex_fallback_seconds must be > 0"):
        load_job(path)


def test_estimate_marks_the_tier(tmp_path: Path) -> None:
    path = flex_job(tmp_path)
    runner = CliRunner()
    for tier in ("standard", "flex", "batch"):  # estimate prices every tier, batch too
        result = runner.invoke(main, ["estimate", str(path), "--offline", "--tier", tier])
        assert result.exit_code == 0, result.output
        lines = [re.search(r"(\w+) +USD ([0-9.]+)", ln) for ln in result.stdout.splitlines()]
        usd = {m.group(1): m for m in lines if m is not None}
        assert list(usd) == ["standard", "flex", "batch"]
        marked = [t for t, m in usd.items() if "← this job's tier" in m.string]
        assert marked == [tier]
        low = {t: float(m.group(2)) for t, m in usd.items()}
        assert low["flex"] == pytest.approx(low["standard"] / 2, rel=0.01)


# --- the request and the client ------------------------------------------------------------


def test_flex_request_carries_service_tier_at_the_top_and_hashes_as_standard(
    tmp_path: Path,
) -> None:
    standard = load_job(flex_job(tmp_path, tier="standard"))
    flex = load_job(standard.path, Overrides(tier="flex"))
    plain = RequestBuilder(standard).body("hello", "be brief")
    body = RequestBuilder(flex).body("hello", "be brief")
    assert "serviceTier" not in json.loads(plain)  # standard requests are as before
    decoded = json.loads(body)
    assert decoded["serviceTier"] == "flex" and "serviceTier" not in decoded["generationConfig"]
    assert {k: v for k, v in decoded.items() if k != "serviceTier"} == json.loads(plain)
    assert request_hash(body) == request_hash(plain)
    assert standard_body(body) == plain and standard_body(plain) == plain


@pytest.mark.parametrize(
    ("header", "payload", "expected"),
    [
        ("flex", {}, "flex"),
        ("Standard", {"usageMetadata": {"serviceTier": "flex"}}, "standard"),
        (None, {"usageMetadata": {"serviceTier": "SERVICE_TIER_FLEX"}}, "flex"),
        (None, {"usageMetadata": {"serviceTier": "unspecified"}}, "standard"),
        (None, {"usageMetadata": {}}, None),
        ("<script>", [], None),
    ],
)
def test_served_tier(header: str | None, payload: Any, expected: str | None) -> None:
    assert served_tier(header, payload) == expected


# --- the emulator --------------------------------------------------------------------------


def ask(tier_key: str | None = "serviceTier", tier: Any = "flex") -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}
    if tier_key is not None:
        body[tier_key] = tier
    return body


async def test_emulator_reads_service_tier_as_an_enum_and_says_who_served() -> None:
    config = EmulatorConfig(script={"hi": ["capacity"] * 3})
    async with EmulatorServer(config) as server, aiohttp.ClientSession() as session:
        url = f"{server.base_url}/v1beta/models/{MODEL}:generateContent"

        async def post(body: dict[str, Any]) -> tuple[int, str | None, Any]:
            async with session.post(url, json=body, headers={"x-goog-api-key": KEY}) as resp:
                return resp.status, resp.headers.get("x-gemini-service-tier"), await resp.json()

        standard = await post(ask(None))  # a scripted capacity fault is no fault at standard
        assert standard[:2] == (200, "standard")
        status, _, error = await post(ask())
        assert (status, error["error"]["status"]) == (503, "UNAVAILABLE")
        assert "capacity" in error["error"]["message"]
        assert (await post(ask("service_tier", "SERVICE_TIER_FLEX")))[0] == 503
        flex = await post(ask("service_tier", "FLEX"))
        assert flex[:2] == (200, "flex")
        assert flex[2]["candidates"] == standard[2]["candidates"]  # same answer at every tier
        assert (await post(ask(tier="priority")))[1] == "priority"
        assert (await post(ask(tier="unspecified")))[1] == "standard"
        for wrong in ("cheap", 2, {"tier": "flex"}):
            status, _, error = await post(ask(tier=wrong))
            assert status == 400 and error["error"]["status"] == "INVALID_ARGUMENT"
            assert "service_tier" in error["error"]["message"].replace(
                "serviceTier", "service_tier"
            )
        counts = server.emulator.counts
        assert (counts["tier:flex"], counts["tier:standard"], counts["fault:capacity"]) == (1, 2, 2)


def test_emulator_config_checks_the_standard_share() -> None:
    with pytest.raises(ValueError, match="flex_standard_share"):
        EmulatorConfig(flex_standard_share=1.5)


# --- runs ----------------------------------------------------------------------------------


@pytest.fixture
def flaky_flex(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(
        fault_rates={"capacity": 0.1}, flex_standard_share=0.3, seed=12, record=True
    )


def test_a_thousand_flex_rows_are_billed_at_the_tier_that_served_each(
    tmp_path: Path, flaky_flex: EmulatorThread
) -> None:
    job = load_job(flex_job(tmp_path, rows=1000), Overrides(base_url=flaky_flex.base_url))
    summary = run_job(job, RunOptions(api_key=KEY, prices=load_prices()))
    counts = flaky_flex.emulator.counts

    assert (summary.rows_done, summary.rows_failed) == (1000, 0)
    assert counts["fault:capacity"] > 50  # about 10% of the calls were refused, and retried
    calls = ledger(job.output.directory)
    served = calls["tier"].value_counts().to_dict()
    assert served == {"flex": counts["tier:flex"], "standard": counts["tier:standard"]}
    assert 200 < served["standard"] < 400  # about 30% of the answers
    assert all(b["serviceTier"] == "flex" for b in flaky_flex.emulator.received)
    assert {h.get("X-Server-Timeout") for h in flaky_flex.emulator.received_headers} == {"900"}

    # the report prices each call at its tier: flex at half of 0.10 in / 0.40 out per 1M
    factor = calls["tier"].map({"flex": 0.5, "standard": 1.0})
    per_call = (calls["prompt_tokens"] * 0.10 + calls["output_tokens"] * 0.40) / 1e6 * factor
    rep = build_report([job.output.directory])
    assert rep.total["cost_usd"] == pytest.approx(per_call.sum())
    assert rep.total["requests"] == len(calls) == counts["status:200"]
    assert summary.cost == pytest.approx(per_call.sum())  # the run's own bill (--max-cost's)


def test_flex_rows_fall_back_to_standard_after_the_deadline(tmp_path: Path) -> None:
    path = flex_job(tmp_path, rows=3, extra="flex_fallback_seconds = 0.001")
    config = EmulatorConfig(script={"rv-": [], "": ["capacity"] * 100}, record=True)
    with EmulatorThread(config) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        summary = run_job(job, RunOptions(api_key=KEY))
        bodies = server.emulator.received
    assert (summary.rows_done, summary.rows_failed) == (3, 0)
    # each row: a first refusal starts the clock, a second one after it ends Flex for the row
    assert [b.get("serviceTier") for b in bodies].count("flex") == 6
    assert [b.get("serviceTier") for b in bodies].count(None) == 3
    assert set(ledger(job.output.directory)["tier"]) == {"standard"}


def test_without_a_fallback_flex_rows_keep_asking_for_flex(tmp_path: Path) -> None:
    path = flex_job(tmp_path, rows=2)
    config = EmulatorConfig(script={"": ["capacity"] * 4}, record=True)
    with EmulatorThread(config) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        summary = run_job(job, RunOptions(api_key=KEY))
        tiers = {b.get("serviceTier") for b in server.emulator.received}
    assert summary.rows_done == 2 and tiers == {"flex"}
    assert set(ledger(job.output.directory)["tier"]) == {"flex"}


def test_the_python_api_takes_the_tier() -> None:
    rows = [{"text": f"thing {i}"} for i in range(3)]
    schema = {"type": "OBJECT", "properties": {"label": {"type": "STRING"}}}
    config = EmulatorConfig(flex_standard_share=1.0, record=True)
    with EmulatorThread(config) as server:
        frame = batchgen.generate(rows, prompt="Name {{ text }}", schema=schema, model=MODEL,
                                  base_url=server.base_url, api_key=KEY, tier="flex")  # fmt: skip
        asked = {b.get("serviceTier") for b in server.emulator.received}
        batched = batchgen.generate(rows, prompt="Name {{ text }}", schema=schema, model=MODEL,
                                    base_url=server.base_url, api_key=KEY, tier="batch",
                                    batch={"poll_initial_seconds": 0.01})  # fmt: skip
        submitted = server.emulator.counts["batch_rows"]
    assert list(frame["status"]) == ["ok"] * 3 and asked == {"flex"}
    assert list(batched["status"]) == ["ok"] * 3 and submitted == 3


def test_fallback_counts_from_the_first_capacity_refusal() -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    clock = {"t": now}
    fallback = FlexFallback("flex", RetrySpec(flex_fallback_seconds=60), lambda: clock["t"])
    fallback.refused(ApiError("server", "HTTP 500", 500))  # not a capacity refusal
    clock["t"] = now + timedelta(seconds=30)
    fallback.refused(ApiError("server", "HTTP 503", 503))
    clock["t"] = now + timedelta(seconds=89)
    fallback.refused(ApiError("rate_limited", "429", 429))
    assert fallback.tier == "flex"
    clock["t"] = now + timedelta(seconds=90)
    fallback.refused(ApiError("server", "HTTP 503", 503))
    assert fallback.tier == "standard"


async def test_budget_reserves_at_the_tier_asked_and_settles_at_the_tier_served() -> None:
    prices = load_prices()
    day = datetime(2026, 12, 2).date()
    budget = Budget(prices, MODEL, cap=1.0, max_output_tokens=1000, today=lambda: day)
    flex_hold = await budget.reserve(1_000_000, "flex")
    budget.settle(flex_hold, None)
    standard_hold = await budget.reserve(1_000_000)
    assert flex_hold == pytest.approx(standard_hold / 2)
    budget.settle(standard_hold, Usage(prompt=1_000_000, output=1_000_000), "flex")
    assert budget.spent == pytest.approx((0.10 + 0.40) / 2)
    hold = await budget.reserve(10, "flex")
    budget.settle(hold, Usage(prompt=1_000_000, output=1_000_000), "standard")
    assert budget.spent == pytest.approx((0.10 + 0.40) * 1.5)
