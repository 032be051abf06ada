"""Resumable runs: kills, signals, the lock, the fingerprint, per-day quotas, faults at random."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import CheckpointError, InputError, QuotaExhaustedError, RunStoppedError
from batchgen.job.spec import Overrides, load_job
from batchgen.reports.status import output_status
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.layout import part_files
from batchgen.store.lock import output_lock
from batchgen.store.runs import read_run_records
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.jobs import make_job
from tests.helpers.outputs import error_ids, result_ids

KEY = "resume-key-42"


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(EmulatorConfig(api_keys=frozenset({KEY}), latency_ms=15))


def cli(job: Path, url: str, *extra: str, capture: bool = True) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GEMINI_API_KEY": KEY}
    args = [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", url, *extra]
    pipe = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(args, env=env, stdout=pipe, stderr=pipe)


def test_sigkill_at_random_moments_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    rows, concurrency = 5000, 16
    job = make_job(tmp_path, rows, concurrency=concurrency, flush_rows=None)  # the defaults
    out = tmp_path / "out"
    rng = random.Random(7)
    kills = 0
    for _ in range(6):
        # killed at a random point of its progress, not of the clock: on a loaded machine a
        # timed kill may land before the run has started or after it has finished
        wanted = emulator.emulator.counts["generateContent"] + rng.randint(50, 600)
        proc = cli(job, emulator.base_url, capture=False)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if emulator.emulator.counts["generateContent"] >= wanted:
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait()
        for part in part_files(out) + part_files(out, "errors") + part_files(out, "usage"):
            pq.read_table(part)  # every part file is whole
        # what the killed runs answered is visible (parts and journal) before a rerun folds it
        paid = emulator.emulator.counts["generateContent"]
        seen = output_status(out).rows_done if (out / "job.json").exists() else 0
        assert seen >= paid - kills * (concurrency + 60)
    assert kills == 6  # 6 x at most 600 paid rows: every run was killed before the end
    final = cli(job, emulator.base_url)
    stdout, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr.decode()
    ids = result_ids(out)
    assert len(ids) == rows and set(ids) == {f"id-{i:05d}" for i in range(rows)}
    assert not error_ids(out)
    # Paid twice after each kill: at most the calls in flight and the answers of one journal
    # frame window (50 ms, at most ~1,000 rows/s here), not the 30 s of a part file.
    redone = emulator.emulator.counts["generateContent"] - rows
    assert 0 <= redone <= kills * (concurrency + 60), redone
    # The ledger kept every paid call but those in flight at a kill, the killed runs' too.
    ledger = sum(pq.read_metadata(p).num_rows for p in part_files(out, "usage"))
    paid = emulator.emulator.counts["generateContent"]
    assert paid - kills * (concurrency + 60) <= ledger <= paid


def test_sigterm_stops_cleanly_and_the_rerun_resumes(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    job = make_job(tmp_path, 2000, concurrency=16, flush_rows=20)
    out = tmp_path / "out"
    proc = cli(job, emulator.base_url, "--grace", "5")
    deadline = time.monotonic() + 30
    while not part_files(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 4, stderr.decode()
    assert "stopped by SIGTERM" in stderr.decode() and "rows done" in stdout.decode()
    assert not (out / ".lock").exists()
    done = len(result_ids(out))
    assert 0 < done < 2000
    end = [r for r in read_run_records(out) if r["event"] == "end"][-1]
    assert end["exit_code"] == 4 and end["rows_done"] == done
    rerun = cli(job, emulator.base_url)
    rerun.communicate(timeout=120)
    assert rerun.returncode == 0
    assert sorted(result_ids(out)) == [f"id-{i:05d}" for i in range(2000)]


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(
    tmp_path: Path, emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(tmp_path, 5)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    args = ["run", str(job), "--base-url", emulator.base_url]
    with output_lock(out):
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert f"another run (pid {os.getpid()}" in result.output
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = {"pid": dead.pid, "host": os.uname().nodename, "started": "1"}
    (out / ".lock").write_text(json.dumps(lock))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert len(result_ids(out)) == 5 and not (out / ".lock").exists()


def test_a_changed_job_is_refused_unless_fresh(tmp_path: Path, emulator: EmulatorThread) -> None:
    path = make_job(tmp_path, 4)
    job = load_job(path, Overrides(base_url=emulator.base_url))
    run_job(job, RunOptions(api_key=KEY))
    path.write_text(path.read_text().replace("in a few words", "in one word"))
    changed = load_job(path, Overrides(base_url=emulator.base_url))
    with pytest.raises(
        CheckpointError, match=r"written by a different job \(prompt.user changed\)"
    ):
        run_job(changed, RunOptions(api_key=KEY))
    summary = run_job(changed, RunOptions(api_key=KEY, fresh=True))
    assert summary.rows_done == 4 and summary.moved_aside is not None
    assert len(pq.read_table(summary.moved_aside / "results")) == 4  # the paid answers are kept
    assert len(result_ids(tmp_path / "out")) == 4


def test_without_ids_a_grown_reordered_input_sends_only_new_rows(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    path = make_job(tmp_path, 10, ids=False)
    job = load_job(path, Overrides(base_url=emulator.base_url))
    run_job(job, RunOptions(api_key=KEY))
    lines = (tmp_path / "rows.csv").read_text().splitlines()
    grown = [lines[0], *reversed(lines[1:]), *(f"new-{i},new thing {i}" for i in range(5))]
    (tmp_path / "rows.csv").write_text("\n".join(grown) + "\n")
    before = emulator.emulator.counts["generateContent"]
    summary = run_job(job, RunOptions(api_key=KEY))
    assert (summary.rows_skipped, summary.rows_done) == (10, 5)
    assert emulator.emulator.counts["generateContent"] - before == 5


def test_a_used_up_daily_quota_stops_the_run_with_its_own_code(tmp_path: Path) -> None:
    path = make_job(tmp_path, 20, concurrency=1)
    with EmulatorThread(EmulatorConfig(rpd_limit=6)) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        with pytest.raises(
            QuotaExhaustedError, match="per-day quota .*PerDay.* is used up"
        ) as info:
            run_job(job, RunOptions(api_key=KEY))
        assert server.emulator.counts["status:429"] == 1  # not retried for hours
    assert info.value.exit_code == 5
    assert info.value.summary.rows_done == 6
    assert len(result_ids(tmp_path / "out")) == 6  # flushed before stopping


def test_an_unreachable_api_stops_the_run(tmp_path: Path) -> None:
    path = make_job(tmp_path, 200, concurrency=2)
    job = load_job(path, Overrides(base_url="http://127.0.0.1:9"))  # nothing listens there
    with pytest.raises(RunStoppedError, match="127.0.0.1:9: unreachable") as info:
        run_job(job, RunOptions(api_key=KEY, unreachable_after=5))
    assert info.value.exit_code == 4
    assert info.value.summary.rows_failed < 20


def test_random_faults_every_row_ends_in_exactly_one_place(tmp_path: Path) -> None:
    rates = {"429": 0.05, "500": 0.05, "503": 0.05, "drop": 0.04, "safety": 0.05,
             "truncated": 0.05, "invalid": 0.05, "blocked": 0.03, "empty": 0.03}  # fmt: skip
    path = make_job(tmp_path, 300, concurrency=16)
    out = tmp_path / "out"
    everything = {f"id-{i:05d}" for i in range(300)}
    with EmulatorThread(EmulatorConfig(fault_rates=rates, seed=3)) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        summary = run_job(job, RunOptions(api_key=KEY))
    done, failed = result_ids(out), error_ids(out)
    assert summary.rows_failed == len(failed) > 0
    assert len(done) == len(set(done)) and len(failed) == len(set(failed))
    assert set(done) | set(failed) == everything and not set(done) & set(failed)
    status = output_status(out)
    assert (status.rows_done, status.rows_failed, status.remaining) == (len(done), len(failed), 0)
    with EmulatorThread(EmulatorConfig()) as server:  # the API recovers: a rerun retries failures
        job = load_job(path, Overrides(base_url=server.base_url))
        again = run_job(job, RunOptions(api_key=KEY))
    assert again.rows_done == len(failed) and again.rows_skipped == len(done)
    assert set(result_ids(out)) == everything and not error_ids(out)


def test_skip_failed_leaves_failed_rows_alone(tmp_path: Path) -> None:
    path = make_job(tmp_path, 6)
    with EmulatorThread(EmulatorConfig(script={"thing 3": ["safety"] * 9})) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        assert run_job(job, RunOptions(api_key=KEY)).rows_failed == 1
        again = run_job(job, RunOptions(api_key=KEY, skip_failed=True))
    assert (again.rows_skipped, again.rows_done, again.requests) == (6, 0, 0)
    assert error_ids(tmp_path / "out") == ["id-00003"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,name\n", "no rows (the file has only a header)"),
        ("id,name\na,x\nb,y\na,z\n", "rows 1 and 3 share the id 'a' in column 'id'"),
        ("id,name\na,x\n,y\n", "row 2: empty id in column 'id'"),
    ],
)
def test_bad_inputs_fail_before_any_call(tmp_path: Path, content: str, message: str) -> None:
    path = make_job(tmp_path, 1)
    (tmp_path / "rows.csv").write_text(content)
    with pytest.raises(InputError, match=re.escape(message)):
        run_job(load_job(path, Overrides(base_url="http://127.0.0.1:9")), RunOptions(api_key=KEY))


def test_a_corrupt_part_file_is_named_and_nothing_is_touched(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    path = make_job(tmp_path, 3)
    job = load_job(path, Overrides(base_url=emulator.base_url))
    run_job(job, RunOptions(api_key=KEY))
    bad = tmp_path / "out" / "results" / "part-zzz-00001.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    before = sorted(p.name for p in (tmp_path / "out" / "results").iterdir())
    with pytest.raises(CheckpointError, match="part-zzz-00001.parquet: unreadable part file"):
        run_job(job, RunOptions(api_key=KEY))
    assert sorted(p.name for p in (tmp_path / "out" / "results").iterdir()) == before


def test_an_unusable_output_directory_is_one_line(tmp_path: Path) -> None:
    path = make_job(tmp_path, 3)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    job = load_job(
        path, Overrides(output=tmp_path / "blocker" / "out", base_url="http://127.0.0.1:9")
    )
    with pytest.raises(CheckpointError, match="blocker/out: cannot use the output directory"):
        run_job(job, RunOptions(api_key=KEY))


def test_status_of_something_else_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert result.exit_code == 2 and "not a batchgen output" in result.output
