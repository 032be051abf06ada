"""The quota pieces in a real run against the emulator: automatic concurrency, the breaker
for outages, the daily request count, and what progress and run records show of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from batchgen.backends.online import breaker
from batchgen.backends.online.backend import requests_today
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.emulator.hostile import HostileConfig
from batchgen.errors import QuotaExhaustedError, RunStoppedError
from batchgen.job.spec import Overrides, load_job
from batchgen.run.progress import Snapshot
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.outdir import OutputDir
from batchgen.store.runs import read_run_records
from tests.helpers.outputs import error_ids, result_ids
from tests.helpers.paths import write_job

KEY = "quota-key-7"
JOB = """
    [input]
    path = "rows.csv"
    id_column = "id"

    [model]
    name = "gemini-2.5-flash-lite"

    [prompt]
    user = "Describe item {{{{ name }}}} in a few words."

    [response_schema]
    type = "OBJECT"
    required = ["label", "size"]
    properties = {{ label = {{ type = "STRING" }}, size = {{ type = "INTEGER" }} }}

    [limits]
    requests_per_minute = {rpm}
    {limit_lines}

    [retry]
    attempts = 5
    backoff_initial_seconds = 0.01
    backoff_max_seconds = 0.05
    {retry_lines}

    [output]
    directory = "out"
    flush_rows = 20
    flush_seconds = 0.2
"""


def make_job(folder: Path, rows: int, rpm: int = 1_000_000, limits: str = "",
             retry: str = "") -> Path:  # fmt: skip
    with (folder / "rows.csv").open("w") as f:
        f.write("id,name\n")
        f.writelines(f"id-{i:05d},thing {i}\n" for i in range(rows))
    return write_job(folder, JOB.format(rpm=rpm, limit_lines=limits, retry_lines=retry))


class Progress:
    """Keeps the last snapshot the run showed."""

    def __init__(self) -> None:
        self.last: Snapshot | None = None

    def update(self, snap: Snapshot) -> None:
        self.last = snap

    def close(self, snap: Snapshot) -> None:
        self.last = snap


def test_auto_concurrency_fills_a_quota_a_fixed_eight_could_not(tmp_path: Path) -> None:
    """0.3 s answers under 6,000 requests a minute: 100/s needs 30 calls in flight; a pool of
    8 could send at most 8 / 0.3 = 27 a second, and 150 rows would take 5.6 s."""
    rows, rpm, latency = 150, 6_000, 0.3
    path = make_job(tmp_path, rows, rpm)  # no concurrency key: "auto"
    config = EmulatorConfig(latency_ms=latency * 1000, rpm_limit=rpm)
    progress = Progress()
    with EmulatorThread(config) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        summary = run_job(job, RunOptions(api_key=KEY, progress=progress))
        assert server.emulator.counts["status:429"] == 0
    assert summary.rows_done == rows and summary.exit_code == 0
    end = read_run_records(tmp_path / "out")[-1]
    # from the first row to the last (the run record's times leave out the checks and the scan)
    took = datetime.fromisoformat(end["ended_at"]) - datetime.fromisoformat(end["started_at"])
    assert took.total_seconds() < rows * latency / 8, took  # faster than 8 in flight ever could
    # 100/s x the p90 latency x 1.2 headroom: 36 at 0.3 s (more when a loaded machine slows us)
    assert end["concurrency"] >= 30 and end["latency_p90_s"] >= 0.29, end
    assert progress.last is not None and progress.last.concurrency == end["concurrency"]


def test_an_integer_concurrency_pins_it(tmp_path: Path) -> None:
    path = make_job(tmp_path, 30, limits="concurrency = 3")
    with EmulatorThread(EmulatorConfig(latency_ms=20)) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        run_job(job, RunOptions(api_key=KEY))
    assert read_run_records(tmp_path / "out")[-1]["concurrency"] == 3


@pytest.fixture
def quick_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe 0.2 s after the breaker opens (5 s in a real run) to keep the test short."""
    monkeypatch.setattr(breaker, "FIRST_PROBE_SECONDS", 0.2)


