"""Caching, dedupe and candidates against a second server written apart from the emulator
(benchmarks/standin_savers.py: strict about unknown fields, its own token rule, 403 for a gone
cache, candidates with their index, a new answer for every call), at the job's defaults."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchgen.job.spec import Overrides, load_job
from batchgen.reports.report import report
from batchgen.run.runner import RunOptions, RunSummary, run_job
from tests.helpers.caching import cached_job
from tests.helpers.jobs import item_job
from tests.helpers.media import pdf
from tests.helpers.outputs import read_rows
from tests.helpers.standin import KEY, Standin, standin


@pytest.fixture(scope="module")
def server() -> Iterator[Standin]:
    with standin() as running:
        yield running


def run(path: Path, server: Standin, **options: Any) -> RunSummary:
    job = load_job(path, Overrides(base_url=server.base_url))
    return run_job(job, RunOptions(api_key=KEY, handle_signals=False, **options))


def delta(before: dict[str, Any], after: dict[str, Any], key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


def refusals(before: dict[str, Any], after: dict[str, Any]) -> int:
    """The 4xx answers (but 429s) the stand-in gave between two reads of its counts."""
    codes = [k for k in after if k.startswith("status:4") and k != "status:429"]
    return sum(delta(before, after, k) for k in codes)


def test_a_long_shared_prefix_is_cached_used_and_deleted(tmp_path: Path, server: Standin) -> None:
    cached, plain = tmp_path / "cached", tmp_path / "plain"
    cached.mkdir(), plain.mkdir()
    before = server.stats()
    summary = run(cached_job(cached, 60, limits={}), server)
    after = server.stats()
    assert (summary.exit_code, summary.rows_done, summary.rows_failed) == (0, 60, 0)
    assert delta(before, after, "caches_created") == 1
    assert delta(before, after, "caches_deleted") == 1 and after["caches_alive"] == 0
    calls = delta(before, after, "answered")
    assert calls == 60 and delta(before, after, "calls_naming_a_cache") >= 0.95 * calls
    assert refusals(before, after) == 0, after

    assert run(cached_job(plain, 60, "off", limits={}), server).rows_done == 60
    with_cache, without = report([cached / "out"]).total, report([plain / "out"]).total
    assert with_cache["cached_tokens"] > 0.9 * without["prompt_tokens"] - 60 * 50
    assert with_cache["cost_usd"] <= 0.5 * without["cost_usd"], (with_cache, without)


def test_identical_requests_are_paid_once_with_dedupe(tmp_path: Path, server: Standin) -> None:
    path = item_job(tmp_path, 40, output={"dedupe": True})
    with (tmp_path / "rows.csv").open("w") as f:
        f.write("id,name\n")
        f.writelines(f"r{i},item-{i % 10:03d}\n" for i in range(40))  # 10 distinct prompts
    before = server.stats()
    summary = run(path, server)
    after = server.stats()
    assert (summary.exit_code, summary.rows_done) == (0, 40)
    assert delta(before, after, "answered") == 10
    results = read_rows(tmp_path / "out", "results")
    assert len(results) == 40
    by_prompt: dict[str, set[str]] = {}
    for row in results:  # twins carry their leader's answer, not one of their own
        by_prompt.setdefault(f"item-{int(row['row_id'][1:]) % 10}", set()).add(row["label"])
    assert all(len(labels) == 1 for labels in by_prompt.values())
    usage = read_rows(tmp_path / "out", "usage")
    assert sum(u["outcome"] == "ok" for u in usage) == 10
    assert sum(u["outcome"] == "reused" and u["total_tokens"] == 0 for u in usage) == 30


def test_three_candidates_give_three_rows_from_one_call(tmp_path: Path, server: Standin) -> None:
    path = item_job(tmp_path, 10, generation={"candidateCount": 3})
    before = server.stats()
    summary = run(path, server)
    after = server.stats()
    assert (summary.exit_code, summary.rows_failed) == (0, 0)
    assert delta(before, after, "answered") == 10 and delta(before, after, "candidates") == 30
    results = read_rows(tmp_path / "out", "results")
    assert len(results) == 30
    assert sorted(r["candidate"] for r in results) == sorted([0, 1, 2] * 10)
    assert all(len({r["label"] for r in results if r["row_id"] == f"r{i}"}) == 3 for i in range(10))
    usage = [u for u in read_rows(tmp_path / "out", "usage") if u["outcome"] == "ok"]
    assert len(usage) == 10  # usage once per call, not per candidate


def test_a_cache_that_expires_mid_run_leaves_every_row_answered(
    tmp_path: Path, server: Standin
) -> None:
    before = server.stats()
    done = threading.Event()

    def expire_once_some_are_answered() -> None:
        while not done.is_set() and delta(before, server.stats(), "calls_naming_a_cache") < 15:
            time.sleep(0.02)
        server.expire_caches()

    thread = threading.Thread(target=expire_once_some_are_answered)
    thread.start()
    try:
        summary = run(cached_job(tmp_path, 80, limits={}), server)
    finally:
        done.set()
        thread.join()
    after = server.stats()
    assert (summary.exit_code, summary.rows_done, summary.rows_failed) == (0, 80, 0)
    assert len([n for n in summary.notes if "refused" in n]) == 1
    assert 15 <= delta(before, after, "calls_naming_a_cache") < 80
    assert delta(before, after, "status:403") >= 1  # the refusals, each row resent uncached
    assert after["caches_alive"] == 0


def test_a_context_pdf_is_held_in_the_cache_and_rows_send_only_their_text(
    tmp_path: Path, server: Standin
) -> None:
    (tmp_path / "manual.pdf").write_bytes(pdf(48))  # 48 pages: ~12k tokens
    path = item_job(tmp_path, 40, model={"name": "gemini-3.8-flash"})
    path.write_text(path.read_text().replace("[prompt]\n", '[prompt]\ncontext = ["manual.pdf"]\n'))
    before = server.stats()
    summary = run(path, server)
    after = server.stats()
    assert (summary.exit_code, summary.rows_done, summary.rows_failed) == (0, 40, 0)
    assert delta(before, after, "caches_created") == 1 and after["caches_alive"] == 0
    assert delta(before, after, "calls_naming_a_cache") == delta(before, after, "answered") == 40
    # each call's prompt: the cached manual plus the row's few words, not the manual twice
    prompt = delta(before, after, "prompt_tokens") / 40
    assert 48 * 258 <= prompt < 48 * 258 + 100, prompt
    assert refusals(before, after) == 0, after
