from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.errors import JobError
from batchgen.job.spec import DEFAULT_BASE_URL, Overrides, job_from_mapping, load_job
from tests.helpers.jobs import MINIMAL
from tests.helpers.paths import ROOT, write_job


def test_example_jobs_load() -> None:
    cookie = load_job(ROOT / "jobs" / "cookie_recipes.toml")
    assert cookie.input.format == "csv" and cookie.input.id_column == "request_id"
    assert cookie.output.explode and cookie.response_schema["type"] == "ARRAY"
    reviews = load_job(ROOT / "jobs" / "review_insights.toml")
    assert reviews.input.format == "parquet"
    assert reviews.response_schema["properties"]["sentiment"]["enum"][0] == "positive"


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, MINIMAL))
    assert job.input.path == tmp_path / "rows.csv"
    assert job.output.directory == tmp_path / "out" / "job"
    assert job.model.base_url == DEFAULT_BASE_URL
    assert job.model.api_key_env == "GEMINI_API_KEY"
    assert job.model.url == (f"{DEFAULT_BASE_URL}/v1beta/models/gemini-2.5-flash:generateContent")
    assert job.name == "job"
    assert job.limits.max_response_bytes == 32 * 1024 * 1024
    assert job.retry.max_server_delay_seconds == 300


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("colour = 'red'\n", "unknown key 'colour'"),
        ("[limits]\nrequests_per_minut = 5\n", "[limits] unknown key 'requests_per_minut'"),
        ("[limits]\nconcurrency = 0\n", "limits.concurrency must be > 0"),
        ("[limits]\nconcurrency = 'many'\n", "limits.concurrency must be a whole number"),
        ("[output]\nexplode = 'yes'\n", "output.explode must be true or false"),
        ("[generation]\nresponseSchema = {}\n", "generation.responseSchema is set by batchgen"),
        ("[generation]\ntemprature = 1\n", "generation: unknown key 'temprature'"),
        ("[limits]\nmax_response_mb = 0\n", "limits.max_response_mb must be > 0"),
        ("[limits]\nmax_response_mb = 'big'\n", "limits.max_response_mb must be a number"),
        ("[retry]\nmax_server_delay_seconds = -1\n", "retry.max_server_delay_seconds must be > 0"),
        ("limits = 3\n", "limits must be a table ([limits])"),
        ("name = 7\n", "name must be a string, not 7"),
        ("[batch]\npoll_initial_seconds = 'soon'\n", "batch.poll_initial_seconds must be a number"),
        ("[model.extra]\nx = 1\n", "[model] unknown key 'extra'"),
    ],
)
def test_bad_keys_name_the_file_and_key(tmp_path: Path, extra: str, message: str) -> None:
    text = MINIMAL + extra if extra.startswith("[") else extra + MINIMAL
    path = write_job(tmp_path, text)
    with pytest.raises(JobError) as info:
        load_job(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_invalid_toml(tmp_path: Path) -> None:
    path = write_job(tmp_path, "[input\npath = 1\n")
    with pytest.raises(JobError, match=r"job.toml: invalid TOML: .*line 1"):
        load_job(path)


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="no such job file"):
        load_job(tmp_path / "nope.toml")


def test_schema_file_and_its_errors(tmp_path: Path) -> None:
    text = 'schema_file = "s.json"\n' + MINIMAL.replace(
        '[response_schema]\n    type = "STRING"', ""
    )
    (tmp_path / "s.json").write_text('{"type": "object", "properties": {"a": {"type": "string"}}}')
    job = load_job(write_job(tmp_path, text))
    assert job.response_schema["type"] == "OBJECT"
    (tmp_path / "s.json").write_text('{"type": "object",')
    with pytest.raises(JobError, match="schema_file 's.json': invalid JSON"):
        load_job(tmp_path / "job.toml")
    (tmp_path / "s.json").write_text('{"type": "OBJECT", "oneOf": []}')
    with pytest.raises(JobError, match=r"s.json: responseSchema: unknown key 'oneOf'"):
        load_job(tmp_path / "job.toml")
    (tmp_path / "s.json").unlink()
    with pytest.raises(JobError, match="schema_file 's.json': cannot read"):
        load_job(tmp_path / "job.toml")


