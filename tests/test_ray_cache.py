"""``--engine ray`` with the context cache, on a real local Ray against the emulator: the driver
creates one cache and deletes it at the end, every worker's calls name it, and a cache the API
stops taking is dropped by every worker with each row still answered."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig
from batchgen.errors import BudgetReachedError
from batchgen.job.spec import Overrides, load_job
from batchgen.pricing.file import load_prices
from batchgen.reports.report import report
from batchgen.run import caching
from batchgen.run.runner import RunOptions, RunSummary, run_job
from batchgen.store.cache import CACHE_FILE
from tests.helpers.caching import FAST, cached_job
from tests.helpers.emulator_calls import KEY, StartEmulator
from tests.helpers.jobs import item_job
from tests.helpers.media import pdf, png
from tests.helpers.outputs import read_rows, result_ids


def run_ray(path: Path, base_url: str, address: str, **options: Any) -> RunSummary:
    job = load_job(path, Overrides(base_url=base_url))
    opts = RunOptions(api_key=KEY, handle_signals=False, engine="ray", ray_address=address)
    return run_job(job, replace(opts, **options))


def test_ray_workers_send_the_drivers_one_cache_and_it_costs_at_most_half(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str
) -> None:
    server = emulator_factory(EmulatorConfig(record=True, latency_ms=10))
    emulator = server.emulator
    cached, plain = tmp_path / "cached", tmp_path / "plain"
    cached.mkdir(), plain.mkdir()
    summary = run_ray(cached_job(cached, 100), server.base_url, ray_address, prices=load_prices())
    counts = emulator.counts
    assert summary.exit_code == 0 and summary.rows_done == 100 and summary.rows_failed == 0
    assert counts["cachedContents.create"] == 1 and counts["cachedContents.delete"] == 1
    assert counts["cachedContent:used"] >= 0.95 * counts["generateContent"]
    assert emulator.caches_alive() == 0 and not (cached / "out" / CACHE_FILE).exists()
    assert not any("--engine ray" in n for n in summary.notes)
    assert any("prefix every row shares is cached" in n for n in summary.notes)
    used = counts["cachedContent:used"]

    plain_run = run_ray(cached_job(plain, 100, mode="off"), server.base_url, ray_address)
    assert plain_run.rows_done == 100
    assert emulator.counts["cachedContents.create"] == 1  # mode = "off": none
    assert emulator.counts["cachedContent:used"] == used

    with_cache, without = report([cached / "out"]), report([plain / "out"])
    assert with_cache.total["requests"] == without.total["requests"] == 100
    assert summary.cost is not None and abs(summary.cost - with_cache.total["cost_usd"]) < 1e-9
    ratio = with_cache.total["cost_usd"] / without.total["cost_usd"]
    assert ratio <= 0.5, ratio
    outcomes = [u["outcome"] for u in read_rows(cached / "out", "usage")]
    assert outcomes.count("cache_create") == 1 and outcomes.count("cache_storage") == 1


def test_a_cache_that_vanishes_under_the_workers_is_dropped_by_all_and_every_row_answered(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str
) -> None:
    server = emulator_factory(EmulatorConfig(record=True, latency_ms=20))
    emulator = server.emulator

    def expire_after_some_calls() -> None:
        deadline = time.monotonic() + 120
        while emulator.counts["generateContent"] < 30 and time.monotonic() < deadline:
            time.sleep(0.005)
        emulator.caches.entries.clear()  # gone, as an expired entry is: 403 on use

    killer = threading.Thread(target=expire_after_some_calls)
    killer.start()
    rows = 200
    summary = run_ray(cached_job(tmp_path, rows), server.base_url, ray_address)
    killer.join()
    assert summary.exit_code == 0 and summary.rows_done == rows and summary.rows_failed == 0
    assert sorted(result_ids(tmp_path / "out")) == sorted(f"r{i}" for i in range(rows))
    said = [n for n in summary.notes if "refused" in n]
    assert len(said) == 1 and "rest of the run is uncached" in said[0]
    used = emulator.counts["cachedContent:used"]
    assert 30 <= used < rows
    named = sum(1 for b in emulator.received if b.get("cachedContent"))
    # refused calls: at most the rows in flight when the cache went (the driver tells the rest)
    assert named - used <= FAST["concurrency"], (named, used)
    assert emulator.counts["generateContent"] == rows + named - used  # each refusal resent once
    assert not (tmp_path / "out" / CACHE_FILE).exists()


def test_a_create_the_api_refuses_leaves_a_ray_run_uncached_through_the_cli(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str, monkeypatch: Any
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    server = emulator_factory(EmulatorConfig(cache_refuse=True))
    args = ["run", str(cached_job(tmp_path, 30)), "--base-url", server.base_url]
    result = CliRunner().invoke(
        main, [*args, "--engine", "ray", "--ray-address", ray_address, "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "30 rows done, 0 failed" in result.output
    assert server.emulator.counts["cachedContent:used"] == 0
    assert server.emulator.caches_alive() == 0


def test_the_caches_storage_crossing_max_cost_stops_a_ray_run(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str, monkeypatch: Any
) -> None:
    """Storage at USD 100,000 per 1M tokens per hour (USD 0.33 a second for this cache): the
    driver's budget sees it at each tick and the run stops by max-cost (exit 6), rows kept."""
    monkeypatch.setattr(caching, "EXTEND_EVERY_S", 0.1)
    server = emulator_factory(EmulatorConfig(latency_ms=30))
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[models."gemini-2.5-flash-lite"]\ninput = 100.0\noutput = 0.01\ncached = 0.01\n'
        "cache_storage = 100000.0\ncache_min_tokens = 1024\n"
    )
    table = load_prices(prices)
    rows = 300
    job = cached_job(tmp_path, rows, limits={"requests_per_minute": 1_000_000, "concurrency": 2})
    with pytest.raises(BudgetReachedError) as stopped:
        run_ray(job, server.base_url, ray_address, prices=table, max_cost=2.5)
    assert stopped.value.exit_code == 6 and "max_cost $2.5 reached" in str(stopped.value)
    out = tmp_path / "out"
    assert 0 < len(result_ids(out)) < rows
    assert server.emulator.caches_alive() == 0 and not (out / CACHE_FILE).exists()
    outcomes = [u["outcome"] for u in read_rows(out, "usage")]
    assert outcomes.count("cache_storage") == 1
    summary = stopped.value.summary
    assert summary is not None and summary.cost is not None
    assert abs(report([out], prices=table).total["cost_usd"] - summary.cost) < 1e-9


