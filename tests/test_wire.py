"""A key or base URL that cannot go on the wire is a job error found before the first call."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from batchgen.api import cancel_batches, run_file
from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import BatchgenWarning, JobError
from batchgen.job.spec import Overrides, load_job
from batchgen.run.runner import RunOptions, run_job
from tests.helpers.emulator_calls import StartEmulator

KEY = "test-key-123456"
SECRET = "AIzaSECRETpart"  # what must never be printed of a bad key
BROKEN = f"{SECRET}\nxyzOTHERpart"


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(EmulatorConfig(api_keys=frozenset({KEY}), record=True))


def _job(project: Path) -> str:
    return str(project / "jobs" / "cookie_recipes.toml")


def _assert_refused(result: Result, emulator: EmulatorThread | None = None) -> None:
    output = result.output + result.stderr
    assert result.exit_code == 2, output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "$GEMINI_API_KEY" in result.stderr
    assert "a line break" in result.stderr
    assert SECRET not in output and "xyzOTHER" not in output
    if emulator is not None:
        assert emulator.emulator.received_headers == []


@pytest.mark.parametrize("command", ["run", "estimate"])
def test_a_key_with_a_newline_inside_is_refused_before_any_call(
    project: Path, emulator: EmulatorThread, command: str
) -> None:
    args = [command, _job(project), "--base-url", emulator.base_url]
    result = CliRunner().invoke(main, args, env={"GEMINI_API_KEY": BROKEN})
    _assert_refused(result, emulator)


def test_the_emulator_refuses_a_broken_key_too(project: Path) -> None:
    result = CliRunner().invoke(
        main, ["run", _job(project), "--emulator", "--limit", "1"], env={"GEMINI_API_KEY": BROKEN}
    )
    _assert_refused(result)


def test_cancel_refuses_a_broken_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["cancel", str(tmp_path)], env={"GEMINI_API_KEY": BROKEN})
    _assert_refused(result)


def test_a_trailing_newline_is_stripped_with_a_note(
    project: Path, emulator: EmulatorThread
) -> None:
    args = ["run", _job(project), "--base-url", emulator.base_url, "--limit", "2"]
    result = CliRunner().invoke(main, args, env={"GEMINI_API_KEY": KEY + "\n"})
    assert result.exit_code == 0, result.output + result.stderr
    notes = [line for line in result.stderr.splitlines() if "stripped" in line]
    assert notes == [
        f"warning: {project / 'jobs' / 'cookie_recipes.toml'}: $GEMINI_API_KEY "
        "(model.api_key_env): the API key had a newline around it (a copy from a file?); "
        "it was stripped"
    ]
    assert {h["x-goog-api-key"] for h in emulator.emulator.received_headers} == {KEY}


def test_the_library_warns_and_refuses_the_same(project: Path, emulator: EmulatorThread) -> None:
    with pytest.raises(JobError, match="api_key=: the API key holds a line break") as caught:
        run_file(_job(project), api_key=BROKEN, base_url=emulator.base_url)
    assert SECRET not in str(caught.value)
    with pytest.warns(BatchgenWarning, match="it was stripped"):
        summary = run_file(
            _job(project), api_key=f"  {KEY}\r\n", base_url=emulator.base_url, limit=1
        )
    assert summary.exit_code == 0
    with pytest.raises(JobError, match="a non-ASCII character \\(U\\+200B\\)"):
        cancel_batches(project / "out", api_key=KEY + "\u200b" + "x")


def test_a_key_handed_to_run_job_directly_is_checked_before_the_first_call(
    project: Path, emulator: EmulatorThread
) -> None:
    job = load_job(_job(project), Overrides(base_url=emulator.base_url))
    with pytest.raises(JobError, match="GEMINI_API_KEY") as caught:
        run_job(job, RunOptions(api_key=BROKEN, limit=2))
    assert SECRET not in str(caught.value)
    assert emulator.emulator.received_headers == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/v1\n", "http://127.0.0.1:9/a\tb", "http://127.0.0.1:9/a b"]
)
def test_a_base_url_that_cannot_be_sent_is_a_job_error(project: Path, url: str) -> None:
    with pytest.raises(JobError, match="--base-url: model.base_url holds"):
        load_job(_job(project), Overrides(base_url=url))
