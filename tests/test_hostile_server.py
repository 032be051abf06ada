"""Hostile servers: every misbehaviour of a proxy in front of the API, through a real run.

Each test runs a job against the emulator on loopback in one of its hostile modes and checks what
a user would see: the exit code and summary, the failure category and message, that every input
row is in results or errors, and that the key went nowhere but the configured host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.emulator.hostile import HostileConfig
from batchgen.gemini.client import GeminiClient
from batchgen.gemini.transport import Transport
from batchgen.job.spec import Job, ModelSpec, Overrides, load_job
from batchgen.run.runner import RunOptions, RunSummary, run_job
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.hostile import (
    KEY,
    ROWS,
    VICTIM,
    assert_every_row_accounted_for,
    make_job,
)
from tests.helpers.outputs import read_rows


def run(folder: Path, config: EmulatorConfig, **knobs: Any) -> tuple[RunSummary, Job]:
    path = make_job(folder, **knobs)
    with EmulatorThread(config) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        return run_job(job, RunOptions(api_key=KEY)), job


def assert_key_absent(folder: Path, *texts: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    for text in texts:
        assert KEY not in text


def victim_failure(job: Job) -> dict[str, Any]:
    (record,) = read_rows(job.output.directory, "errors")
    assert record["row_id"] == "r2"
    return record


# --- wrong-shaped 200 bodies --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "category", "says"),
    [
        ("body_null", "malformed_response", "the body is null, not an object"),
        ("body_list", "malformed_response", "the body is a list, not an object"),
        ("candidates_object", "malformed_response", "candidates is an object, not a list"),
        ("parts_not_objects", "malformed_response", "parts[0] is a string, not an object"),
        ("usage_not_numbers", "malformed_response", 'promptTokenCount is "many"'),
        ("empty_object", "malformed_response", "none of candidates, promptFeedback"),
        ("truncated_body", "malformed_response", "is not JSON"),
        ("not_utf8", "malformed_response", "is not UTF-8 text"),
        ("error_in_200", "malformed_response", "an error envelope: The model is overloaded"),
        ("html_200", "malformed_response", "is not JSON"),
        # a part without text is a well-formed answer with nothing in it: the existing category
        ("parts_without_text", "empty", "the answer has no text"),
    ],
)
def test_a_wrong_shaped_200_fails_its_row_and_the_run_goes_on(
    tmp_path: Path, fault: str, category: str, says: str
) -> None:
    summary, job = run(tmp_path, EmulatorConfig(script={VICTIM: [fault] * 9}))
    assert (summary.rows_done, summary.rows_failed, summary.exit_code) == (3, 1, 1)
    assert summary.failures == {category: 1}
    record = victim_failure(job)
    assert record["category"] == category and says in record["message"]
    assert record["attempts"] == 2  # retried like any answer failure (answer_attempts)
    if category == "malformed_response":  # the start of what the server sent, to look at
        assert record["raw_text"] and len(record["raw_text"]) <= 500
    assert_every_row_accounted_for(job)


def test_one_malformed_answer_is_retried_and_the_row_succeeds(tmp_path: Path) -> None:
    summary, job = run(tmp_path, EmulatorConfig(script={VICTIM: ["body_null"]}))
    assert (summary.rows_done, summary.exit_code) == (ROWS, 0)
    attempts = {r["row_id"]: r["attempts"] for r in read_rows(job.output.directory, "results")}
    assert attempts == {"r0": 1, "r1": 1, "r2": 2, "r3": 1}


def test_a_proxy_answering_garbage_now_and_then_leaves_no_row_untried(tmp_path: Path) -> None:
    # The report: a null for one call in twenty killed workers until none was left, and
    # the run said "complete" with most rows never tried.
    rates = {"body_null": 0.05, "candidates_object": 0.05, "truncated_body": 0.05}
    summary, job = run(tmp_path, EmulatorConfig(fault_rates=rates, seed=3), rows=200, concurrency=8)
    assert summary.rows_done + summary.rows_failed == 200
    assert summary.exit_code == (1 if summary.rows_failed else 0)
    assert summary.requests > 200  # some rows needed a second call
    assert_every_row_accounted_for(job, 200)


# --- the key goes only where it was sent -------------------------------------------------


@pytest.fixture
def far(emulator_factory: StartEmulator) -> EmulatorThread:
    """A second emulator on another loopback address, recording the headers of every call."""
    return emulator_factory(record=True, host="127.0.0.2")


@pytest.mark.parametrize("fault", ["redirect_302", "redirect_307"])
def test_a_redirect_is_a_row_failure_and_the_key_never_leaves(
    tmp_path: Path, far: EmulatorThread, fault: str
) -> None:
    hostile = HostileConfig(redirect_to=far.base_url)
    path = make_job(tmp_path)
    with EmulatorThread(EmulatorConfig(script={VICTIM: [fault] * 9}, hostile=hostile)) as near:
        result = CliRunner().invoke(
            main, ["run", str(path), "--base-url", near.base_url], env={"GEMINI_API_KEY": KEY}
        )
        near_host = near.base_url.removeprefix("http://")
    assert result.exit_code == 1, result.output
    assert "3 rows done, 1 failed" in result.output
    far_host = far.base_url.removeprefix("http://")
    expected = (
        f"HTTP {fault[-3:]} redirect to {far_host} not followed: the API key is only sent to "
        f"{near_host}; set model.base_url to the final address"
    )
    assert f"redirect: {expected}" in result.output
    record = victim_failure(load_job(path))
    assert (record["category"], record["message"], record["attempts"]) == ("redirect", expected, 1)
    assert far.emulator.received_headers == []  # nothing, so certainly no x-goog-api-key
    assert_every_row_accounted_for(load_job(path))
    assert_key_absent(tmp_path, result.output)


def test_a_body_repeating_the_key_has_it_replaced(tmp_path: Path) -> None:
    # An echo server (or a debugging proxy) answers 200 with the request's headers in the body.
    summary, job = run(tmp_path, EmulatorConfig(script={VICTIM: ["empty_object"] * 9}))
    record = victim_failure(job)
    assert record["raw_text"] == "{}"
    assert_key_absent(tmp_path, *summary.first_errors.values())


# --- bodies that never end, break off or trickle ----------------------------------------


def test_a_slow_body_times_out_and_is_retried(tmp_path: Path) -> None:
    script = {VICTIM: ["slow_body"] * 9, "item-001": ["slow_body"]}
    hostile = HostileConfig(trickle_seconds=0.5)
    started = time.monotonic()
    summary, job = run(tmp_path, EmulatorConfig(script=script, hostile=hostile),
                       timeout=0.4, attempts=2)  # fmt: skip
    assert time.monotonic() - started < 60  # not the hour asked; against hanging, not speed
    assert summary.failures == {"timeout": 1} and summary.rows_done == 3
    record = victim_failure(job)
    assert record["attempts"] == 2
    assert (
        record["message"].startswith("no answer from 127.0.0.1:")
        and "within 0.4 s" in record["message"]
    )
    attempts = {r["row_id"]: r["attempts"] for r in read_rows(job.output.directory, "results")}
    assert attempts["r1"] == 2  # its one slow answer was retried
    assert_every_row_accounted_for(job)


def test_a_connection_reset_mid_body_is_retried(tmp_path: Path) -> None:
    script = {VICTIM: ["reset_body"] * 9, "item-001": ["reset_body"]}
    summary, job = run(tmp_path, EmulatorConfig(script=script), attempts=3)
    assert summary.failures == {"connection": 1} and summary.rows_done == 3
    record = victim_failure(job)
    assert record["attempts"] == 3  # a transport failure uses the row's attempts
    assert "127.0.0.1:" in record["message"] and "payload is not completed" in record["message"]
    attempts = {r["row_id"]: r["attempts"] for r in read_rows(job.output.directory, "results")}
    assert attempts["r1"] == 2
    assert_every_row_accounted_for(job)


@pytest.mark.parametrize("fault", ["gzip_bomb", "huge_body"])
def test_a_body_over_the_cap_fails_its_row(tmp_path: Path, fault: str) -> None:
    summary, job = run(tmp_path, EmulatorConfig(script={VICTIM: [fault] * 9}))
    assert summary.failures == {"response_too_large": 1} and summary.rows_done == 3
    record = victim_failure(job)
    assert record["attempts"] == 2  # an answer failure: a flaky proxy gets a second chance
    assert "is over 32 MiB (limits.max_response_mb) after decompression" in record["message"]
    assert record["raw_text"].startswith('{"candidates": [{"content"')
    assert_every_row_accounted_for(job)


# --- peak memory, measured in a child process --------------------------------------------

# Runs the CLI and writes its own peak RSS (VmHWM, kB) at exit: the kernel's high-water mark of
# this very process, not inherited from the test process as ru_maxrss across exec would be.
_MEASURED_CLI = """
import atexit, sys
out = sys.argv.pop(1)
def report():
    with open("/proc/self/status") as f:
        peak = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(peak)