def test_both_schema_forms_is_an_error(tmp_path: Path) -> None:
    path = write_job(tmp_path, 'schema_file = "s.json"\n' + MINIMAL)
    with pytest.raises(JobError, match="exactly one of .*it gives response_schema and schema_file"):
        load_job(path)


def test_generation_snake_case_becomes_camel_case(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + "[generation]\nmax_output_tokens = 10\nthinking_config = { thinking_budget = 0 }\n"
    )
    job = load_job(write_job(tmp_path, text))
    assert job.generation == {"maxOutputTokens": 10, "thinkingConfig": {"thinkingBudget": 0}}


def test_overrides(tmp_path: Path) -> None:
    job = load_job(
        write_job(tmp_path, MINIMAL),
        Overrides(
            input=Path("other.parquet"),
            output=Path("elsewhere"),
            model="models/gemini-2.5-pro",
            base_url="http://127.0.0.1:9/v1beta/",
        ),
    )
    assert job.input.path == Path("other.parquet") and job.input.format == "parquet"
    assert job.output.directory == Path("elsewhere")
    assert job.model.url == "http://127.0.0.1:9/v1beta/models/gemini-2.5-pro:generateContent"


def test_bad_overrides(tmp_path: Path) -> None:
    path = write_job(tmp_path, MINIMAL)
    with pytest.raises(JobError, match="--input: .*cannot tell the format"):
        load_job(path, Overrides(input=Path("rows.xlsx")))
    with pytest.raises(JobError, match="--base-url: model.base_url must be an http"):
        load_job(path, Overrides(base_url="localhost:8089"))


def test_a_bad_base_url_is_shown_without_its_credentials(tmp_path: Path) -> None:
    path = write_job(tmp_path, MINIMAL)
    with pytest.raises(JobError) as info:
        load_job(path, Overrides(base_url="ftp://user:hunter2@proxy/?key=AIzaSecret"))
    assert "hunter2" not in str(info.value) and "AIzaSecret" not in str(info.value)
    assert "ftp://***@proxy/?key=***" in str(info.value)


def test_print_schema_describes_the_job_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "--print-schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    check = jsonschema.Draft202012Validator(schema)
    shipped = sorted((ROOT / "jobs").glob("*.toml"))
    assert shipped
    for job in shipped:
        raw = tomllib.loads(job.read_text())
        assert not list(check.iter_errors(raw)), job
        load_job(job)  # the schema and the loader agree
    minimal = tomllib.loads(MINIMAL)
    assert check.is_valid(minimal)
    assert not check.is_valid(minimal | {"colour": "red"})
    assert not check.is_valid(minimal | {"limits": {"concurrency": "fast"}})
    assert check.is_valid(minimal | {"limits": {"concurrency": "auto"}})


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('[model]\n    name = "gemini-2.5-flash"\n', "", "missing section [model]"),
        ('name = "gemini-2.5-flash"\n', "", "[model] needs 'name'"),
        (
            'path = "rows.csv"',
            'path = "rows.csv"\ncarry = ["a", 2]',
            "input.carry must be a list of",
        ),
    ],
)
def test_missing_and_malformed_keys_are_one_line(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    with pytest.raises(JobError) as info:
        load_job(write_job(tmp_path, MINIMAL.replace(old, new)))
    assert "\n" not in str(info.value) and message in str(info.value)


def test_the_python_api_dict_uses_the_same_declaration(tmp_path: Path) -> None:
    raw = tomllib.loads(MINIMAL) | {"limits": {"concurrency": 3, "tokens_per_minute": None}}
    job = job_from_mapping(raw, "generate()", tmp_path)
    assert job.limits.concurrency == job.limits.pinned == 3 and job.limits.tokens_per_minute is None
    with pytest.raises(JobError, match=r"^generate\(\): \[limits\] unknown key 'burst'"):
        job_from_mapping(raw | {"limits": {"burst": 3}}, "generate()", tmp_path)
