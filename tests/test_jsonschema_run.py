"""JSON Schema and pydantic jobs end to end: job file → emulator on 127.0.0.1 → typed Parquet.

The corpus in tests/data/json_schemas/ and the models in tests/data/pydantic_models.py each run a
few rows through ``run_job``; the columns must have the types the mapping promises.
"""

from __future__ import annotations

import json
import shutil
import types
import typing
import urllib.error
import urllib.request
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import JobError
from batchgen.job.response_schema import JSON_SCHEMA, resolve_schema
from batchgen.job.spec import Overrides, load_job
from batchgen.plan import plan_job
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.jobfile import fingerprint, fingerprint_parts
from batchgen.store.layout import part_files
from tests.data import pydantic_models
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.paths import write_job

KEY = "test-key-123456"
DATA = Path(__file__).resolve().parent / "data"
CORPUS = sorted((DATA / "json_schemas").glob("*.json"))
EXPECTED = json.loads((DATA / "json_schema_columns.json").read_text())  # reviewed by hand
ROWS = 3
JOB = """
name = "{name}"
{schema_line}

[input]
path = "rows.csv"
id_column = "id"

[model]
name = "gemini-2.5-flash"

[prompt]
user = "Fill the schema for {{{{ text }}}}."

[output]
directory = "out"
"""


@pytest.fixture(scope="module")
def emulator(module_emulator_factory: StartEmulator) -> EmulatorThread:
    return module_emulator_factory(EmulatorConfig(api_keys=frozenset({KEY}), record=True))


def make_job(folder: Path, schema_line: str, name: str = "corpus") -> Path:
    with (folder / "rows.csv").open("w") as f:
        f.write("id,text\n")
        f.writelines(f"r{i},{name} example {i}\n" for i in range(ROWS))
    return write_job(folder, JOB.format(name=name, schema_line=schema_line))


def run(job_path: Path, url: str, **overrides: Any) -> tuple[pa.Table, pa.Schema]:
    job = load_job(job_path, Overrides(base_url=url, **overrides))
    summary = run_job(job, RunOptions(api_key=KEY))
    assert (summary.rows_done, summary.rows_failed) == (ROWS, 0), summary.first_errors
    table = pa.concat_tables(pq.read_table(p) for p in part_files(job.output.directory))
    layout = plan_job(job).layout.schema
    assert table.schema == layout  # Parquet keeps the types (it names list items "element")
    return table, layout


def described(schema: pa.Schema, names: list[str]) -> dict[str, str]:
    return {
        n: f"{schema.field(n).type}{'' if schema.field(n).nullable else ' not null'}" for n in names
    }


def test_the_corpus_is_big_enough_and_mostly_typed() -> None:
    typed = json_text = 0
    for path in CORPUS:
        mapping = resolve_schema(json.loads(path.read_text())).mapping
        assert mapping is not None, path.name
        counts = mapping.leaf_counts()
        typed, json_text = typed + counts[0], json_text + counts[1]
    for model in pydantic_models.MODELS:
        mapping = resolve_schema(model).mapping
        assert mapping is not None
        counts = mapping.leaf_counts()
        typed, json_text = typed + counts[0], json_text + counts[1]
    share = typed / (typed + json_text)
    print(f"typed leaves: {typed}/{typed + json_text} = {share:.1%}")
    assert len(CORPUS) >= 30 and len(pydantic_models.MODELS) >= 20
    assert share >= 0.95


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_each_corpus_schema_round_trips_through_the_emulator(
    tmp_path: Path, emulator: EmulatorThread, path: Path
) -> None:
    shutil.copy(path, tmp_path / "schema.json")
    job_path = make_job(tmp_path, 'json_schema_file = "schema.json"', path.stem)
    table, schema = run(job_path, emulator.base_url)
    expected = list(EXPECTED[path.stem].items())  # the columns in order, with their types
    assert list(described(schema, schema.names[1 : 1 + len(expected)]).items()) == expected
    assert table.num_rows == ROWS
    sent = emulator.emulator.received[-1]["generationConfig"]
    assert sent["responseJsonSchema"] == json.loads(path.read_text())
    assert "responseSchema" not in sent


