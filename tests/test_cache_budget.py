"""``--max-cost`` sees a context cache's storage as it accrues: a run whose storage alone
crosses the cap stops by max-cost (exit 6, one line), keeps what it answered, deletes the cache,
and its ledger holds the storage once (the report's total is the run's own)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig
from batchgen.pricing.file import load_prices
from batchgen.reports.report import report
from batchgen.run import caching
from batchgen.store.cache import CACHE_FILE
from batchgen.store.runs import read_run_records
from tests.helpers.caching import cached_job
from tests.helpers.emulator_calls import KEY, StartEmulator
from tests.helpers.outputs import error_ids, read_rows, result_ids

# Input dear and cached cheap, so the cache pays for itself over 300 rows even with storage at
# USD 100,000 per 1M tokens per hour: the ~12k-token cache then stores USD 0.33 a second, and
# crosses a USD 2.5 cap (creation USD 1.2) in about four seconds, long before the rows end.
PRICES = """
[models."gemini-2.5-flash-lite"]
input = 100.0
output = 0.01
cached = 0.01
cache_storage = 100000.0
cache_min_tokens = 1024
"""


def test_storage_that_crosses_max_cost_stops_the_run_and_is_counted_once(
    tmp_path: Path, emulator_factory: StartEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caching, "EXTEND_EVERY_S", 0.1)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    server = emulator_factory(EmulatorConfig(latency_ms=30))
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    rows = 300
    job = cached_job(tmp_path, rows, limits={"requests_per_minute": 1_000_000, "concurrency": 2})
    args = ["run", str(job), "--base-url", server.base_url, "--prices", str(prices)]
    result = CliRunner().invoke(main, [*args, "--max-cost", "2.5", "--quiet"])

    assert result.exit_code == 6, result.output
    assert "--max-cost 2.5 reached" in result.output
    assert "Traceback" not in result.output
    out = tmp_path / "out"
    done = result_ids(out)
    assert 0 < len(done) < rows and error_ids(out) == []  # answered so far: kept
    assert server.emulator.caches_alive() == 0 and not (out / CACHE_FILE).exists()
    usage = read_rows(out, "usage")
    outcomes = [u["outcome"] for u in usage]
    assert outcomes.count("cache_create") == 1 and outcomes.count("cache_storage") == 1
    end = [r for r in read_run_records(out) if r["event"] == "end"][-1]
    assert end["stopped_by"] == "max_cost" and end["cost_usd"] > 2.5
    reported = report([out], prices=load_prices(prices)).total["cost_usd"]
    assert abs(reported - end["cost_usd"]) < 1e-9, (reported, end["cost_usd"])
    # the calls alone stayed far under the cap: it was the storage that crossed it
    calls = [u for u in usage if u["outcome"] not in ("cache_create", "cache_storage")]
    assert len(calls) < 0.5 * 2.5 / 0.0012


def test_a_run_under_the_cap_bills_the_storage_it_accrued_once(
    tmp_path: Path, emulator_factory: StartEmulator, monkeypatch: Any
) -> None:
    """Ticks add the storage to the budget as it accrues; the end adds only the rest: the
    run's cost is the report's, to the cent's billionth."""
    monkeypatch.setattr(caching, "EXTEND_EVERY_S", 0.05)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    server = emulator_factory(EmulatorConfig(latency_ms=20))
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES.replace("100000.0", "1000.0"))
    job = cached_job(tmp_path, 60, limits={"requests_per_minute": 1_000_000, "concurrency": 2})
    args = ["run", str(job), "--base-url", server.base_url, "--prices", str(prices)]
    result = CliRunner().invoke(main, [*args, "--max-cost", "100", "--quiet"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert len(result_ids(out)) == 60
    assert server.emulator.counts["cachedContents.patch"] >= 2  # several ticks
    end = [r for r in read_run_records(out) if r["event"] == "end"][-1]
    reported = report([out], prices=load_prices(prices)).total["cost_usd"]
    assert abs(reported - end["cost_usd"]) < 1e-9, (reported, end["cost_usd"])
    usage = read_rows(out, "usage")
    storage = [u for u in usage if u["outcome"] == "cache_storage"]
    assert len(storage) == 1 and storage[0]["cache_token_hours"] > 0
    # the choice priced at least what the cache cost: creation, storage, the cached tokens
    note = next(n for n in result.output.splitlines() if "prefix every row shares" in n)
    said = re.search(r"about USD ([0-9.]+) for it", note)
    assert said is not None
    decided = float(said.group(1))
    created = next(u for u in usage if u["outcome"] == "cache_create")["prompt_tokens"]
    cached = sum(u["cached_tokens"] or 0 for u in usage)
    stored = storage[0]["cache_token_hours"]
    assert decided >= (created * 100.0 + stored * 1000.0 + cached * 0.01) / 1e6
