"""Object-store inputs and outputs against an S3-compatible server on 127.0.0.1 (moto's, started
by conftest's ``s3`` fixture) and the built-in emulator: every row answered, resume without
paying twice, status and report on an ``s3://`` output, one-line errors, no secret shown."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.jobs import item_job
from tests.helpers.s3 import S3, S3_SECRET, credentials_checked

KEY = "objstore-key-19"
TUNED = {"concurrency": 8, "requests_per_minute": 1_000_000}  # quick runs; the kill test is not


def s3_job(folder: Path, source: str, output: str, **tables: Any) -> Path:
    """The job over ``source`` (rows the test wrote) writing to ``output``, run quickly."""
    tables = {"limits": TUNED, **tables}
    return item_job(folder, None, input={"path": source},
                    output={"directory": output, "flush_rows": 40}, **tables)  # fmt: skip


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHGEN_CACHE_DIR", str(tmp_path / "cache"))


def csv_rows(n: int) -> bytes:
    return b"id,name\n" + b"".join(b"r%d,item-%03d\n" % (i, i) for i in range(n))


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def store_rows(s3: S3, prefix: str, kind: str) -> list[dict[str, object]]:
    keys = [k for k in s3.keys(f"{prefix}/{kind}/") if k.endswith(".parquet")]
    tables = [pq.read_table(io.BytesIO(s3.get(k))) for k in keys]
    return pa.concat_tables(tables).to_pylist() if tables else []


def test_input_and_output_in_s3_every_row_answered(tmp_path: Path, s3: S3) -> None:
    source = s3.put("in/rows.csv", csv_rows(150))
    job = s3_job(tmp_path, source, s3.url("out"))
    code, output = invoke("run", str(job), "--emulator")
    assert code == 0, output
    results = store_rows(s3, "out", "results")
    assert sorted(r["row_id"] for r in results) == sorted(f"r{i}" for i in range(150))
    keys = s3.keys("out/")
    assert "out/job.json" in keys and "out/runs.jsonl" in keys
    assert not [k for k in keys if "/journal/" in k or k.endswith(".lock")]  # local only
    assert S3_SECRET not in output
    assert not [k for k in keys if S3_SECRET.encode() in s3.get(k)]


@pytest.mark.parametrize("name", ["rows.jsonl.gz", "rows.parquet"])
def test_jsonl_and_parquet_stream_from_s3(tmp_path: Path, s3: S3, name: str) -> None:
    if name.endswith(".parquet"):
        sink = io.BytesIO()
        pq.write_table(pa.table({"id": ["a", "b"], "name": ["x", "y"]}), sink)
        body = sink.getvalue()
    else:
        import gzip

        body = gzip.compress(b'{"id": "a", "name": "x"}\n{"id": "b", "name": "y"}\n')
    job = s3_job(tmp_path, "elsewhere.csv", "out")
    code, output = invoke("run", str(job), "--emulator", "--input", s3.put(f"in/{name}", body))
    assert code == 0, output
    assert "2 rows done" in output


def test_resume_on_s3_pays_only_for_the_rest(
    tmp_path: Path, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = s3_job(tmp_path, "rows.csv", s3.url("out"))
    (tmp_path / "rows.csv").write_bytes(csv_rows(100))
    code, output = invoke("run", str(job), "--emulator", "--limit", "60")
    assert code in (0, 4), output
    first = {r["row_id"] for r in store_rows(s3, "out", "results")}
    assert len(first) == 60
    # another machine: none of the first run's local mirror, only the store
    monkeypatch.setenv("BATCHGEN_CACHE_DIR", str(tmp_path / "another-machine"))
    code, output = invoke("run", str(job), "--emulator")
    assert code == 0, output
    assert "60 skipped as done" in output
    usage = store_rows(s3, "out", "usage")
    assert sorted(r["row_id"] for r in usage) == sorted(f"r{i}" for i in range(100))  # paid once


def test_status_and_report_read_an_s3_output(tmp_path: Path, s3: S3) -> None:
    job = s3_job(tmp_path, "rows.csv", s3.url("out"))
    (tmp_path / "rows.csv").write_bytes(csv_rows(30))
    assert invoke("run", str(job), "--emulator")[0] == 0
    code, output = invoke("status", s3.url("out"))
    assert code == 0, output
    assert output.startswith(f"{s3.url('out')}\n  done       30 rows (30 result rows)")
    code, output = invoke("report", s3.url("out"), "--format", "json")
    assert code == 0, output
    assert json.loads(output)["total"]["rows_done"] == 30


def test_a_held_lock_in_the_store_refuses_a_second_writer(tmp_path: Path, s3: S3) -> None:
    job = s3_job(tmp_path, "rows.csv", s3.url("out"))
    (tmp_path / "rows.csv").write_bytes(csv_rows(3))
    holder = {"pid": 1, "host": "another-host", "token": "t", "at": "2026-01-01T00:00:00Z"}
    s3.put("out/.lock", json.dumps(holder).encode())
    code, output = invoke("run", str(job), "--emulator")
    assert code == 2
    assert output.count("\n") == 1
    assert "another run (pid 1 on another-host" in output
    assert not [k for k in s3.keys("out/") if k.endswith(".parquet")]


def test_fresh_on_s3_moves_the_earlier_output_aside_in_the_store(tmp_path: Path, s3: S3) -> None:
    job = s3_job(tmp_path, "rows.csv", s3.url("out"))
    (tmp_path / "rows.csv").write_bytes(csv_rows(20))
    assert invoke("run", str(job), "--emulator")[0] == 0
    before = [k for k in s3.keys("out/results/") if k.endswith(".parquet")]
    code, output = invoke("run", str(job), "--emulator", "--fresh")
    assert code == 0, output
    assert "20 rows done" in output  # bought again, as --fresh asks
    aside = [k for k in s3.keys("out/previous-") if "/results/" in k]
    assert [k.split("/results/")[1] for k in aside] == [k.split("/")[-1] for k in before]
    assert len(store_rows(s3, "out", "results")) == 20


def test_a_changed_job_is_refused_naming_the_store_output(tmp_path: Path, s3: S3) -> None:
    job = s3_job(tmp_path, "rows.csv", s3.url("out"))
    (tmp_path / "rows.csv").write_bytes(csv_rows(5))
    assert invoke("run", str(job), "--emulator")[0] == 0
    job.write_text(job.read_text().replace("in a few words", "in one word"))
    code, output = invoke("run", str(job), "--emulator")
    assert code == 2
    assert output == (
        f"error: {s3.url('out')}: written by a different job (prompt.user changed); rerun with "
        "--fresh to start over, or choose another output\n"
    )


def test_an_output_removed_from_the_store_is_not_brought_back(tmp_path: Path, s3: S3) -> None:
    job = s3_job(tmp_path, "rows.csv", s3.url("out"))
    (tmp_path / "rows.csv").write_bytes(csv_rows(10))
    assert invoke("run", str(job), "--emulator")[0] == 0
    for key in s3.keys("out/"):
        s3.client.delete_object(Bucket=s3.bucket, Key=key)
    (tmp_path / "rows.csv").write_bytes(csv_rows(4))
    code, output = invoke("run", str(job), "--emulator")
    assert code == 0, output
    assert "4 rows done, 0 failed, 0 skipped" in output  # the mirror's old parts are not used
    assert sorted(r["row_id"] for r in store_rows(s3, "out", "results")) == ["r0", "r1", "r2", "r3"]


def test_a_batch_mode_run_on_s3_keeps_its_batch_records_in_the_store(
    tmp_path: Path, s3: S3, emulator_factory: StartEmulator
) -> None:
    emulator = emulator_factory(
        EmulatorConfig(api_keys=frozenset({KEY}), batch_pending_s=0.05, batch_running_s=0.1)
    )
    batch = {"rows_per_chunk": 10, "poll_initial_seconds": 0.02, "poll_max_seconds": 0.05}
    job = s3_job(tmp_path, "rows.csv", s3.url("out"), batch=batch)
    (tmp_path / "rows.csv").write_bytes(csv_rows(25))
    env = {**os.environ, "GEMINI_API_KEY": KEY}
    args = [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", emulator.base_url,
            "--tier", "batch"]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(r["row_id"] for r in store_rows(s3, "out", "results")) == sorted(
        f"r{i}" for i in range(25)
    )
    records = s3.get("out/batches/batches.jsonl").decode().splitlines()
    assert len({json.loads(line)["chunk"] for line in records}) == 3  # 25 rows, 10 a chunk


def test_without_boto3_the_lock_is_best_effort_and_says_so(
    tmp_path: Path, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # the s3 extra not installed
    job = s3_job(tmp_path, "rows.csv", s3.url("out"))
    (tmp_path / "rows.csv").write_bytes(csv_rows(5))
    code, output = invoke("run", str(job), "--emulator")
    assert code == 0, output
    assert "its lock is best effort: two runs started at the same moment could both write" in output
    assert len(store_rows(s3, "out", "results")) == 5
    assert not s3.keys("out/.lock")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("input-bucket", "input file not found in the store"),
        ("input-key", "input file not found in the store (check bucket and key)"),
        ("output-bucket", "the bucket 'no-such-bucket' does not exist"),
    ],
)
def test_missing_bucket_or_object_is_one_line(
    tmp_path: Path, s3: S3, where: str, message: str
) -> None:
    (tmp_path / "rows.csv").write_bytes(csv_rows(3))
    source = {"input-bucket": "s3://no-such-bucket/rows.csv", "input-key": s3.url("nope.csv")}
    output = "s3://no-such-bucket/out" if where == "output-bucket" else "out"
    job = s3_job(tmp_path, source.get(where, "rows.csv"), output)
    code, said = invoke("run", str(job), "--emulator")
    assert code == 2, said
    assert said.count("\n") == 1 and said.startswith("error: "), said
    assert message in said
    assert S3_SECRET not in said


@pytest.mark.parametrize("side", ["input", "output"])
def test_refused_credentials_are_one_line_without_the_secret(
    tmp_path: Path, s3: S3, side: str
) -> None:
    (tmp_path / "rows.csv").write_bytes(csv_rows(3))
    source = s3.put("in/rows.csv", csv_rows(3)) if side == "input" else "rows.csv"
    output = s3.url("out") if side == "output" else "out"
    job = s3_job(tmp_path, source, output)
    with credentials_checked():
        code, said = invoke("run", str(job), "--emulator")
    assert code == 2, said
    assert said.count("\n") == 1, said
    assert said.startswith(f"error: {source if side == 'input' else output}: "), said
    assert "ACCESS_DENIED" in said
    assert S3_SECRET not in said


def test_an_unreachable_store_is_one_line(
    tmp_path: Path, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = s3.put("in/rows.csv", csv_rows(3))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    job = s3_job(tmp_path, source, "out")
    code, said = invoke("run", str(job), "--emulator")
    assert code == 2, said
    assert said.count("\n") == 1 and said.startswith(f"error: {source}: cannot read: "), said
    assert S3_SECRET not in said


def test_a_killed_run_on_s3_resumes_without_paying_twice(
    tmp_path: Path, s3: S3, emulator_factory: StartEmulator
) -> None:
    """At the defaults a user gets (1,000 requests a minute, concurrency "auto", the output's
    default flushing): killed mid-run, then run again."""
    rows = 300
    emulator = emulator_factory(EmulatorConfig(api_keys=frozenset({KEY}), latency_ms=15))
    (tmp_path / "rows.csv").write_bytes(csv_rows(rows))
    job = item_job(tmp_path, None, output={"directory": s3.url("out")})
    env = {**os.environ, "GEMINI_API_KEY": KEY}
    args = [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", emulator.base_url]
    killed = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while emulator.emulator.counts["generateContent"] < 100 and time.monotonic() < deadline:
        assert killed.poll() is None, "the run ended before it could be killed"
        time.sleep(0.005)
    killed.kill()
    killed.wait()
    assert s3.keys("out/.lock")  # left behind by the killed run: taken over, its pid is gone
    rerun = subprocess.run(args, env=env, capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()
    ids = [r["row_id"] for r in store_rows(s3, "out", "results")]
    assert sorted(ids) == sorted(f"r{i}" for i in range(rows))  # each row once
    redone = emulator.emulator.counts["generateContent"] - rows
    assert 0 <= redone <= 40, redone  # the calls in flight at the kill
    paid = [u["row_id"] for u in store_rows(s3, "out", "usage") if u["outcome"] == "ok"]
    assert len(paid) == len(set(paid)) == rows  # none billed twice in the ledger
    assert not s3.keys("out/.lock")