def test_an_array_schema_explodes_into_typed_item_rows(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    shutil.copy(DATA / "json_schemas" / "translation_batch.json", tmp_path / "schema.json")
    job_path = make_job(tmp_path, 'json_schema_file = "schema.json"')
    job_path.write_text(job_path.read_text() + "explode = true\n")
    table, schema = run(job_path, emulator.base_url)
    assert table.num_rows >= ROWS  # at least one item per row (minItems 1)
    assert schema.field("target_lang").type == pa.string()
    assert schema.field("item_index").type == pa.int32()


def expected_type(annotation: Any, seen: tuple[type, ...] = ()) -> pa.DataType | None:
    """The Arrow type a Python annotation should give, worked out from the annotation alone;
    None where the mapping makes a choice this oracle does not model (unions of models)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return expected_type(args[0], seen)
    if origin in (typing.Union, types.UnionType):
        real = [a for a in args if a is not type(None)]
        return expected_type(real[0], seen) if len(real) == 1 else None
    if origin is typing.Literal:
        return {str: pa.string(), int: pa.int64(), bool: pa.bool_()}[type(args[0])]
    if origin is list:
        inner = expected_type(args[0], seen)
        return None if inner is None else pa.list_(inner)
    if origin is dict:
        inner = expected_type(args[1], seen)
        return None if inner is None else pa.map_(pa.string(), inner)
    if origin is tuple:
        fields = [pa.field(f"item_{i}", expected_type(a, seen), False) for i, a in enumerate(args)]
        return pa.struct(fields)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_type(annotation, seen)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return pa.string() if issubclass(annotation, str) else pa.int64()
    simple = {
        int: pa.int64(),
        float: pa.float64(),
        str: pa.string(),
        bool: pa.bool_(),
        date: pa.date32(),
        datetime: pa.timestamp("us", tz="UTC"),
    }
    return simple[annotation]


def _model_type(model: type[BaseModel], seen: tuple[type, ...]) -> pa.DataType | None:
    if model in seen:
        return pa.string()  # a model inside itself: kept as JSON text
    fields = []
    for name, info in model.model_fields.items():
        kind = expected_type(info.annotation, (*seen, model))
        if kind is None:
            return None
        fields.append(pa.field(name, kind, not info.is_required() or _optional(info.annotation)))
    return pa.struct(fields)


def _optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


@pytest.mark.parametrize("model", pydantic_models.MODELS, ids=lambda m: m.__name__)
def test_each_pydantic_model_round_trips_with_its_fields_as_columns(
    tmp_path: Path, emulator: EmulatorThread, model: type[BaseModel]
) -> None:
    shutil.copy(DATA / "pydantic_models.py", tmp_path / "pydantic_models.py")
    job_path = make_job(tmp_path, f'schema = "pydantic_models:{model.__name__}"', "models")
    table, schema = run(job_path, emulator.base_url)
    assert schema.names[1 : 1 + len(model.model_fields)] == list(model.model_fields)
    for name, info in model.model_fields.items():
        expected = expected_type(info.annotation, (model,))
        if expected is not None:
            assert schema.field(name).type == expected, name
    for row in table.to_pylist():  # each stored answer is still a valid instance of the model
        answer = {n: _unmap(row[n], schema.field(n).type) for n in model.model_fields}
        assert model.model_validate({n: v for n, v in answer.items() if v is not None})


def _unmap(value: Any, kind: pa.DataType) -> Any:
    """Undo what Arrow holds differently: tuples as item_N structs, maps as key/value pairs,
    JSON-text columns as text, and a field left out as null."""
    if value is None:
        return None
    if pa.types.is_map(kind):
        return {k: _unmap(v, kind.item_type) for k, v in value}
    if pa.types.is_list(kind):
        return [_unmap(v, kind.value_type) for v in value]
    if pa.types.is_struct(kind):
        fields = {f.name: _unmap(value[f.name], f.type) for f in kind}
        if all(name.startswith("item_") for name in fields):
            return list(fields.values())
        return {name: v for name, v in fields.items() if v is not None}
    if pa.types.is_string(kind) and value[:1] == "{":
        return json.loads(value)
    return value


@pytest.mark.parametrize(
    ("schema_lines", "message"),
    [
        ('schema_file = "s.json"\nschema = "m:M"', "it gives schema_file and schema"),
        ("", "it gives none"),
        ('schema = "nowhere_at_all:Model"', "cannot import nowhere_at_all .*looked on sys.path"),
        ('schema = "models_here:Missing"', "module models_here has no 'Missing'"),
        ('schema = "models_here:NOT_A_MODEL"', "is not a pydantic model class"),
        ('schema = "models_broken:M"', "importing models_broken failed: ZeroDivisionError"),
        ('schema = "models_here"', "expected 'package.module:Model'"),
        (
            'response_json_schema = { type = "object", properties = { n = { type = 3 } } }',
            r"response_json_schema\.properties\.n\.type: not a valid JSON Schema",
        ),
    ],
)
def test_schema_keys_are_checked_with_the_file_and_key_named(
    tmp_path: Path, schema_lines: str, message: str
) -> None:
    (tmp_path / "models_here.py").write_text("NOT_A_MODEL = 3\n")
    (tmp_path / "models_broken.py").write_text("1 / 0\n")
    job_path = make_job(tmp_path, schema_lines)
    with pytest.raises(JobError, match=message) as info:
        load_job(job_path)
    assert str(info.value).startswith(str(job_path))


def test_response_json_schema_in_generation_is_pointed_to_the_right_key(tmp_path: Path) -> None:
    job_path = make_job(tmp_path, 'schema = "pydantic_models:Person"')
    shutil.copy(DATA / "pydantic_models.py", tmp_path / "pydantic_models.py")
    job_path.write_text(job_path.read_text() + "[generation]\nresponseJsonSchema = {}\n")
    expected = r"generation\.responseJsonSchema: put a JSON Schema in \[response_json_schema\] or"
    with pytest.raises(JobError, match=expected):
        load_job(job_path)


def test_the_fingerprint_follows_the_schema_sent(tmp_path: Path) -> None:
    base = '[response_json_schema]\ntype = "object"\nproperties = { n = { type = "integer" } }'
    prints = []
    for text in (
        base,
        base.replace("integer", "number"),
        base.replace("response_json_schema", "response_schema"),
    ):
        folder = tmp_path / str(len(prints))
        folder.mkdir()
        prints.append(fingerprint(fingerprint_parts(load_job(make_job(folder, text)))))
    assert len(set(prints)) == 3


def test_validate_names_the_dialect_and_the_json_text_fields(tmp_path: Path) -> None:
    shutil.copy(DATA / "json_schemas" / "nested_comments.json", tmp_path / "schema.json")
    job_path = make_job(tmp_path, 'json_schema_file = "schema.json"')
    result = CliRunner().invoke(main, ["validate", str(job_path)])
    assert result.exit_code == 0, result.output
    assert (
        "schema  JSON Schema (json_schema_file, 2 columns, 1 recursive field as JSON string)"
        in result.output
    )
    assert "as JSON text: .comments[].replies[] (recursive)" in result.output
    assert "comments: list<item: struct<author: string not null" in result.output


def test_validate_names_a_pydantic_model(tmp_path: Path) -> None:
    shutil.copy(DATA / "pydantic_models.py", tmp_path / "pydantic_models.py")
    job_path = make_job(tmp_path, 'schema = "pydantic_models:Invoice"')
    result = CliRunner().invoke(main, ["validate", str(job_path)])
    assert result.exit_code == 0, result.output
    assert "schema  JSON Schema (schema = 'pydantic_models:Invoice', 7 columns)" in result.output
    assert load_job(job_path).schema_dialect == JSON_SCHEMA


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", "x-goog-api-key": KEY}
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_emulator_refuses_both_schemas_and_answers_a_json_schema(
    emulator: EmulatorThread,
) -> None:
    url = f"{emulator.base_url}/v1beta/models/gemini-2.5-flash:generateContent"
    schema = json.loads((DATA / "json_schemas" / "word_counts.json").read_text())
    contents = [{"role": "user", "parts": [{"text": "count words"}]}]
    both = {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "STRING"},
        "responseJsonSchema": schema,
    }
    status, body = _post(url, {"contents": contents, "generationConfig": both})
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert "response_schema and response_json_schema cannot both be set" in body["error"]["message"]
    config = {"responseMimeType": "application/json", "responseJsonSchema": schema}
    status, body = _post(url, {"contents": contents, "generationConfig": config})
    answer = json.loads(body["candidates"][0]["content"]["parts"][0]["text"])
    assert status == 200 and resolve_schema(schema).validator().problem(answer) is None
    assert answer["counts"] and all(isinstance(v, int) for v in answer["counts"].values())