atexit.register(report)
from batchgen.cli import main
sys.argv[0] = "batchgen"
main()
"""


def peak_kb(folder: Path, script: dict[str, list[str]]) -> tuple[int, int]:
    """(exit code, peak RSS in kB) of ``batchgen run`` in a child process, one row scripted."""
    folder.mkdir()
    path = make_job(folder, concurrency=1)
    report = folder / "peak"
    with EmulatorThread(EmulatorConfig(script=script)) as server:
        done = subprocess.run(
            [sys.executable, "-c", _MEASURED_CLI, str(report), "run", str(path),
             "--base-url", server.base_url, "--quiet"],
            env={**os.environ, "GEMINI_API_KEY": KEY}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, int(report.read_text())


@pytest.fixture(scope="module")
def normal_peak_kb(tmp_path_factory: pytest.TempPathFactory) -> int:
    code, peak = peak_kb(tmp_path_factory.mktemp("normal") / "run", {})
    assert code == 0
    return peak


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("fault", ["gzip_bomb", "huge_body"])  # 1 GiB inflated; 200 MB plain
def test_a_gzip_bomb_or_a_200_mb_body_keeps_memory_bounded(
    tmp_path: Path, normal_peak_kb: int, fault: str
) -> None:
    code, peak = peak_kb(tmp_path / fault, {VICTIM: [fault] * 9})
    assert code == 1
    over = peak - normal_peak_kb
    assert over < 100 * 1024, f"{fault}: {peak} kB at peak, {normal_peak_kb} kB normally"


# --- server delays -------------------------------------------------------------------------


def test_a_503_asking_for_an_hour_waits_only_the_cap(tmp_path: Path) -> None:
    script = {VICTIM: ["delay_503"]}
    started = time.monotonic()
    summary, job = run(tmp_path, EmulatorConfig(script=script), max_delay=0.2)
    assert time.monotonic() - started < 60  # not the hour asked; against hanging, not speed
    assert (summary.rows_done, summary.exit_code) == (ROWS, 0)
    attempts = {r["row_id"]: r["attempts"] for r in read_rows(job.output.directory, "results")}
    assert attempts["r2"] == 2


def test_a_429_asking_for_an_hour_waits_only_the_cap(tmp_path: Path) -> None:
    started = time.monotonic()
    summary, _ = run(tmp_path, EmulatorConfig(script={VICTIM: ["delay_429"]}), max_delay=0.2)
    assert time.monotonic() - started < 60  # not the hour asked; against hanging, not speed
    assert (summary.rows_done, summary.exit_code) == (ROWS, 0)


@pytest.mark.parametrize("fault", ["delay_429", "delay_503"])
@pytest.mark.parametrize("cap", [None, 5.0])
async def test_the_client_caps_a_server_delay_and_keeps_what_was_asked(
    fault: str, cap: float | None
) -> None:
    body = json.dumps({"contents": [{"parts": [{"text": "item-002"}]}]}).encode()
    with EmulatorThread(EmulatorConfig(script={VICTIM: [fault]})) as server:
        async with aiohttp.ClientSession() as session:
            model = ModelSpec("gemini-2.5-flash-lite", server.base_url)
            client = (
                GeminiClient(Transport(session, model, KEY, 10))  # the default cap: 300 s
                if cap is None
                else GeminiClient(Transport(session, model, KEY, 10, max_server_delay=cap))
            )
            with pytest.raises(Exception) as info:
                await client.generate(body)
    error: Any = info.value
    assert (error.retry_delay, error.asked_delay, error.retryable) == (cap or 300.0, 3600.0, True)
