"""A resume whose ids changed type (Parquet floats for ints, ``7`` for ``007``) is refused before
any call, instead of buying every row again; a new input of another size still runs."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import batchgen
from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import CheckpointError
from batchgen.run.idcheck import _canonical
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.paths import write_job

KEY = "idcheck-key-7"
ROWS = 40
JOB = """
    [input]
    path = "rows.parquet"
    id_column = "id"

    [model]
    name = "gemini-2.5-flash-lite"

    [prompt]
    user = "Describe item {{ name }} in a few words."

    [response_schema]
    type = "OBJECT"
    required = ["label"]
    properties = { label = { type = "STRING" } }

    [limits]
    concurrency = 8
    requests_per_minute = 1000000

    [output]
    directory = "out"
"""


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(EmulatorConfig(api_keys=frozenset({KEY})))


def write_rows(folder: Path, ids: pa.Array) -> None:
    names = pa.array([f"thing {i}" for i in range(len(ids))])
    pq.write_table(pa.table({"id": ids, "name": names}), folder / "rows.parquet")


def run(job: Path, url: str, *extra: str) -> tuple[int, str]:
    args = ["run", str(job), "--base-url", url, "--quiet", *extra]
    result = CliRunner().invoke(main, args, env={"GEMINI_API_KEY": KEY})
    return result.exit_code, result.output


def test_float_ids_for_int_ids_are_refused_before_any_call(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    job = write_job(tmp_path, JOB)
    write_rows(tmp_path, pa.array(range(1, ROWS + 1), pa.int64()))
    assert run(job, emulator.base_url)[0] == 0
    paid = emulator.emulator.counts["generateContent"]
    assert paid == ROWS

    write_rows(tmp_path, pa.array([float(i) for i in range(1, ROWS + 1)], pa.float64()))
    code, output = run(job, emulator.base_url)
    assert code == 2
    assert emulator.emulator.counts["generateContent"] == paid  # nothing bought again
    line = output.strip().splitlines()[-1]
    assert f"none of the {ROWS} ids in rows.parquet match the {ROWS} done rows" in line
    assert "'1.0'" in line and "'1'" in line  # a sample of each side, paired
    assert "--fresh" in line and "same type" in line

    # the library refuses alike
    with pytest.raises(CheckpointError, match="none of the 40 ids"):
        batchgen.run_file(job, base_url=emulator.base_url, api_key=KEY)
    assert emulator.emulator.counts["generateContent"] == paid

    # --fresh is the way on: the old output moves aside, every row is bought once more
    code, _ = run(job, emulator.base_url, "--fresh")
    assert code == 0
    assert emulator.emulator.counts["generateContent"] == paid + ROWS
    assert list((tmp_path / "out").glob("previous-*"))


def test_text_ids_read_back_as_numbers_are_refused(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    job = write_job(tmp_path, JOB)
    write_rows(tmp_path, pa.array([f"{i:03d}" for i in range(ROWS)]))
    assert run(job, emulator.base_url)[0] == 0
    write_rows(tmp_path, pa.array(range(ROWS), pa.int64()))
    code, output = run(job, emulator.base_url)
    assert code == 2 and "'1'" in output and "'001'" in output
    assert emulator.emulator.counts["generateContent"] == ROWS


def test_a_new_or_grown_input_still_runs(tmp_path: Path, emulator: EmulatorThread) -> None:
    job = write_job(tmp_path, JOB)
    write_rows(tmp_path, pa.array(range(ROWS), pa.int64()))
    assert run(job, emulator.base_url, "--limit", "10")[0] == 0
    # four times as many rows, few of them done: a grown input, not the same rows retyped
    write_rows(tmp_path, pa.array(range(ROWS), pa.int64()))
    assert run(job, emulator.base_url)[0] == 0
    assert emulator.emulator.counts["generateContent"] == ROWS
    # a new file of other ids and another size, into the same output
    write_rows(tmp_path, pa.array(range(1000, 1000 + 3 * ROWS), pa.int64()))
    assert run(job, emulator.base_url)[0] == 0
    assert emulator.emulator.counts["generateContent"] == 4 * ROWS


def test_the_same_rows_again_resume_quietly(tmp_path: Path, emulator: EmulatorThread) -> None:
    job = write_job(tmp_path, JOB)
    write_rows(tmp_path, pa.array(range(ROWS), pa.int64()))
    assert run(job, emulator.base_url)[0] == 0
    assert run(job, emulator.base_url)[0] == 0
    assert emulator.emulator.counts["generateContent"] == ROWS


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("1.0", "1"), ("007", "7"), (" 7", "7"), ("1e3", "1000"), ("2.50", "2.5"), ("Ab", "ab"),
     ("nan", "nan")],
)  # fmt: skip
def test_ids_are_paired_regardless_of_their_types_spelling(text: str, canonical: str) -> None:
    assert _canonical(text) == canonical
