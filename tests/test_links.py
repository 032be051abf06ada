"""OUTPUT may be shared: a symbolic link planted under a name batchgen writes never carries a
write out of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from batchgen.atomic import atomic_file
from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import CheckpointError
from batchgen.store.journal import SUFFIX, JournalWriter
from tests.helpers.emulator_calls import StartEmulator

KEY = "test-key-123456"
OUTSIDE = b"a file outside OUTPUT that must stay as it is\n"


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(EmulatorConfig(api_keys=frozenset({KEY}), batch_pending_s=0.05))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(OUTSIDE)
    return path


def _plant(output: Path, name: str, target: Path) -> Path:
    link = output / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def _run(project: Path, emulator: EmulatorThread, output: Path, *extra: str) -> Result:
    job = project / "jobs" / "cookie_recipes.toml"
    args = ["run", str(job), "--base-url", emulator.base_url, "--output", str(output)]
    return CliRunner().invoke(main, [*args, "--limit", "2", *extra], env={"GEMINI_API_KEY": KEY})


@pytest.mark.parametrize(
    "name",
    ["runs.jsonl", "batches/batches.jsonl"],
)
def test_a_file_that_grows_is_never_appended_through_a_link(
    project: Path, emulator: EmulatorThread, outside: Path, name: str
) -> None:
    output = project / "out"
    _plant(output, name, outside)
    tier = ["--tier", "batch"] if name.startswith("batches/") else []
    result = _run(project, emulator, output, *tier)
    assert result.exit_code == 2, result.output + result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: {output / name} is a symbolic link; batchgen does not write through links it "
        "did not make: remove it"
    )
    assert outside.read_bytes() == OUTSIDE


@pytest.mark.parametrize("folder", ["results", "journal", "batches"])
def test_a_folder_of_output_that_is_a_link_is_refused_before_any_call(
    project: Path, emulator: EmulatorThread, outside: Path, folder: str
) -> None:
    output = project / "out"
    _plant(output, folder, outside.parent)
    result = _run(project, emulator, output)
    assert result.exit_code == 2, result.output + result.stderr
    assert result.stderr == (
        f"error: {output / folder} is a symbolic link; batchgen does not write through links it "
        "did not make: remove it\n"
    )
    assert os.listdir(outside.parent) == ["precious.txt"]
    assert outside.read_bytes() == OUTSIDE


@pytest.mark.parametrize(
    "name", [".job.json.tmp", f".lock.{os.getpid()}.tmp", f"results/.probe-{os.getpid()}"]
)
def test_a_temporary_file_planted_as_a_link_is_replaced_not_written_through(
    project: Path, emulator: EmulatorThread, outside: Path, name: str
) -> None:
    output = project / "out"
    _plant(output, name, outside)
    result = _run(project, emulator, output)
    assert result.exit_code == 0, result.output + result.stderr
    assert outside.read_bytes() == OUTSIDE
    assert not (output / "job.json").is_symlink() and (output / "job.json").stat().st_size


def test_a_job_record_planted_as_a_link_is_read_not_written(
    project: Path, emulator: EmulatorThread, outside: Path
) -> None:
    output = project / "out"
    _plant(output, "job.json", outside)
    result = _run(project, emulator, output)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {output / 'job.json'}: unreadable;")
    assert outside.read_bytes() == OUTSIDE


def test_whole_files_and_journal_segments_never_follow_a_link(
    tmp_path: Path, outside: Path
) -> None:
    dest = tmp_path / "results-chunk.jsonl"  # a download, a chunk file, a part
    _plant(tmp_path, ".results-chunk.jsonl.tmp", outside)
    with atomic_file(dest) as sink:
        sink.write(b"new\n")
    assert dest.read_bytes() == b"new\n" and outside.read_bytes() == OUTSIDE

    journal = tmp_path / "journal"
    _plant(journal, f"run1-00001{SUFFIX}", outside)
    with pytest.raises(CheckpointError, match="is a symbolic link; batchgen does not write"):
        JournalWriter(journal, "run1").append([b"frame"])
    assert outside.read_bytes() == OUTSIDE