def test_ray_workers_send_each_rows_media_and_the_context_held_in_the_cache(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str
) -> None:
    """A media row on a worker carries its own file; the context PDF lives in the driver's
    cache, and with the cache off every row carries it again."""
    server = emulator_factory(EmulatorConfig(record=True, latency_ms=10))
    emulator = server.emulator
    for mode in ("auto", "off"):
        folder = tmp_path / mode
        folder.mkdir()
        (folder / "manual.pdf").write_bytes(pdf(48))
        (folder / "p.png").write_bytes(png(40, 30))
        path = item_job(folder, 0, cache={"mode": mode}, limits=FAST,
                        model={"name": "gemini-3.8-flash"})  # fmt: skip
        media = '[prompt]\ncontext = ["manual.pdf"]\nmedia = ["image"]\n'
        path.write_text(path.read_text().replace("[prompt]\n", media, 1))
        with (folder / "rows.csv").open("w") as f:
            f.write("id,name,image\n")
            f.writelines(f"r{i},item-{i},p.png\n" for i in range(30))
        before = len(emulator.received)
        summary = run_ray(path, server.base_url, ray_address)
        assert (summary.exit_code, summary.rows_done, summary.rows_failed) == (0, 30, 0)
        sent = emulator.received[before:]
        kinds = [[next(iter(p)) for t in b["contents"] for p in t["parts"]] for b in sent]
        assert len(sent) == 30
        if mode == "auto":  # the row's image and text; the manual is in the cache
            assert all(b.get("cachedContent") for b in sent)
            assert all(len(k) == 2 and k[-1] == "text" and "text" not in k[0] for k in kinds)
        else:  # the manual, the image, the text
            assert all(len(k) == 3 and k[-1] == "text" for k in kinds)
    assert emulator.caches_alive() == 0
