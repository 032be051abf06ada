from __future__ import annotations

import json
import random
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.emulator.fakedata import fake_value
from batchgen.errors import JobError
from batchgen.job.schema import (
    AnswerValidator,
    arrow_field,
    arrow_type,
    needs_json_text,
    normalize_schema,
    to_json_schema,
)
from tests.helpers.strategies import GEMINI_SCHEMAS


def norm(raw: dict[str, Any]) -> dict[str, Any]:
    return normalize_schema(raw, "job.toml")


@pytest.mark.parametrize(
    ("gemini", "arrow"),
    [
        ("STRING", pa.string()),
        ("INTEGER", pa.int64()),
        ("NUMBER", pa.float64()),
        ("BOOLEAN", pa.bool_()),
        ("NULL", pa.null()),
        ("string", pa.string()),  # type names are case-insensitive
        ("Integer", pa.int64()),
    ],
)
def test_scalar_types_map_to_arrow(gemini: str, arrow: pa.DataType) -> None:
    assert arrow_type(norm({"type": gemini})) == arrow


def test_enum_is_a_string_column() -> None:
    assert arrow_type(norm({"type": "STRING", "enum": ["a", "b"]})) == pa.string()


def test_nested_object_and_array() -> None:
    schema = norm(
        {
            "type": "OBJECT",
            "properties": {
                "b": {"type": "ARRAY", "items": {"type": "NUMBER"}},
                "a": {
                    "type": "OBJECT",
                    "properties": {"x": {"type": "INTEGER"}, "y": {"type": "BOOLEAN"}},
                    "required": ["x"],
                },
            },
            "propertyOrdering": ["a", "b"],
            "required": ["a"],
        }
    )
    assert arrow_type(schema) == pa.struct(
        [
            pa.field(
                "a",
                pa.struct([pa.field("x", pa.int64(), nullable=False), pa.field("y", pa.bool_())]),
                nullable=False,
            ),
            pa.field("b", pa.list_(pa.field("item", pa.float64()))),
        ]
    )


def test_required_fields_are_not_null_unless_nullable() -> None:
    assert not arrow_field("a", norm({"type": "STRING"}), required=True).nullable
    assert arrow_field("a", norm({"type": "STRING", "nullable": True}), required=True).nullable
    assert arrow_field("a", norm({"type": "STRING"}), required=False).nullable


def test_any_of_same_type_keeps_it_and_mixed_types_become_json_text() -> None:
    same = norm({"anyOf": [{"type": "INTEGER"}, {"type": "NULL"}]})
    mixed = norm({"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]})
    assert arrow_type(same) == pa.int64()
    assert arrow_type(mixed) == pa.string()
    assert AnswerValidator(mixed).shape(4) == "4"


def test_object_without_properties_is_json_text() -> None:
    schema = norm({"type": "OBJECT"})
    assert arrow_type(schema) == pa.string()
    assert AnswerValidator(schema).shape({"k": [1]}) == '{"k": [1]}'


def test_snake_case_keys_and_lower_case_types_are_normalized() -> None:
    schema = norm(
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "property_ordering": ["n"],
            },
            "max_items": 3,
        }
    )
    assert schema == {
        "type": "ARRAY",
        "maxItems": 3,
        "items": {
            "type": "OBJECT",
            "properties": {"n": {"type": "INTEGER"}},
            "propertyOrdering": ["n"],
        },
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "OBJECT", "additionalProperties": False}, "unknown key 'additionalProperties'"),
        ({"type": ["STRING", "NULL"]}, "a list of types is not allowed"),
        ({"type": "TEXT"}, "unknown type 'TEXT'"),
        ({"description": "no type"}, "missing 'type'"),
        ({"type": "ARRAY"}, "an ARRAY needs 'items'"),
        ({"type": "STRING", "enum": [1, 2]}, "enum values must be strings"),
        ({"type": "INTEGER", "enum": ["1"]}, "enum needs type STRING"),
        (
            {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["b"]},
            "'b' is not in properties",
        ),
        ({"type": "ARRAY", "items": {"type": "STRING", "$schema": "x"}}, "responseSchema.items"),
    ],
)
def test_bad_schemas_are_refused_with_the_path(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(JobError, match="job.toml: responseSchema") as info:
        norm(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


REVIEW = {
    "type": "OBJECT",
    "properties": {
        "sentiment": {"type": "STRING", "enum": ["positive", "negative"]},
        "score": {"type": "NUMBER", "minimum": 0, "maximum": 1},
        "count": {"type": "INTEGER"},
        "note": {"type": "STRING", "nullable": True},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 1, "maxItems": 2},
    },
    "required": ["sentiment", "score", "count", "tags"],
}


def test_json_schema_translation() -> None:
    assert to_json_schema(REVIEW)["properties"]["note"] == {"type": ["string", "null"]}
    assert to_json_schema({"type": "STRING", "enum": ["a"], "nullable": True}) == {
        "type": ["string", "null"],
        "enum": ["a", None],
    }


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"sentiment": "positive", "score": 0.5, "count": 1, "tags": ["a"]}, None),
        ({"sentiment": "meh", "score": 0.5, "count": 1, "tags": ["a"]}, "answer.sentiment"),
        ({"sentiment": "positive", "score": 1.5, "count": 1, "tags": ["a"]}, "answer.score"),
        ({"sentiment": "positive", "score": 0.5, "count": "1", "tags": ["a"]}, "answer.count"),
        ({"sentiment": "positive", "score": 0.5, "count": 1, "tags": []}, "answer.tags"),
        ({"sentiment": "positive", "score": 0.5, "count": 1, "tags": ["a", "b", "c"]}, "tags"),
        ({"sentiment": "positive", "score": 0.5, "tags": ["a"]}, "'count' is a required"),
        ({"sentiment": "positive", "score": 0.5, "count": 1, "tags": ["a"], "note": None}, None),
        ({"sentiment": "positive", "score": 0.5, "count": 1, "tags": [None]}, "answer.tags[0]"),
    ],
)
def test_validator_finds_the_first_problem(answer: dict[str, Any], problem: str | None) -> None:
    found = AnswerValidator(norm(REVIEW)).problem(answer)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_integers_written_as_floats_become_ints_for_arrow() -> None:
    validator = AnswerValidator(norm(REVIEW))
    value = {"sentiment": "positive", "score": 1, "count": 3.0, "tags": ["a"]}
    assert validator.problem(value) is None
    shaped = validator.shape(value)
    assert shaped["count"] == 3 and isinstance(shaped["count"], int)
    pa.array([shaped], type=arrow_type(norm(REVIEW)))  # converts without error


