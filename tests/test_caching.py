"""Explicit context caching against the emulator: one cache for a long shared prefix, used by
the calls, deleted at the end, billed in the ledger; a killed run's cache cleaned up by the next
run; a refused or vanished cache falls back to uncached calls; a short prefix is not cached."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import batchgen
from batchgen.cli.render import format_estimate
from batchgen.emulator import Emulator, EmulatorConfig, EmulatorThread
from batchgen.errors import JobError
from batchgen.job.spec import Overrides, load_job
from batchgen.plan import plan_job
from batchgen.pricing.caching import break_even_rows
from batchgen.pricing.file import load_prices, parse_price_file
from batchgen.reports.estimate import estimate_job
from batchgen.reports.report import report
from batchgen.run import caching
from batchgen.run.runner import RunOptions, RunSummary, run_job
from batchgen.store.cache import CACHE_FILE
from batchgen.store.layout import part_files
from tests.helpers.caching import FAST, SYSTEM, cached_job
from tests.helpers.emulator_calls import KEY, MakeClient, ask, call
from tests.helpers.jobs import item_job
from tests.helpers.media import pdf
from tests.helpers.outputs import read_rows

PAGES = 48  # a context PDF of ~12k tokens (258 a page)


def run(path: Path, server: EmulatorThread, **options: Any) -> RunSummary:
    job = load_job(path, Overrides(base_url=server.base_url))
    return run_job(job, RunOptions(api_key=KEY, handle_signals=False, **options))


@contextlib.contextmanager
def caches_vanish_after(emulator: Emulator, calls: int) -> Iterator[None]:
    """The emulator's caches are gone (as an expired one is: 403 on use) once it has had
    ``calls`` generateContent calls, while the block runs."""

    def vanish() -> None:
        deadline = time.monotonic() + 60
        while emulator.counts["generateContent"] < calls and time.monotonic() < deadline:
            time.sleep(0.005)
        emulator.caches.entries.clear()

    thread = threading.Thread(target=vanish)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def test_a_long_shared_prefix_is_cached_once_and_costs_at_most_half(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig(record=True))
    cached, plain = tmp_path / "cached", tmp_path / "plain"
    cached.mkdir(), plain.mkdir()
    summary = run(cached_job(cached, 300), server, prices=load_prices())
    counts = server.emulator.counts
    assert summary.exit_code == 0 and summary.rows_done == 300
    assert counts["cachedContents.create"] == 1 and counts["cachedContents.delete"] == 1
    assert counts["cachedContent:used"] >= 0.95 * counts["generateContent"]
    assert server.emulator.caches_alive() == 0
    assert not (cached / "out" / CACHE_FILE).exists()
    assert any("prefix every row shares is cached" in n for n in summary.notes)
    sent = [b for b in server.emulator.received if b.get("cachedContent")]
    assert sent and not any("systemInstruction" in b for b in sent)  # it lives in the cache
    used = counts["cachedContent:used"]

    assert run(cached_job(plain, 300, mode="off"), server).rows_done == 300
    assert server.emulator.counts["cachedContents.create"] == 1  # mode = "off": none
    assert server.emulator.counts["cachedContent:used"] == used

    with_cache, without = report([cached / "out"]), report([plain / "out"])
    assert with_cache.total["requests"] == without.total["requests"] == 300
    assert with_cache.total["cached_tokens"] > 0.9 * without.total["prompt_tokens"]
    # the run's own books count the cache's creation and storage too
    assert summary.cost is not None
    assert abs(summary.cost - with_cache.total["cost_usd"]) < 1e-9
    ratio = with_cache.total["cost_usd"] / without.total["cost_usd"]
    assert ratio <= 0.5, ratio
    outcomes = [u["outcome"] for u in read_rows(cached / "out", "usage")]
    assert outcomes.count("cache_create") == 1 and outcomes.count("cache_storage") == 1
    storage = [u for u in read_rows(cached / "out", "usage") if u["outcome"] == "cache_storage"]
    assert storage[0]["cache_token_hours"] > 0
    # the same logical request with or without the cache: the same hash (resume, dedupe)
    hashes = {r["row_id"]: r["request_hash"] for r in read_rows(cached / "out", "results")}
    assert hashes == {r["row_id"]: r["request_hash"] for r in read_rows(plain / "out", "results")}


def test_a_refused_cache_falls_back_to_uncached_calls_said_once(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig(cache_refuse=True))
    summary = run(cached_job(tmp_path, 40), server)
    assert summary.exit_code == 0 and summary.rows_done == 40
    said = [n for n in summary.notes if "cache" in n]
    assert len(said) == 1 and "refused" in said[0]
    assert server.emulator.counts["cachedContent:used"] == 0
    assert server.emulator.caches_alive() == 0


def test_a_cache_that_vanishes_mid_run_is_dropped_and_its_rows_answered_uncached(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig(latency_ms=20))
    emulator = server.emulator
    with caches_vanish_after(emulator, calls=30):
        summary = run(cached_job(tmp_path, 200), server)
    assert summary.exit_code == 0 and summary.rows_done == 200 and summary.rows_failed == 0
    said = [n for n in summary.notes if "refused" in n]
    assert len(said) == 1 and "rest of the run is uncached" in said[0]
    assert any("prefix every row shares is cached" in n for n in summary.notes)
    assert 30 <= emulator.counts["cachedContent:used"] < 200
    assert not (tmp_path / "out" / CACHE_FILE).exists()


def test_a_short_prefix_is_not_cached_and_estimate_says_why(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig())
    path = cached_job(tmp_path, 20, system="Label things briefly.")
    job = load_job(path, Overrides(base_url=server.base_url))
    est = estimate_job(job, api_key=KEY)
    assert est.cache_use == "no cache" and est.cache_why and "below" in est.cache_why
    assert "the run goes uncached" in format_estimate(est)
    assert run(path, server).rows_done == 20
    assert server.emulator.counts["cachedContents.create"] == 0


def test_estimate_shows_the_cost_with_and_without_the_cache(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig())
    job = load_job(cached_job(tmp_path, 300), Overrides(base_url=server.base_url))
    est = estimate_job(job, api_key=KEY)
    assert est.cache is not None and est.cache_use == "cache"
    assert est.cache.with_cache < 0.5 * est.cache.without
    assert 11_000 < est.cache.prefix_tokens < 13_000
    text = format_estimate(est)
    assert "with a cache" in text and "the run will use a cache" in text
    assert server.emulator.counts["cachedContents.create"] == 0  # estimate creates nothing


def test_a_killed_runs_cache_is_cleaned_up_by_the_next_run(
    tmp_path: Path, emulator_factory: Any
) -> None:
    """At the defaults a user gets (1,000 requests a minute, concurrency "auto", the output's
    default flushing): killed mid-run, then run again."""
    server: EmulatorThread = emulator_factory(EmulatorConfig(latency_ms=30))
    emulator = server.emulator
    path = cached_job(tmp_path, 300, limits={})
    env = {**os.environ, "GEMINI_API_KEY": KEY}
    args = [sys.executable, "-m", "batchgen", "run", str(path), "--base-url", server.base_url]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while emulator.counts["generateContent"] < 100 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert emulator.caches_alive() == 1  # the killed run could not delete it
    assert (tmp_path / "out" / CACHE_FILE).exists()  # but its name is in OUTPUT
    paid_before = emulator.counts["generateContent"]
    summary = run(path, server)
    assert summary.exit_code == 0
    assert emulator.caches_alive() == 0 and not (tmp_path / "out" / CACHE_FILE).exists()
    assert emulator.counts["cachedContents.create"] == 1  # reused, not made again
    done = {r["row_id"] for r in read_rows(tmp_path / "out", "results")}
    assert done == {f"r{i}" for i in range(300)}
    redone = emulator.counts["generateContent"] - 300
    assert 0 <= redone <= 40, (redone, paid_before)  # at most those in flight at the kill
    paid = [u["row_id"] for u in read_rows(tmp_path / "out", "usage") if u["outcome"] == "ok"]
    assert len(paid) == len(set(paid)) == 300  # none billed twice in the ledger
    usage = read_rows(tmp_path / "out", "usage")
    assert [u["outcome"] for u in usage].count("cache_storage") == 1  # its whole life, once


async def test_the_emulator_keeps_caches_as_the_api_does(make_client: MakeClient) -> None:
    client, emulator = await make_client(cache_min_tokens={"gemini-2.5-flash": 100})
    headers = {"x-goog-api-key": KEY}
    small = {"model": "models/gemini-2.5-flash", "systemInstruction": {"parts": [{"text": "hi"}]}}
    async with client.post("/v1beta/cachedContents", json=small, headers=headers) as r:
        assert r.status == 400 and "too small" in (await r.json())["error"]["message"]
    big = {**small, "ttl": "60s", "systemInstruction": {"parts": [{"text": "word " * 400}]}}
    async with client.post("/v1beta/cachedContents", json=big, headers=headers) as r:
        assert r.status == 200
        made = await r.json()
    name = made["name"]
    assert made["usageMetadata"]["totalTokenCount"] == 500 and emulator.caches_alive() == 1
    with_system = {
        **ask("go"),
        "cachedContent": name,
        "systemInstruction": big["systemInstruction"],
    }
    status, answer = await call(client, with_system)
    assert status == 400 and "system_instruction" in answer["error"]["message"]
    status, answer = await call(client, {**ask("go"), "cachedContent": name})
    usage = answer["usageMetadata"]
    assert status == 200 and usage["cachedContentTokenCount"] == 500
    assert usage["promptTokenCount"] > 500  # it includes the cached part
    async with client.patch(f"/v1beta/{name}", json={"ttl": "3600s"}, headers=headers) as r:
        assert r.status == 200
    emulator.clock = lambda: time.monotonic() + 120  # past the first TTL, within the new one
    assert emulator.caches_alive() == 1
    emulator.clock = lambda: time.monotonic() + 7200  # expired
    status, answer = await call(client, {**ask("go"), "cachedContent": name})
    assert status == 403 and emulator.caches_alive() == 0
    async with client.delete(f"/v1beta/{name}", headers=headers) as r:
        assert r.status == 403


def test_price_files_take_the_cache_keys_and_older_ones_still_load(tmp_path: Path) -> None:
    newer = """
        [models."m"]
        input = 1.0
        output = 2.0
        cached = 0.1
        cache_storage = 1.0
        cache_min_tokens = 2048
    """
    price = parse_price_file(newer, tmp_path / "p.toml").price("m")
    assert price is not None and price.storage_rate == 1.0 and price.min_cache_tokens == 2048
    older = parse_price_file('[models."m"]\ninput = 1.0\noutput = 2.0\n', tmp_path / "o.toml")
    old = older.price("m")
    assert old is not None and old.cache_storage is None and old.min_cache_tokens == 4096
    # break-even: (input + hours × storage) / (input − cached) calls, for any prefix size
    assert break_even_rows(price, hours=1.0) == 3  # (1 + 1) / 0.9 = 2.2 -> 3
    flash = load_prices().price("gemini-3.8-flash")
    assert flash is not None and flash.cache_storage is not None


def test_flex_calls_use_the_cache_and_its_ttl_is_kept_ahead_while_the_run_lasts(
    tmp_path: Path, emulator_factory: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(caching, "EXTEND_EVERY_S", 0.05)
    server: EmulatorThread = emulator_factory(EmulatorConfig(latency_ms=20, record=True))
    path = cached_job(tmp_path, 120)
    path.write_text(path.read_text().replace("[model]\n", '[model]\ntier = "flex"\n', 1))
    summary = run(path, server)
    counts = server.emulator.counts
    assert summary.exit_code == 0 and summary.rows_done == 120
    assert counts["cachedContent:used"] == 120 and counts["cachedContents.patch"] >= 1
    assert all(b.get("serviceTier") == "flex" for b in server.emulator.received)
    assert server.emulator.caches_alive() == 0


def test_a_fresh_start_deletes_the_cache_the_set_aside_output_recorded(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig())
    emulator = server.emulator
    path = cached_job(tmp_path, 5, mode="off")
    assert run(path, server).rows_done == 5
    made = {"model": "models/gemini-2.5-flash-lite", "ttl": "600s",
            "systemInstruction": {"parts": [{"text": SYSTEM}]}}  # fmt: skip
    request = urllib.request.Request(
        f"{server.base_url}/v1beta/cachedContents",
        data=json.dumps(made).encode(),
        headers={"x-goog-api-key": KEY, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:  # a cache a killed run left behind
        name = json.loads(answer.read())["name"]
    record = {"format": 1, "name": name, "digest": "x", "tokens": 12000,
              "model": "gemini-2.5-flash-lite", "created_at": "2026-12-04T00:00:00+00:00",
              "run_id": "killed"}  # fmt: skip
    (tmp_path / "out" / CACHE_FILE).write_text(json.dumps(record))
    assert emulator.caches_alive() == 1
    job = load_job(path, Overrides(base_url=server.base_url))
    summary = run_job(job, RunOptions(api_key=KEY, handle_signals=False, fresh=True))
    assert summary.moved_aside is not None and summary.rows_done == 5
    assert emulator.caches_alive() == 0 and not (summary.moved_aside / CACHE_FILE).exists()


def test_the_python_api_caches_by_default_and_takes_cache_off(emulator_factory: Any) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig())
    rows = [{"name": f"item-{i}"} for i in range(30)]
    schema = {"type": "OBJECT", "properties": {"label": {"type": "STRING"}}, "required": ["label"]}
    common: dict[str, Any] = {"prompt": "Describe {{ name }}.", "schema": schema,
                              "model": "gemini-2.5-flash-lite", "system": SYSTEM,
                              "base_url": server.base_url, "api_key": KEY,
                              "limits": FAST}  # fmt: skip
    assert len(batchgen.generate(rows, **common)) == 30
    assert server.emulator.counts["cachedContent:used"] == 30
    assert len(batchgen.generate(rows, cache="off", **common)) == 30
    assert server.emulator.counts["cachedContent:used"] == 30  # the second made no cache
    assert server.emulator.caches_alive() == 0


def test_the_cached_body_is_the_request_without_its_prefix(tmp_path: Path) -> None:
    path = cached_job(tmp_path, 3, system="Be brief.")
    extra = """
