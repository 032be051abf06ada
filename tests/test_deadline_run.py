"""A row's deadline bounds every wait, through a real run against the emulator: a server that asks
for an hour gets a row that fails as a timeout at once, saying what the server asked."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.job.spec import Overrides, load_job
from batchgen.run.runner import RunOptions, run_job
from tests.helpers.jobs import item_job
from tests.helpers.outputs import read_rows

KEY = "deadline-test-key-0123456789"


@pytest.mark.parametrize(("fault", "status"), [("delay_429", 429), ("delay_503", 503)])
def test_a_server_asking_for_an_hour_fails_the_row_as_a_timeout_at_once(
    tmp_path: Path, fault: str, status: int
) -> None:
    path = item_job(tmp_path, 1, retry={"row_deadline_seconds": 10})
    with EmulatorThread(EmulatorConfig(script={"item-000": [fault]})) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        began = time.monotonic()
        summary = run_job(job, RunOptions(api_key=KEY))
        took = time.monotonic() - began
    assert summary.exit_code == 1  # rows failed; the run itself went to its end
    (record,) = read_rows(job.output.directory, "errors")
    assert (record["row_id"], record["category"], record["http_status"]) == (
        "r0",
        "timeout",
        status,
    )
    assert (
        "the server asked to wait 3600 s; that passes retry.row_deadline_seconds = 10"
        in record["message"]
    )
    assert took < 60  # well under the 3600 s asked (and the 300 s cap): no wait was begun


def test_a_row_waiting_out_an_outage_fails_as_a_timeout_at_its_deadline(tmp_path: Path) -> None:
    rows = 20
    path = item_job(
        tmp_path,
        rows,
        retry={"row_deadline_seconds": 3, "backoff_initial_seconds": 0.2},
        limits={"concurrency": 20},
    )
    # every call answers 503 (no Retry-After): the breaker opens, its first probe is 5 s away
    config = EmulatorConfig(outage_after_s=0, outage_seconds=600)
    with EmulatorThread(config) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        began = time.monotonic()
        summary = run_job(job, RunOptions(api_key=KEY))
        took = time.monotonic() - began
    assert summary.exit_code == 1 and summary.rows_failed == rows
    outage = [r for r in read_rows(job.output.directory, "errors") if r["category"] == "timeout"]
    assert outage, summary.failures
    assert "the API fails every call (an outage" in outage[0]["message"]
    assert "that passes retry.row_deadline_seconds = 3" in outage[0]["message"]
    assert took < 60  # well under retry.outage_minutes (10): no row waited the outage out