@settings(max_examples=150, deadline=None)
@given(schema=GEMINI_SCHEMAS, seed=st.integers(0, 2**32))
def test_any_conforming_answer_validates_and_fits_its_arrow_type(
    schema: dict[str, Any], seed: int
) -> None:
    """schema → answer → validation → Arrow column holds for every schema the API accepts."""
    canonical = normalize_schema(schema, "job.toml")
    validator = AnswerValidator(canonical)
    value = fake_value(schema, random.Random(seed))
    assert validator.problem(value) is None
    column = pa.array([validator.shape(value), None], type=arrow_type(canonical))
    assert column.type == arrow_type(canonical)
    assert _read_back(canonical, column[0].as_py()) == _as_written(canonical, value)


def _as_written(schema: dict[str, Any], value: Any) -> Any:
    """The answer as its columns hold it: absent properties as null, ints as ints."""
    if value is None or needs_json_text(schema):
        return value
    schema = _branch(schema)
    if schema.get("type") == "ARRAY":
        return [_as_written(schema["items"], v) for v in value]
    if schema.get("type") == "OBJECT":
        return {p: _as_written(schema["properties"][p], value.get(p)) for p in schema["properties"]}
    if arrow_type(schema) == pa.int64():
        return int(value)
    return value


def _read_back(schema: dict[str, Any], value: Any) -> Any:
    """A value read from Arrow, with JSON-text columns decoded."""
    if value is None:
        return None
    if needs_json_text(schema):
        return json.loads(value)
    schema = _branch(schema)
    if schema.get("type") == "ARRAY":
        return [_read_back(schema["items"], v) for v in value]
    if schema.get("type") == "OBJECT":
        return {p: _read_back(schema["properties"][p], value[p]) for p in schema["properties"]}
    return value


def _branch(schema: dict[str, Any]) -> dict[str, Any]:
    """An anyOf with one Arrow type is stored as its first non-null branch."""
    while "anyOf" in schema:
        branches = schema["anyOf"]
        schema = next((b for b in branches if arrow_type(b) != pa.null()), branches[0])
    return schema


@settings(max_examples=150, deadline=None)
@given(schema=GEMINI_SCHEMAS, seed=st.integers(0, 2**32))
def test_the_fast_validator_agrees_with_jsonschema(schema: dict[str, Any], seed: int) -> None:
    """The compiled fast path never accepts what jsonschema rejects, nor the other way."""
    import jsonschema

    from batchgen.emulator.fakedata import fake_invalid_value

    reference = jsonschema.Draft202012Validator(to_json_schema(schema))
    validator = AnswerValidator(normalize_schema(schema, "job.toml"))
    for value in (fake_value(schema, random.Random(seed)),
                  fake_invalid_value(schema, random.Random(seed))):  # fmt: skip
        assert (validator.problem(value) is None) == reference.is_valid(value)
