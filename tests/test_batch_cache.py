"""A context cache in Batch Mode against the emulator: probed with a one-row batch, then named by
every line of the main batch, deleted once the batches are collected; refused by the probe, the
run goes uncached; a run that does not wait keeps it for the run that collects; a short prefix is
not cached; estimate shows both costs at batch rates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchgen.backends.batch.cache import DEFAULT_BATCH_S, MARGIN_S
from batchgen.cli.render import format_estimate
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import BatchPendingError, RunStoppedError
from batchgen.gemini.request import Prefix, RequestBuilder
from batchgen.job.spec import Overrides, load_job
from batchgen.pricing.file import load_prices
from batchgen.reports.estimate import estimate_job
from batchgen.reports.report import report
from batchgen.run.runner import RunOptions, RunSummary, run_job
from batchgen.store.batches import BatchStore
from batchgen.store.cache import CACHE_FILE, read_cache_record
from tests.helpers.caching import SYSTEM, cached_job
from tests.helpers.emulator_calls import KEY
from tests.helpers.jobs import item_job
from tests.helpers.media import pdf, png
from tests.helpers.outputs import read_rows, result_ids
from tests.helpers.paths import ROOT

FAST = EmulatorConfig(batch_pending_s=0.05, batch_running_s=0.1)
BATCH = {"rows_per_chunk": 500, "poll_initial_seconds": 0.02, "poll_max_seconds": 0.05}


def batch_job(folder: Path, rows: int, mode: str = "auto", system: str = SYSTEM) -> Path:
    """``rows`` rows at tier "batch" whose requests share ``system`` (the cacheable prefix)."""
    return cached_job(folder, rows, mode, system, model={"tier": "batch"}, batch=BATCH)


def run(path: Path, server: EmulatorThread, **options: Any) -> RunSummary:
    job = load_job(path, Overrides(base_url=server.base_url))
    return run_job(job, RunOptions(api_key=KEY, handle_signals=False, **options))


def cache_notes(summary: RunSummary) -> list[str]:
    return [n for n in summary.notes if "cache" in n]


def test_probe_then_every_line_names_the_cache_and_it_is_deleted_at_the_end(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(FAST)
    counts = server.emulator.counts
    cached, plain = tmp_path / "cached", tmp_path / "plain"
    cached.mkdir(), plain.mkdir()
    summary = run(batch_job(cached, 100), server, prices=load_prices())
    assert (summary.exit_code, summary.rows_done, summary.rows_failed) == (0, 100, 0)
    assert counts["batchGenerateContent"] == 2  # the probe (one row), then the other 99
    assert counts["batch_rows"] == 100 and counts["batch_rows_repeated"] == 0
    assert counts["cachedContent:used"] == 100  # every line named the cache, the probe's too
    assert counts["cachedContents.create"] == counts["cachedContents.delete"] == 1
    assert server.emulator.caches_alive() == 0
    assert not (cached / "out" / CACHE_FILE).exists()
    chunks = list(BatchStore(cached / "out").records().values())
    assert [len(c.rows) for c in chunks] == [1, 99]
    assert {c.state for c in chunks} == {"collected"}
    assert sorted(result_ids(cached / "out")) == sorted(f"r{i}" for i in range(100))
    said = cache_notes(summary)
    assert any(n.startswith("batch: context cache, probed first") for n in said), said
    lines = (cached / "out" / "batches").glob("chunk-*.jsonl")
    requests = [json.loads(x)["request"] for f in lines for x in f.read_text().splitlines()]
    assert len(requests) == 100 and all(r.get("cachedContent") for r in requests)
    assert not any("systemInstruction" in r for r in requests)  # it lives in the cache

    off = run(batch_job(plain, 100, mode="off"), server)
    assert off.rows_done == 100 and counts["cachedContents.create"] == 1
    assert any("the batch discount is relied on" in n for n in off.notes)
    with_cache, without = report([cached / "out"]), report([plain / "out"])
    assert with_cache.total["requests"] == without.total["requests"] == 100
    assert with_cache.total["cached_tokens"] > 0.9 * without.total["prompt_tokens"]
    assert summary.cost == pytest.approx(with_cache.total["cost_usd"])
    ratio = with_cache.total["cost_usd"] / without.total["cost_usd"]
    assert ratio < 0.8, ratio  # storage for the expected batch hours included
    outcomes = [u["outcome"] for u in read_rows(cached / "out", "usage")]
    assert outcomes.count("cache_create") == outcomes.count("cache_storage") == 1


def test_a_refused_probe_sends_the_run_uncached_said_once(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(
        EmulatorConfig(batch_pending_s=0.05, batch_running_s=0.1, batch_cache_refuse=True)
    )
    counts = server.emulator.counts
    summary = run(batch_job(tmp_path, 100), server)
    assert (summary.exit_code, summary.rows_done, summary.rows_failed) == (0, 100, 0)
    assert counts["batchGenerateContent"] == 2  # the probe, then all 100 uncached
    assert counts["batch_cache_refused"] == 1 and counts["cachedContent:used"] == 0
    assert counts["batch_rows"] == 101  # the probe's row once more, uncached (unpaid at first)
    assert server.emulator.caches_alive() == 0
    assert not (tmp_path / "out" / CACHE_FILE).exists()
    said = [n for n in summary.notes if "relied on" in n]
    assert len(said) == 1 and "does not support cached content with batch" in said[0], said
    assert sorted(result_ids(tmp_path / "out")) == sorted(f"r{i}" for i in range(100))
    usage = read_rows(tmp_path / "out", "usage")
    assert sum(u["row_id"] == "r0" for u in usage) == 1  # billed once
    outcomes = [u["outcome"] for u in usage]
    assert outcomes.count("cache_create") == outcomes.count("cache_storage") == 1


def test_a_run_that_does_not_wait_keeps_the_cache_for_the_run_that_collects(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(
        EmulatorConfig(batch_pending_s=0.4, batch_running_s=0.1)
    )
    path = batch_job(tmp_path, 100)
    with pytest.raises(BatchPendingError) as pending:
        run(path, server, wait=False)
    out = tmp_path / "out"
    record = read_cache_record(out)
    assert record is not None and server.emulator.caches_alive() == 1
    assert record.name in server.emulator.caches.entries
    notes = pending.value.summary.notes if pending.value.summary else []
    assert any("kept for the batches still running" in n for n in notes), notes
    assert len(result_ids(out)) == 1  # the probe's row, answered while submitting

    done = run(path, server)
    assert done.exit_code == 0 and sorted(result_ids(out)) == sorted(f"r{i}" for i in range(100))
    assert server.emulator.counts["cachedContent:used"] == 100
    assert server.emulator.caches_alive() == 0 and not (out / CACHE_FILE).exists()
    assert server.emulator.counts["cachedContents.create"] == 1
    assert any(f"{record.name} is deleted: no batch names it" in n for n in done.notes)


def test_a_run_stopped_while_probing_leaves_the_probe_to_the_next_run(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(
        EmulatorConfig(batch_pending_s=1.0, batch_running_s=0.1)
    )
    path = batch_job(tmp_path, 100)
    with pytest.raises(RunStoppedError):
        run(path, server, time_budget=0.3)  # stops while the probe batch is pending
    out = tmp_path / "out"
    assert read_cache_record(out) is not None and server.emulator.caches_alive() == 1
    assert [len(c.rows) for c in BatchStore(out).open_chunks()] == [1]
    done = run(path, server)
    assert done.exit_code == 0
    assert sorted(result_ids(out)) == sorted(f"r{i}" for i in range(100))
    counts = server.emulator.counts
    assert counts["batch_rows"] == 100 and counts["batch_rows_repeated"] == 0
    assert counts["cachedContent:used"] == 100 and counts["cachedContents.create"] == 1
    assert server.emulator.caches_alive() == 0 and not (out / CACHE_FILE).exists()


def test_media_rows_name_their_files_and_the_cache_without_the_prefix(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(FAST)
    path = batch_job(tmp_path, 0)
    path.write_text(path.read_text().replace("[prompt]\n", '[prompt]\nmedia = ["image"]\n', 1))
    (tmp_path / "media").mkdir()
    for i in range(4):
        (tmp_path / "media" / f"p{i}.png").write_bytes(png(40 + i, 30))
    with (tmp_path / "rows.csv").open("w") as f:
        f.write("id,name,image\n")
        f.writelines(f"r{i},item-{i},media/p{i % 4}.png\n" for i in range(100))
    summary = run(path, server)
    assert (summary.exit_code, summary.rows_done) == (0, 100), summary.notes
    assert server.emulator.counts["cachedContent:used"] == 100
    assert server.emulator.caches_alive() == 0
    lines = (tmp_path / "out" / "batches").glob("chunk-*.jsonl")
    requests = [json.loads(x)["request"] for f in lines for x in f.read_text().splitlines()]
    assert len(requests) == 100
    for request in requests:  # the row's own turn: its image and text, the prefix in the cache
        assert request["cachedContent"] and "systemInstruction" not in request
        (turn,) = request["contents"]
        assert [next(iter(p)) for p in turn["parts"]] == ["fileData", "text"]
        assert "household" not in json.dumps(request)


def test_a_short_prefix_is_not_cached_in_batch(tmp_path: Path, emulator_factory: Any) -> None:
    server: EmulatorThread = emulator_factory(FAST)
    summary = run(batch_job(tmp_path, 20, system="Label things briefly."), server)
    assert summary.rows_done == 20
    assert server.emulator.counts["cachedContents.create"] == 0
    assert server.emulator.counts["batchGenerateContent"] == 1  # no probe
    said = [n for n in summary.notes if "relied on" in n]
    assert len(said) == 1 and "below the model minimum" in said[0], said


def test_estimate_shows_both_costs_at_batch_rates(tmp_path: Path, emulator_factory: Any) -> None:
    server: EmulatorThread = emulator_factory(FAST)
    job = load_job(batch_job(tmp_path, 200), Overrides(base_url=server.base_url))
    est = estimate_job(job, api_key=KEY, prices=load_prices())
    assert est.cache is not None and est.cache_use == "cache"
    assert est.cache.hours == pytest.approx((DEFAULT_BATCH_S + MARGIN_S) / 3600)
    price = load_prices().resolve(job.model.name)
    assert price is not None
    batch = price.rates("batch")
    assert batch.cached == price.rates("standard").cached  # cache hits at standard rates
    per_call = est.cache.prefix_tokens * batch.input / 1e6
    assert est.cache.without == pytest.approx(200 * per_call)
    text = format_estimate(est)
    assert "at batch rates" in text and "batch: cache, probed first" in text

    few = load_job(batch_job(tmp_path, 3), Overrides(base_url=server.base_url))
    est = estimate_job(few, api_key=KEY, prices=load_prices())
    assert est.cache_use == "no cache"
    assert "batch: no cache, the batch discount is relied on (" in format_estimate(est)


COOKIES = load_job(ROOT / "jobs" / "cookie_recipes.toml")


@given(user=st.text(), system=st.text(), name=st.text(min_size=1))
def test_a_line_that_named_a_cache_is_restored_whole(user: str, system: str, name: str) -> None:
    """The online fallback asks a batch line whole: ``uncached`` undoes ``cached`` exactly."""
    builder = RequestBuilder(COOKIES, RequestBuilder.turns([("q", "a")]))
    prefix = Prefix(COOKIES.model.name, system, builder.examples)
    body = builder.body(user, system)
    cached = builder.cached(body, prefix, f"cachedContents/{name}")
    assert isinstance(cached, bytes) and cached != body
    assert builder.uncached(cached, prefix) == body
    assert builder.uncached(body, prefix) == body  # a line that named no cache stays as it is


def context_batch_job(folder: Path, rows: int) -> Path:
    """``rows`` rows at tier "batch" sharing a 48-page PDF as context (~12k tokens), no system
    instruction."""
    (folder / "manual.pdf").write_bytes(pdf(48))
    model = {"name": "gemini-3.8-flash", "tier": "batch"}  # a cache pays from a few rows
    path = item_job(folder, rows, model=model, batch=BATCH)
    path.write_text(path.read_text().replace("[prompt]\n", '[prompt]\ncontext = ["manual.pdf"]\n'))
    return path


def chunk_requests(out: Path) -> list[dict[str, Any]]:
    lines = sorted((out / "batches").glob("chunk-*.jsonl"))
    return [json.loads(x)["request"] for f in lines for x in f.read_text().splitlines()]


@pytest.mark.parametrize("refuse", [False, True])
def test_context_files_go_in_the_cache_not_in_the_lines_unless_it_is_refused(
    tmp_path: Path, emulator_factory: Any, refuse: bool
) -> None:
    config = EmulatorConfig(batch_pending_s=0.05, batch_running_s=0.1, batch_cache_refuse=refuse)
    server: EmulatorThread = emulator_factory(config)
    summary = run(context_batch_job(tmp_path, 40), server)
    assert (summary.exit_code, summary.rows_done, summary.rows_failed) == (0, 40, 0)
    assert server.emulator.caches_alive() == 0
    requests = chunk_requests(tmp_path / "out")
    kinds = [[next(iter(p)) for t in r["contents"] for p in t["parts"]] for r in requests]
    if not refuse:  # each line: the row's text only, naming the cache that holds the manual
        assert len(requests) == 40 and all(r.get("cachedContent") for r in requests)
        assert all(k == ["text"] for k in kinds)
        assert server.emulator.counts["cachedContent:used"] == 40
    else:  # the probe line named the cache; the 40 lines after it carry the manual again
        main = requests[1:]
        assert len(main) == 40 and not any(r.get("cachedContent") for r in main)
        assert all(k == ["fileData", "text"] for k in kinds[1:])


@pytest.mark.parametrize("context", [False, True])
def test_lines_whose_cache_expired_are_asked_online_whole(
    tmp_path: Path, emulator_factory: Any, context: bool
) -> None:
    """A --no-wait run's cache expires before its batch runs: every line fails on it, and the
    collecting run's online fallback asks those rows without the dead cache, with what the cache
    held put back (the system instruction, or the context file before the row's text)."""
    config = EmulatorConfig(batch_pending_s=0.4, batch_running_s=0.1, record=True)
    server: EmulatorThread = emulator_factory(config)
    path = context_batch_job(tmp_path, 100) if context else batch_job(tmp_path, 100)
    path.write_text(path.read_text().replace("[batch]\n", '[batch]\nfallback = "online"\n', 1))
    with pytest.raises(BatchPendingError):
        run(path, server, wait=False)
    server.emulator.caches.entries.clear()  # expired while the batch waited its turn
    summary = run(path, server)
    assert (summary.exit_code, summary.rows_done, summary.rows_failed) == (0, 99, 0)
    assert sorted(result_ids(tmp_path / "out")) == sorted(f"r{i}" for i in range(100))
    asked = server.emulator.received
    assert len(asked) == 99  # the main batch's lines, all failed on the cache
    assert not any("cachedContent" in b for b in asked)
    parts = [[next(iter(p)) for t in b["contents"] for p in t["parts"]] for b in asked]
    if context:
        assert all(k == ["fileData", "text"] for k in parts)
    else:
        assert all(k == ["text"] for k in parts) and all("systemInstruction" in b for b in asked)
    assert server.emulator.caches_alive() == 0 and not (tmp_path / "out" / CACHE_FILE).exists()