def test_a_503_storm_pauses_the_rows_and_loses_none(tmp_path: Path, quick_probes: None) -> None:
    """A storm of 503s from 0.3 s to 0.9 s: without the breaker each of the 8 calls in
    flight would spend its row's 5 attempts in milliseconds and fail it."""
    rows, concurrency = 200, 8
    path = make_job(tmp_path, rows, limits=f"concurrency = {concurrency}")
    config = EmulatorConfig(latency_ms=20, outage_after_s=0.3, outage_seconds=0.6)
    with EmulatorThread(config) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        summary = run_job(job, RunOptions(api_key=KEY))
        storm = server.emulator.counts["fault:outage"]
    assert (summary.rows_done, summary.rows_failed, summary.exit_code) == (rows, 0, 0)
    assert len(set(result_ids(tmp_path / "out"))) == rows
    # the breaker's 10 failures, the calls already in flight, and probes 0.2 and 0.6 s after
    assert 10 <= storm <= breaker.THRESHOLD + concurrency + 3, storm


def test_an_outage_longer_than_outage_minutes_stops_with_exit_4(
    tmp_path: Path, quick_probes: None
) -> None:
    rows = 100
    path = make_job(tmp_path, rows, limits="concurrency = 4", retry="outage_minutes = 0.01")
    config = EmulatorConfig(outage_after_s=0.0, outage_seconds=3600)
    with EmulatorThread(config) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        with pytest.raises(
            RunStoppedError, match=r"every call failed server-side for 0.01 min"
        ) as info:
            run_job(job, RunOptions(api_key=KEY))
        storm = server.emulator.counts["fault:outage"]
    assert "HTTP 503" in str(info.value) and "rerun later to resume" in str(info.value)
    assert info.value.exit_code == 4
    summary = info.value.summary
    assert (summary.rows_done, summary.rows_failed, summary.rows_remaining) == (0, 0, rows)
    assert summary.stopped_by == "outage"
    assert storm <= breaker.THRESHOLD + 4 + 3, storm  # 0.6 s: probes at 0.2 and 0.6 s at most
    assert error_ids(tmp_path / "out") == []  # no row spent its attempts on the outage
    with EmulatorThread(EmulatorConfig()) as server:  # the API is back: the rerun finishes
        job = load_job(path, Overrides(base_url=server.base_url))
        assert run_job(job, RunOptions(api_key=KEY)).rows_done == rows


def test_requests_per_day_stops_with_exit_5_before_the_quota_and_resumes(tmp_path: Path) -> None:
    path = make_job(tmp_path, 20, limits="concurrency = 3\nrequests_per_day = 6")
    out = tmp_path / "out"
    with EmulatorThread(EmulatorConfig()) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        with pytest.raises(QuotaExhaustedError, match=r"requests_per_day: 6 of 6 requests") as info:
            run_job(job, RunOptions(api_key=KEY))
        assert info.value.exit_code == 5
        assert info.value.summary.rows_done == 6
        assert server.emulator.counts["generateContent"] == 6  # not one over
        assert len(result_ids(out)) == 6  # saved before stopping

        # the same day: today's requests are counted from the ledger, so nothing more is sent
        with pytest.raises(QuotaExhaustedError):
            run_job(job, RunOptions(api_key=KEY))
        assert server.emulator.counts["generateContent"] == 6

        # a larger quota (as on the next day, when the count starts again) resumes the rest
        path = make_job(tmp_path, 20, limits="concurrency = 3\nrequests_per_day = 100")
        job = load_job(path, Overrides(base_url=server.base_url))
        summary = run_job(job, RunOptions(api_key=KEY))
    assert (summary.rows_skipped, summary.rows_done, summary.exit_code) == (6, 14, 0)
    now = datetime.now(UTC)
    assert requests_today(OutputDir(out), now) == 20
    assert requests_today(OutputDir(out), now + timedelta(days=1)) == 0  # a new Pacific day


def test_every_call_redirected_stops_the_run_as_the_watch_did(tmp_path: Path) -> None:
    """A redirect is no outage (the breaker leaves it alone): when every call is one, the
    base URL is wrong, and the TransportWatch stops the run after ``unreachable_after`` calls."""
    path = make_job(tmp_path, 100, limits="concurrency = 2")
    hostile = HostileConfig(redirect_to="http://127.0.0.1:9")  # never followed
    config = EmulatorConfig(fault_rates={"redirect_302": 1.0}, hostile=hostile)
    with EmulatorThread(config) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        with pytest.raises(
            RunStoppedError, match=r"redirected elsewhere \(5 calls in a row"
        ) as info:
            run_job(job, RunOptions(api_key=KEY, unreachable_after=5))
        calls = server.emulator.counts["generateContent"]
    assert info.value.exit_code == 4 and info.value.summary.stopped_by == "unreachable"
    assert calls <= 5 + 2  # the calls in flight when it stopped, no more
