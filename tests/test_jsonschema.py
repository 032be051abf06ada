"""The JSON Schema dialect: mapping to Arrow, validation, shaping, telling the dialects apart."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from typing import Any

import jsonschema
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.emulator.fakedata import fake_invalid_value, fake_value
from batchgen.errors import JobError
from batchgen.gemini.answers import AnswerError, structured_value
from batchgen.job.json_schema import map_json_schema
from batchgen.job.response_schema import GEMINI, JSON_SCHEMA, ResponseSchema, resolve_schema
from batchgen.records import Answer, Usage
from tests.helpers.strategies import JSON_SCHEMAS

TS = pa.timestamp("us", tz="UTC")


def arrow(schema: dict[str, Any]) -> pa.DataType:
    return map_json_schema(schema, "t.json").node.arrow()


def field(schema: dict[str, Any]) -> pa.Field:
    return resolve_schema({"$schema": "x", **schema}).answer_field()


def obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required)}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, pa.string()),
        ({"type": "integer"}, pa.int64()),
        ({"type": "number"}, pa.float64()),
        ({"type": "boolean"}, pa.bool_()),
        ({"type": "string", "format": "date"}, pa.date32()),
        ({"type": "string", "format": "date-time"}, TS),
        ({"type": "string", "format": "email"}, pa.string()),
        ({"type": ["integer", "null"]}, pa.int64()),
        ({"anyOf": [{"type": "number"}, {"type": "null"}]}, pa.float64()),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, pa.float64()),
        ({"enum": ["a", "b", None]}, pa.string()),
        ({"enum": [1, 2, 3]}, pa.int64()),
        ({"const": True}, pa.bool_()),
        ({"type": "array", "items": {"type": "integer"}}, pa.list_(pa.int64())),
        ({"type": "object", "additionalProperties": {"type": "integer"}},
         pa.map_(pa.string(), pa.int64())),
        ({"type": "array", "prefixItems": [{"type": "number"}, {"type": "string"}], "minItems": 2},
         pa.struct([pa.field("item_0", pa.float64(), False),
                    pa.field("item_1", pa.string(), False)])),
        ({"type": "array", "items": [{"type": "integer"}]},  # draft 7's tuple spelling
         pa.struct([pa.field("item_0", pa.int64())])),
    ],
)  # fmt: skip
def test_types_map_to_arrow(schema: dict[str, Any], expected: pa.DataType) -> None:
    assert arrow(schema) == expected


def test_required_and_null_decide_nullability() -> None:
    schema = obj(
        {
            "a": {"type": "string"},
            "b": {"type": ["string", "null"]},
            "c": {"type": "string"},
            "d": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
        required=("a", "b", "d"),
    )
    struct = arrow(schema)
    assert [(f.name, f.nullable) for f in struct] == [
        ("a", False),
        ("b", True),
        ("c", True),
        ("d", True),
    ]


def test_refs_are_followed_and_recursion_becomes_json_text() -> None:
    schema = {
        "$defs": {
            "Node": obj(
                {
                    "name": {"type": "string"},
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                ("name",),
            )
        },
        "definitions": {"When": {"type": "string", "format": "date"}},
        **obj({"root": {"$ref": "#/$defs/Node"}, "on": {"$ref": "#/definitions/When"}}),
    }
    mapped = map_json_schema(schema, "t.json")
    root = mapped.node.arrow().field("root").type
    assert root.field("name").type == pa.string()
    assert root.field("kids").type == pa.list_(pa.string())  # each child kept as JSON text
    assert mapped.node.arrow().field("on").type == pa.date32()
    assert mapped.recursive == (".root.kids[]",)
    described = ResponseSchema(JSON_SCHEMA, schema, "response_json_schema").describe(2)
    assert described == (
        "JSON Schema (response_json_schema, 2 columns, 1 recursive field as JSON string)"
    )


def test_a_union_of_objects_is_a_struct_of_all_their_fields() -> None:
    cat = obj({"kind": {"const": "cat"}, "meows": {"type": "integer"}}, ("kind", "meows"))
    dog = obj(
        {"kind": {"const": "dog"}, "barks": {"type": "number"}, "meows": {"type": "string"}},
        ("kind",),
    )
    union = arrow({"oneOf": [cat, dog]})
    assert union == pa.struct(
        [("kind", pa.string()), ("meows", pa.string()), ("barks", pa.float64())]
    )  # meows: integer in one branch, string in the other -> JSON text
    assert all(f.nullable for f in union)


def test_unions_without_a_common_type_are_json_text() -> None:
    mapped = map_json_schema(obj({"v": {"anyOf": [{"type": "string"}, obj({})]}}), "t.json")
    assert mapped.node.arrow().field("v").type == pa.string()
    assert mapped.untyped[-1] == ".v"
    assert mapped.leaf_counts() == (0, 1)


def test_all_of_is_merged() -> None:
    schema = {
        "$defs": {"Base": obj({"id": {"type": "string"}}, ("id",))},
        "allOf": [{"$ref": "#/$defs/Base"}, obj({"n": {"type": "integer"}}, ("n",))],
    }
    assert arrow(schema) == pa.struct(
        [pa.field("id", pa.string(), False), pa.field("n", pa.int64(), False)]
    )


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"$ref": "https://example.com/s.json"}, "only references inside the schema"),
        ({"$ref": "#/$defs/Missing"}, "no such definition"),
        ({"type": "decimal"}, "unknown type 'decimal'"),
    ],
)
def test_bad_json_schemas_name_the_place(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(JobError, match=message):
        map_json_schema(obj({"x": schema}), "t.json")


def test_an_invalid_json_schema_is_a_job_error() -> None:
    with pytest.raises(JobError, match=r"\.properties\.x\.minimum: not a valid JSON Schema"):
        resolve_schema({"$schema": "x", **obj({"x": {"type": "integer", "minimum": "zero"}})})


def _answer(text: str) -> Answer:
    return Answer(text, "STOP", None, Usage(), "m", "r", True)


CONSTRAINED = obj(
    {
        "n": {"type": "integer", "minimum": 1, "maximum": 5},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "name": {"type": "string", "minLength": 2, "maxLength": 4},
        "kind": {"enum": ["a", "b"]},
        "v": {"const": 1},
        "tuple": {"type": "array", "prefixItems": [{"type": "integer"}], "items": False},
    },
    ("n", "code"),
) | {"additionalProperties": False}


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ('{"n": 0, "code": "ABC"}', "answer.n: 0 is less than the minimum of 1"),
        ('{"n": 6, "code": "ABC"}', "answer.n: 6 is greater than the maximum of 5"),
        ('{"n": 1, "code": "abc"}', "answer.code: 'abc' does not match"),
        ('{"n": 1, "code": "ABC", "name": "abcde"}', "answer.name: 'abcde' is too long"),
        ('{"n": 1, "code": "ABC", "name": "a"}', "answer.name: 'a' is too short"),
        ('{"n": 1, "code": "ABC", "kind": "c"}', "answer.kind: 'c' is not one of"),
        ('{"n": 1, "code": "ABC", "v": 2}', "answer.v: 1 was expected"),
        ('{"code": "ABC"}', "answer: 'n' is a required property"),
        ('{"n": 1, "code": "ABC", "x": 1}', "Additional properties are not allowed"),
        ('{"n": 1, "code": "ABC", "tuple": [1, 2]}', "answer.tuple: Expected at most 1 item"),
    ],
)
def test_answers_are_checked_against_the_users_constraints(answer: str, problem: str) -> None:
    validator = resolve_schema({"$schema": "x", **CONSTRAINED}).validator()
    with pytest.raises(AnswerError, match="the answer breaks the schema") as info:
        structured_value(_answer(answer), validator)
    assert problem in info.value.message
    assert info.value.category == "schema"


def test_dates_are_parsed_and_a_bad_date_fails_the_row() -> None:
    schema = obj(
        {
            "d": {"type": "string", "format": "date"},
            "t": {"type": "array", "items": {"type": "string", "format": "date-time"}},
        }
    )
    validator = resolve_schema({"$schema": "x", **schema}).validator()
    value = structured_value(
        _answer('{"d": "2026-12-31", "t": ["2027-01-01T10:00:00+02:00", "2027-01-02T00:00:00"]}'),
        validator,
    )
    assert value == {
        "d": date(2026, 12, 31),
        "t": [datetime(2027, 1, 1, 8, tzinfo=UTC), datetime(2027, 1, 2, tzinfo=UTC)],
    }
    with pytest.raises(AnswerError, match=r"answer\.d: '2026-02-30' is not a date") as info:
        structured_value(_answer('{"d": "2026-02-30"}'), validator)
    assert info.value.category == "schema"


def test_tuples_and_maps_are_shaped_for_their_columns() -> None:
    schema = obj(
        {
            "p": {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string", "format": "date"}],
            },
            "m": {"additionalProperties": {"type": "string", "format": "date"}},
        }
    )
    rs = resolve_schema({"$schema": "x", **schema})
    shaped = rs.validator().shape({"p": [1.0, "2026-01-02"], "m": {"k": "2026-01-03"}})
    assert shaped == {"p": {"item_0": 1, "item_1": date(2026, 1, 2)}, "m": {"k": date(2026, 1, 3)}}
    column = pa.array([shaped], type=rs.answer_field().type)
    assert column.to_pylist()[0]["m"] == [("k", date(2026, 1, 3))]


@pytest.mark.parametrize(
    ("schema", "dialect"),
    [
        ({"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}, GEMINI),
        ({"type": "object", "properties": {"a": {"type": "string", "nullable": True}}}, GEMINI),
        ({"type": "object", "properties": {"a": {"type": "string"}}}, JSON_SCHEMA),
        ({"type": "object", "properties": {"a": {"type": ["string", "null"]}}}, JSON_SCHEMA),
        ({"anyOf": [{"enum": ["a"]}, {"type": "null"}]}, JSON_SCHEMA),
        ({"$defs": {}, "enum": ["a"]}, JSON_SCHEMA),
        ({"type": "array", "items": {"type": "string"}, "min_items": 1}, GEMINI),
    ],
)
def test_resolve_schema_tells_the_dialect(schema: dict[str, Any], dialect: str) -> None:
    resolved = resolve_schema(schema)
    assert resolved.dialect == dialect
    assert resolved.wire_key == ("responseSchema" if dialect == GEMINI else "responseJsonSchema")


def test_resolve_schema_takes_a_pydantic_model_and_refuses_other_things() -> None:
    from tests.data.pydantic_models import Invoice

    resolved = resolve_schema(Invoice)
    assert resolved.dialect == JSON_SCHEMA and resolved.wire == Invoice.model_json_schema()
    assert resolved.answer_field().type.field("issued").type == pa.date32()
    with pytest.raises(JobError, match="a pydantic model class, not int"):
        resolve_schema(3)


@settings(max_examples=100, deadline=None)
@given(JSON_SCHEMAS, st.integers(0, 2**32))
def test_any_conforming_answer_validates_and_fits_its_column(
    schema: dict[str, Any], seed: int
) -> None:
    resolved = resolve_schema({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})
    validator = resolved.validator()
    value = fake_value(resolved.wire, random.Random(seed))
    assert validator.problem(value) is None
    column = pa.array([validator.shape(value)], type=resolved.answer_field().type)
    assert len(column) == 1 and column.type == resolved.answer_field().type


@settings(max_examples=60, deadline=None)
@given(JSON_SCHEMAS, st.integers(0, 2**32))
def test_a_nonconforming_answer_is_caught(schema: dict[str, Any], seed: int) -> None:
    resolved = resolve_schema({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})
    value = fake_invalid_value(resolved.wire, random.Random(seed))
    reference = jsonschema.Draft202012Validator(resolved.wire)
    # the fast path (fastjsonschema on a draft-7 spelling) never passes what jsonschema refuses
    assert (resolved.validator().problem(value) is None) == reference.is_valid(value)