[[prompt.examples]]
user = "Describe item-demo."
model = { label = "a demo" }

[[safety_settings]]
category = "HARM_CATEGORY_HARASSMENT"
threshold = "BLOCK_ONLY_HIGH"
"""
    text = path.read_text().replace("[model]\n", '[model]\ntier = "flex"\n', 1)
    path.write_text(text + extra)
    plan = plan_job(load_job(path))
    prefix = plan.prefix()
    assert prefix is not None and prefix.system == "Be brief." and prefix.turns
    body = plan.first_request()
    cached = plan.builder.cached(body, prefix, "cachedContents/c9")
    assert cached is not None
    full, short = json.loads(body), json.loads(cached)
    assert short["cachedContent"] == "cachedContents/c9" and "systemInstruction" not in short
    assert short["contents"] == full["contents"][-1:]  # the row's own turn only
    for key in ("generationConfig", "safetySettings", "serviceTier"):
        assert short[key] == full[key]
    create = json.loads(prefix.cache_body(600))
    assert create["contents"] == full["contents"][:-1] and create["ttl"] == "600s"
    assert create["systemInstruction"] == full["systemInstruction"]
    other = plan.builder.body("Describe x.", "Another system.")
    assert plan.builder.cached(other, prefix, "cachedContents/c9") is None  # not this prefix


def test_a_system_instruction_that_uses_a_column_is_no_shared_prefix(tmp_path: Path) -> None:
    plan = plan_job(load_job(cached_job(tmp_path, 3, system="You describe {{ name }}.")))
    assert plan.prefix() is None


def test_a_ledger_written_before_the_cache_entries_still_reports(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig())
    path = cached_job(tmp_path, 10, mode="off")
    assert run(path, server).rows_done == 10
    before = report([tmp_path / "out"]).total
    parts = part_files(tmp_path / "out", "usage")
    assert parts
    for part in parts:  # as a version 1 ledger: no cache_token_hours column
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["cache_token_hours"]).replace_schema_metadata(), part)
    after = report([tmp_path / "out"]).total
    assert after["requests"] == before["requests"] == 10
    assert after["cost_usd"] == before["cost_usd"]


def test_a_changed_context_file_makes_another_prefix_not_a_reuse(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("Household things are labelled by room.\n")
    path = cached_job(tmp_path, 3, system="Be brief.")
    line = f"context = [{json.dumps(str(notes))}]\n"
    path.write_text(path.read_text().replace("[prompt]\n", "[prompt]\n" + line, 1))
    first = plan_job(load_job(path)).prefix()
    notes.write_text("Household things are labelled by room and by colour.\n")
    second = plan_job(load_job(path)).prefix()
    assert first is not None and second is not None
    assert first.digest() != second.digest()
    assert plan_job(load_job(path)).prefix() == second  # unchanged file: the same cache


async def test_the_emulator_counts_a_caches_media_parts(make_client: MakeClient) -> None:
    client, _ = await make_client(cache_min_tokens={"gemini-2.5-flash": 500})
    pdf = b"%PDF-1.4\n" + b"1 0 obj << /Type /Page >> endobj\n" * 3 + b"%%EOF\n"
    part = {"inlineData": {"mimeType": "application/pdf", "data": base64.b64encode(pdf).decode()}}
    body = {
        "model": "models/gemini-2.5-flash",
        "systemInstruction": {"parts": [{"text": "hi"}]},
        "contents": [{"role": "user", "parts": [part]}],
    }
    headers = {"x-goog-api-key": KEY}
    async with client.post("/v1beta/cachedContents", json=body, headers=headers) as r:
        assert r.status == 200  # 3 pages at 258 tokens each pass the 500-token minimum
        made = await r.json()
    assert made["usageMetadata"]["totalTokenCount"] >= 3 * 258
    status, answer = await call(client, {**ask("go"), "cachedContent": made["name"]})
    usage = answer["usageMetadata"]
    assert status == 200
    assert usage["cachedContentTokenCount"] == made["usageMetadata"]["totalTokenCount"]


def context_job(folder: Path, rows: int, pages: int = PAGES, **tables: Any) -> Path:
    """``rows`` rows that all carry one ``pages``-page PDF as context (no system instruction:
    the context file alone is the shared prefix)."""
    (folder / "manual.pdf").write_bytes(pdf(pages))
    limits = {**FAST, **tables.pop("limits", {})}
    return item_job(folder, rows, limits=limits, **tables)


def with_context(path: Path) -> Path:
    line = 'context = ["manual.pdf"]\n'
    path.write_text(path.read_text().replace("[prompt]\n", "[prompt]\n" + line, 1))
    return path


def _parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for turn in body.get("contents", []) for p in turn.get("parts", [])]


def test_context_files_are_held_in_the_cache_and_left_out_of_every_row(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig(record=True))
    cached, plain = tmp_path / "cached", tmp_path / "plain"
    cached.mkdir(), plain.mkdir()
    summary = run(with_context(context_job(cached, 50, cache={"mode": "auto"})), server,
                  prices=load_prices())  # fmt: skip
    emulator = server.emulator
    assert summary.exit_code == 0 and summary.rows_done == 50
    assert emulator.counts["cachedContents.create"] == 1 and emulator.caches_alive() == 0
    named = [b for b in emulator.received if b.get("cachedContent")]
    assert len(named) == emulator.counts["generateContent"] == 50
    # each row sends only its own text: the pages live in the cache
    assert all([list(p) for p in _parts(b)] == [["text"]] for b in named)
    created = [u for u in read_rows(cached / "out", "usage") if u["outcome"] == "cache_create"]
    assert created[0]["prompt_tokens"] >= PAGES * 258
    answered = [u for u in read_rows(cached / "out", "usage") if u["outcome"] == "ok"]
    assert all(u["cached_tokens"] >= PAGES * 258 for u in answered)

    run(with_context(context_job(plain, 50, cache={"mode": "off"})), server)
    sent = emulator.received[50:]
    assert len(sent) == 50 and not any(b.get("cachedContent") for b in sent)
    assert all(any("text" not in p for p in _parts(b)) for b in sent)  # the PDF, every time
    ratio = report([cached / "out"]).total["cost_usd"] / report([plain / "out"]).total["cost_usd"]
    assert ratio <= 0.5, ratio


def test_a_large_context_file_is_cached_by_its_upload(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig(record=True))
    path = with_context(context_job(tmp_path, 20, media={"inline_max_mb": 0.0001}))
    summary = run(path, server)
    emulator = server.emulator
    assert summary.exit_code == 0 and summary.rows_done == 20
    assert emulator.counts["cachedContents.create"] == 1 and emulator.caches_alive() == 0
    assert emulator.counts["cachedContent:used"] == 20
    uploads = (tmp_path / "out" / "uploads.jsonl").read_text().splitlines()
    assert len(uploads) == 1  # the manual, uploaded once, named by the cache
    created = [u for u in read_rows(tmp_path / "out", "usage") if u["outcome"] == "cache_create"]
    assert created[0]["prompt_tokens"] >= PAGES * 258


def test_a_context_cache_that_vanishes_mid_run_sends_the_context_with_each_row_after(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig(latency_ms=20, record=True))
    emulator = server.emulator
    with caches_vanish_after(emulator, calls=20):
        summary = run(with_context(context_job(tmp_path, 100)), server)
    assert summary.exit_code == 0 and summary.rows_done == 100 and summary.rows_failed == 0
    assert len([n for n in summary.notes if "refused" in n]) == 1
    answered = [b for b in emulator.received if not b.get("cachedContent")]
    assert answered and all(len(_parts(b)) == 2 for b in answered)  # the manual, then the text
    assert 20 <= emulator.counts["cachedContent:used"] < 100
    assert emulator.caches_alive() == 0


def test_estimate_counts_the_context_files_in_the_cached_prefix(
    tmp_path: Path, emulator_factory: Any
) -> None:
    server: EmulatorThread = emulator_factory(EmulatorConfig())
    job = load_job(with_context(context_job(tmp_path, 300)), Overrides(base_url=server.base_url))
    est = estimate_job(job, api_key=KEY)
    assert est.cache is not None and est.cache_use == "cache"
    assert PAGES * 258 <= est.cache.prefix_tokens < PAGES * 258 + 50
    offline = estimate_job(job, api_key=KEY, offline=True)
    assert offline.cache is not None and offline.cache.prefix_tokens >= PAGES * 258


def test_a_media_column_named_context_beside_context_files_is_refused(tmp_path: Path) -> None:
    path = with_context(context_job(tmp_path, 2))
    path.write_text(path.read_text().replace("[prompt]\n", '[prompt]\nmedia = ["context"]\n'))
    (tmp_path / "rows.csv").write_text("id,name,context\nr0,a,manual.pdf\n")
    with pytest.raises(JobError, match="prompt.media: a column named 'context'"):
        plan_job(load_job(path))
