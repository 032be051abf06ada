"""``--engine ray`` for real: a local Ray instance (2 CPUs, one a session) against the emulator.

Every row once and typed; one quota for every worker (the emulator's 429s slow them all); a
killed worker's rows retried; a SIGKILLed driver resumed without paying twice for more than the
calls that were in flight. Few and small: CI has two cores.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pytest
import ray
from click.testing import CliRunner

from batchgen.api import run_file
from batchgen.cli import main
from batchgen.errors import JobError, RunStoppedError
from batchgen.run.ray_data import generate_batches
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.jobs import item_job
from tests.helpers.outputs import error_ids, read_rows, result_ids

KEY = "ray-key-3"


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)


def test_every_row_once_typed_through_the_cli(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str, key: None
) -> None:
    emulator = emulator_factory(latency_ms=20)
    job = item_job(tmp_path, 40, output={"directory": "out", "flush_rows": 10})
    args = ["run", str(job), "--base-url", emulator.base_url, "--engine", "ray", "--quiet"]
    result = CliRunner().invoke(main, [*args, "--ray-address", ray_address])
    assert result.exit_code == 0, result.output
    assert "40 rows done, 0 failed" in result.output
    out = tmp_path / "out"
    assert sorted(result_ids(out)) == sorted(f"r{i}" for i in range(40))
    assert error_ids(out) == []
    rows = read_rows(out, "results")
    assert all(isinstance(r["label"], str) for r in rows)
    assert len(read_rows(out, "usage")) == 40  # the ledger: one paid call a row
    rerun = CliRunner().invoke(main, [*args, "--ray-address", ray_address])
    assert rerun.exit_code == 0 and "0 rows done" in rerun.output  # the done state is OUTPUT's


def test_one_quota_for_every_worker(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str
) -> None:
    """The job allows twice what the server does: the first 429s step the one shared rate
    down for every worker (paced apart, two workers would each send at the job's rate)."""
    emulator = emulator_factory(rpm_limit=300, latency_ms=50)
    rows = 90
    job = item_job(tmp_path, rows, limits={"requests_per_minute": 600}, retry={"attempts": 8})
    summary = run_file(job, api_key=KEY, base_url=emulator.base_url, engine="ray")
    assert summary.rows_done == rows
    rejected = emulator.emulator.counts["status:429"]
    assert rejected <= 0.1 * summary.requests, (rejected, summary.requests)
    assert sorted(result_ids(tmp_path / "out")) == sorted(f"r{i}" for i in range(rows))


def test_the_day_s_quota_is_one_count_for_every_worker(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str, key: None
) -> None:
    emulator = emulator_factory(latency_ms=20)
    job = item_job(tmp_path, 30, limits={"requests_per_day": 10, "concurrency": 6})
    args = ["run", str(job), "--base-url", emulator.base_url, "--engine", "ray", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 5, result.output
    assert "limits.requests_per_day: 10 of 10 requests sent" in result.output
    calls = emulator.emulator.counts["generateContent"]  # a turn granted may go unused
    assert 8 <= calls <= 10  # never past the day's quota, however many workers
    assert (
        len(result_ids(tmp_path / "out")) == calls and f"{30 - calls} rows remain" in result.output
    )


def test_an_outage_is_waited_out_by_every_worker(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str
) -> None:
    """Every call fails for 6 s: one worker's breaker opens and probes, the others wait for
    it; every row is answered once the API is back."""
    emulator = emulator_factory(latency_ms=20, outage_after_s=0.5, outage_seconds=6)
    rows = 40
    job = item_job(tmp_path, rows, limits={"requests_per_minute": 1200, "concurrency": 4})
    summary = run_file(job, api_key=KEY, base_url=emulator.base_url, engine="ray")
    assert summary.rows_done == rows and summary.rows_failed == 0
    assert sorted(result_ids(tmp_path / "out")) == sorted(f"r{i}" for i in range(rows))
    failed = emulator.emulator.counts["fault:outage"]
    # one breaker's streak (10), the calls in flight then, its probes; a breaker a worker
    # (two of them, each opening after its own 10) would spend 20 or more
    assert failed <= 10 + 4 + 3


def test_a_killed_worker_s_rows_are_retried(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str
) -> None:
    emulator = emulator_factory(latency_ms=400)
    rows = 60
    job = item_job(tmp_path, rows, limits={"concurrency": 8})
    killed: list[str] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
            workers = sorted(n for n in names if n.startswith("batchgen-") and "-worker-" in n)
            if workers and emulator.emulator.counts["generateContent"] >= 12:
                ray.kill(ray.get_actor(workers[0], namespace=_namespace(workers[0])))
                killed.append(workers[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one)
    killer.start()
    summary = run_file(job, api_key=KEY, base_url=emulator.base_url, engine="ray")
    killer.join()
    assert killed  # a worker died with calls in flight
    assert summary.rows_done == rows and summary.rows_failed == 0
    assert sorted(result_ids(tmp_path / "out")) == sorted(f"r{i}" for i in range(rows))


def test_workers_that_keep_dying_stop_the_run_with_the_rows_left_to_do(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str
) -> None:
    emulator = emulator_factory(latency_ms=300)
    job = item_job(tmp_path, 6, limits={"concurrency": 2})
    done = threading.Event()

    def kill_every_worker() -> None:
        while not done.is_set():
            for actor in ray.util.list_named_actors(all_namespaces=True):
                if actor["name"].startswith("batchgen-") and "-worker-" in actor["name"]:
                    with contextlib.suppress(Exception):  # gone already
                        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
            time.sleep(0.01)

    killer = threading.Thread(target=kill_every_worker)
    killer.start()
    try:
        with pytest.raises(RunStoppedError, match="Ray workers keep dying") as stopped:
            run_file(job, api_key=KEY, base_url=emulator.base_url, engine="ray")
    finally:
        done.set()
        killer.join()
    assert stopped.value.exit_code == 4
    s = stopped.value.summary
    assert s.rows_done + s.rows_failed + s.rows_remaining == 6 and s.rows_failed == 0
    assert len(result_ids(tmp_path / "out")) == s.rows_done


def test_a_sigkilled_driver_resumes_without_paying_twice(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str
) -> None:
    """At the defaults a user gets (1,000 requests a minute, concurrency "auto", the output's
    default flushing): the driver killed mid-run, then run again."""
    emulator = emulator_factory(latency_ms=200)
    rows, in_flight = 120, 40  # in flight at most: what "auto" reaches at this rate and latency
    job = item_job(tmp_path, rows)
    out = tmp_path / "out"
    env = {**os.environ, "GEMINI_API_KEY": KEY}
    args = [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", emulator.base_url,
            "--engine", "ray", "--ray-address", ray_address, "--quiet"]  # fmt: skip
    with (tmp_path / "stderr").open("wb") as log:
        driver = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 90
    while emulator.emulator.counts["generateContent"] < 40 and time.monotonic() < deadline:
        assert driver.poll() is None, (tmp_path / "stderr").read_text()
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    ids = result_ids(out)
    assert sorted(ids) == sorted(f"r{i}" for i in range(rows))  # no row twice, none lost
    paid = collections.Counter(r["row_id"] for r in read_rows(out, "usage"))
    paid_twice = sum(n - 1 for n in paid.values())
    calls = emulator.emulator.counts["generateContent"]
    assert calls - rows <= in_flight  # the calls the kill cut off, at most
    assert paid_twice <= in_flight


def test_a_ray_data_step_answers_with_typed_columns_and_usage(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str
) -> None:
    emulator = emulator_factory()
    job = item_job(
        tmp_path, 1, input={"carry": ["name"]}, model={"base_url": emulator.base_url},
        prompt="Describe {{ name }} in a few words.",
    )  # fmt: skip
    items = [{"id": f"r{i}", "name": f"item-{i:03d}"} for i in range(30)]
    items[7] = {"id": "r7", "name": None}  # no value for the template: a failure row
    answered = generate_batches(ray.data.from_items(items), job, api_key=KEY, batch_size=8)
    table = pa.concat_tables(ray.get(answered.to_arrow_refs()))
    assert sorted(table["row_id"].to_pylist()) == sorted(f"r{i}" for i in range(30))
    assert table.schema.field("label").type == pa.string()
    assert table.schema.field("total_tokens").type == pa.int64()
    assert table["name"].to_pylist().count("item-003") == 1  # carried
    rows = {r["row_id"]: r for r in table.to_pylist()}
    assert rows.pop("r7")["error_category"] == "template"
    assert all(r["total_tokens"] > 0 and r["error_category"] is None for r in rows.values())
    assert emulator.emulator.counts["generateContent"] == 29


def test_a_ray_data_step_sends_few_shot_turns_and_keeps_every_candidate(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str
) -> None:
    emulator = emulator_factory(record=True)
    job = item_job(tmp_path, 1, model={"base_url": emulator.base_url},
                   generation={"candidateCount": 2})  # fmt: skip
    shot = '[[prompt.examples]]\nuser = "Describe {{ name }}-like things."\nmodel = "{}"\n'
    job.write_text(job.read_text().replace("[output]\n", shot + "\n[output]\n", 1))
    items = [{"id": f"r{i}", "name": f"item-{i:03d}"} for i in range(6)]
    answered = generate_batches(ray.data.from_items(items), job, api_key=KEY, batch_size=3)
    table = pa.concat_tables(ray.get(answered.to_arrow_refs()))
    assert sorted(table["row_id"].to_pylist()) == sorted(f"r{i}" for i in range(6) for _ in "ab")
    assert sorted(set(table["candidate"].to_pylist())) == [0, 1]
    sent = emulator.emulator.received
    assert len(sent) == 6
    assert all([t["role"] for t in b["contents"]] == ["user", "model", "user"] for b in sent)
    assert any("item-003-like" in json.dumps(b) for b in sent)  # the example uses the row


def test_a_ray_data_step_refuses_a_job_with_media_files(tmp_path: Path) -> None:
    job = item_job(tmp_path, 1)
    job.write_text(job.read_text().replace("[prompt]\n", '[prompt]\nmedia = ["name"]\n', 1))
    with pytest.raises(JobError, match="prompt.media and prompt.context are not sent"):
        generate_batches(cast(Any, None), job, api_key=KEY)


def test_without_ray_the_engine_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: None
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as without the extra
    job = item_job(tmp_path, 3)
    result = CliRunner().invoke(main, ["run", str(job), "--engine", "ray", "--emulator"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --engine ray needs Ray: pip install 'batchgen[ray]'"
    ]
    assert not (tmp_path / "out").exists()


def test_sigterm_stops_a_ray_run_cleanly(
    tmp_path: Path, emulator_factory: StartEmulator, ray_address: str
) -> None:
    """Ray's own handlers are set before the run's: SIGTERM is the run's clean stop."""
    emulator = emulator_factory(latency_ms=300)
    job = item_job(tmp_path, 200, limits={"concurrency": 4})
    env = {**os.environ, "GEMINI_API_KEY": KEY}
    args = [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", emulator.base_url,
            "--engine", "ray", "--ray-address", ray_address, "--quiet"]  # fmt: skip
    driver = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while emulator.emulator.counts["generateContent"] < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGTERM)
    stdout, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 4, stderr
    assert b"Traceback" not in stderr
    done = len(result_ids(tmp_path / "out"))
    assert 0 < done < 200 and f"{200 - done} rows remain".encode() in stdout + stderr


def _namespace(name: str) -> str:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"] == name:
            return str(actor["namespace"])
    raise AssertionError(name)
