"""End to end: job file → emulator on 127.0.0.1 → typed Parquet, through the library and the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import FatalApiError
from batchgen.job.spec import Overrides, load_job
from batchgen.plan import plan_job
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.layout import part_files
from batchgen.store.output import ERRORS_SCHEMA
from tests.helpers.emulator_calls import StartEmulator

KEY = "test-key-123456"


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(EmulatorConfig(api_keys=frozenset({KEY}), record=True))


def read_dir(directory: Path, kind: str = "results") -> pa.Table:
    parts = part_files(directory, kind)
    return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else pa.table({})


def input_ids(path: Path, column: str) -> list[str]:
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return [row[column] for row in csv.DictReader(f)]
    return [str(v) for v in pq.read_table(path, columns=[column]).column(0).to_pylist()]


def as_other_format(path: Path) -> Path:
    """The same rows in the other input format (CSV ↔ Parquet)."""
    if path.suffix == ".csv":
        table = pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(column_types={"count": pa.int64()})
        )
        other = path.with_suffix(".parquet")
        pq.write_table(table, other)
    else:
        other = path.with_suffix(".csv")
        pacsv.write_csv(pq.read_table(path), other)
    return other


@pytest.mark.parametrize("job_name", ["cookie_recipes", "review_insights"])
@pytest.mark.parametrize("convert", [False, True], ids=["own-format", "other-format"])
def test_examples_turn_every_row_into_typed_output(
    project: Path, emulator: EmulatorThread, job_name: str, convert: bool
) -> None:
    job = load_job(project / "jobs" / f"{job_name}.toml")
    source = as_other_format(job.input.path) if convert else job.input.path
    out = project / "out" / f"{job_name}-{convert}"
    job = load_job(job.path, Overrides(input=source, output=out, base_url=emulator.base_url))
    summary = run_job(job, RunOptions(api_key=KEY))

    ids = input_ids(source, job.input.id_column or "")
    assert summary.rows_done == len(ids) and summary.rows_failed == 0
    table = read_dir(out)
    assert table.schema == plan_job(job).layout.schema  # the schema's column types, exactly
    assert set(table.column("row_id").to_pylist()) == set(ids)
    assert all(t > 0 for t in table.column("prompt_tokens").to_pylist())
    assert set(table.column("finish_reason").to_pylist()) == {"STOP"}
    assert set(table.column("model_version").to_pylist()) == {job.model.name}
    assert not part_files(out, "errors")  # no failure records
    if job.output.explode:
        per_row = table.group_by("row_id").aggregate(
            [("item_index", "max"), ("item_index", "count")]
        )
        for top, count in zip(
            per_row.column("item_index_max").to_pylist(),
            per_row.column("item_index_count").to_pylist(),
            strict=True,
        ):
            assert top == count - 1  # indexes 0..n-1 for each input row
        assert summary.output_rows == table.num_rows > len(ids)
    else:
        assert table.num_rows == len(ids)
        sentiments = set(table.column("sentiment").to_pylist())
        assert sentiments <= {"positive", "neutral", "negative", "mixed"}
        first = pq.read_table(source).slice(0, 1) if source.suffix == ".parquet" else None
        if first is not None:
            assert table.schema.field("stars").type == first.schema.field("stars").type


def test_requests_reach_the_server_in_the_documented_shape(
    project: Path, emulator: EmulatorThread
) -> None:
    job = load_job(project / "jobs" / "cookie_recipes.toml", Overrides(base_url=emulator.base_url))
    run_job(job, RunOptions(api_key=KEY, limit=2))
    bodies = emulator.emulator.received
    assert len(bodies) == 2
    body = bodies[0]
    assert set(body) == {"contents", "systemInstruction", "generationConfig"}
    assert body["generationConfig"]["responseSchema"] == job.response_schema
    assert "cookie recipes" in body["contents"][0]["parts"][0]["text"]


def test_rerun_skips_rows_already_done(project: Path, emulator: EmulatorThread) -> None:
    job = load_job(project / "jobs" / "review_insights.toml", Overrides(base_url=emulator.base_url))
    first = run_job(job, RunOptions(api_key=KEY, limit=7))
    second = run_job(job, RunOptions(api_key=KEY))
    assert (first.rows_done, second.rows_skipped, second.rows_done) == (7, 7, 13)
    ids = read_dir(job.output.directory).column("row_id").to_pylist()
    assert len(ids) == len(set(ids)) == 20
    assert len(emulator.emulator.received) == 20  # nothing paid for twice


def test_bad_key_stops_the_run_at_once(project: Path, emulator: EmulatorThread) -> None:
    job = load_job(project / "jobs" / "review_insights.toml", Overrides(base_url=emulator.base_url))
    with pytest.raises(FatalApiError, match=r"refused the key in \$GEMINI_API_KEY") as info:
        run_job(job, RunOptions(api_key="wrong-key-987"))
    assert "wrong-key-987" not in str(info.value)
    assert emulator.emulator.counts["status:400"] <= job.limits.concurrency
    assert not part_files(job.output.directory)


def test_unusable_answers_become_failure_records(project: Path) -> None:
    # Two Kindle rows fail on both answer attempts; one Roomba and one Yeti row need a retry.
    script = {"Kindle": ["safety"] * 4, "Roomba": ["invalid"], "Yeti": ["500"]}
    with EmulatorThread(EmulatorConfig(script=script)) as server:
        job = load_job(
            project / "jobs" / "review_insights.toml", Overrides(base_url=server.base_url)
        )
        summary = run_job(job, RunOptions(api_key=KEY))
    assert summary.failures == {"safety": 2}
    assert summary.rows_done == 18 and summary.exit_code == 1
    assert "answer stopped by the API (SAFETY)" in summary.first_errors["safety"]
    errors = read_dir(job.output.directory, "errors")
    assert errors.schema == ERRORS_SCHEMA
    assert errors.column("attempts").to_pylist() == [2, 2]
    results = read_dir(job.output.directory)
    assert set(errors.column("row_id").to_pylist()) == {"rv-1003", "rv-1004"}
    assert not set(errors.column("row_id").to_pylist()) & set(results.column("row_id").to_pylist())
    for product in ("Yeti Rambler 20oz tumbler", "Roomba j7+"):
        rows = results.filter(pa.compute.field("product") == product)
        assert sorted(rows.column("attempts").to_pylist()) == [1, 2]  # retried once


def test_cli_run_with_the_builtin_emulator(project: Path) -> None:
    out = project / "cli-out"
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(project / "jobs" / "cookie_recipes.toml"),
            "--emulator",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "12 rows done, 0 failed" in result.output
    assert read_dir(out).num_rows > 12


def test_cli_run_without_a_key_says_what_to_set(project: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(project / "jobs" / "cookie_recipes.toml")])
    assert result.exit_code == 2
    assert "no API key: set $GEMINI_API_KEY" in result.output
    assert "Traceback" not in result.output


def test_cli_validate_ok_and_show_request(project: Path) -> None:
    result = CliRunner().invoke(
        main, ["validate", str(project / "jobs" / "review_insights.toml"), "--show-request"]
    )
    assert result.exit_code == 0, result.output
    assert "sentiment: string not null" in result.output
    assert "POST https://generativelanguage.googleapis.com/v1beta/models/" in result.output
    assert '"responseMimeType": "application/json"' in result.output


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("[limits]", "[limits]\nburst = 3"), "[limits] unknown key 'burst'"),
        (
            ('"minimum": 0,', '"minimum": 0, "exclusiveMinimum": 0,'),
            "review_insights.schema.json: responseSchema.properties.score: unknown key "
            "'exclusiveMinimum'",
        ),
        (("{{ product }}", "{{ product_name }}"), "no column 'product_name' (used in the prompt)"),
    ],
)
def test_cli_validate_catches_bad_jobs_without_network(
    project: Path, edit: tuple[str, str], expected: str
) -> None:
    job = project / "jobs" / "review_insights.toml"
    target = job if "exclusive" not in edit[1] else project / "jobs" / "review_insights.schema.json"
    target.write_text(target.read_text().replace(*edit))
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2
    assert expected in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_secret_never_leaks(project: Path, emulator: EmulatorThread) -> None:
    job = load_job(project / "jobs" / "review_insights.toml", Overrides(base_url=emulator.base_url))
    run_job(job, RunOptions(api_key=KEY, limit=3))
    for path in job.output.directory.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes()
