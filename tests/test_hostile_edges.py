"""Issue 20's last hostile edges: the CLI's own exits, advice that fits, the SDK's key variable,
status during a run, empty prompts, damaged parts in one line, DataFrame template errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.store.layout import part_files
from tests.conftest import write_job

KEY = "edges-key-2020"
JOB = """
    [input]
    path = "rows.csv"
    id_column = "id"

    [model]
    name = "gemini-2.5-flash-lite"

    [prompt]
    user = "{{{{ review }}}}"

    [response_schema]
    type = "OBJECT"
    required = ["label"]
    properties = {{ label = {{ type = "STRING" }} }}

    [output]
    directory = "out"
    {extra}
"""


@pytest.fixture
def emulator() -> Iterator[EmulatorThread]:
    with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}), record=True)) as server:
        yield server


def invoke(args: list[str], **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, env={"GEMINI_API_KEY": KEY, **env})
    return result.exit_code, result.stdout, result.stderr


def read_dir(directory: Path, kind: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in part_files(directory, kind)])


# --- 5. an empty prompt is a template failure, never sent ---------------------------------


def test_an_empty_prompt_is_a_template_failure_and_costs_no_call(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    (tmp_path / "rows.csv").write_text('id,review\nr1,good\nr2,""\nr3,"   "\nr4,fine\n')
    job = write_job(tmp_path, JOB.format(extra=""))

    code, out, err = invoke(["run", str(job), "--base-url", emulator.base_url])

    assert code == 1, out + err
    assert emulator.emulator.counts["generateContent"] == 2  # r1 and r4 only
    errors = read_dir(tmp_path / "out", "errors")
    assert sorted(errors.column("row_id").to_pylist()) == ["r2", "r3"]
    assert set(errors.column("category").to_pylist()) == {"template"}
    assert "row r2: the prompt is empty (blank 'review'); nothing was sent" in out
