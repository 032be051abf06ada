"""The response schema: Gemini's Schema dialect checked, mapped to Arrow and to JSON Schema.

One shared ``responseSchema`` drives three things:

* the request (sent in canonical form: camelCase keys, upper-case type names);
* the typed Parquet columns (:func:`arrow_type`);
* the validation of every answer (:class:`AnswerValidator`, JSON Schema draft 2020-12).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema
import jsonschema
import pyarrow as pa

from batchgen.errors import JobError

TYPES = ("STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL")

# Constraints that mean the same in JSON Schema, copied as they are by to_json_schema.
_CONSTRAINTS = (
    "required",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
)
# The fields of `message Schema` in content.proto; anything else is a 400 from the API.
SCHEMA_KEYS = frozenset(
    {"type", "format", "title", "description", "nullable", "enum", "items", "properties",
     "example", "anyOf", "propertyOrdering", "default", *_CONSTRAINTS}
)  # fmt: skip

_JSON_TYPES = {
    "STRING": "string",
    "NUMBER": "number",
    "INTEGER": "integer",
    "BOOLEAN": "boolean",
    "ARRAY": "array",
    "OBJECT": "object",
    "NULL": "null",
}
_ARROW_SCALARS: dict[str, pa.DataType] = {
    "STRING": pa.string(),
    "NUMBER": pa.float64(),
    "INTEGER": pa.int64(),
    "BOOLEAN": pa.bool_(),
    "NULL": pa.null(),
}
_SNAKE = re.compile(r"_([a-z])")


def _camel(key: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), key)


def normalize_schema(raw: Any, where: str) -> dict[str, Any]:
    """Check a Gemini Schema and return it in canonical form.

    Keys may be camelCase or snake_case and type names any case, as the API accepts; the result
    uses camelCase and upper-case types. ``where`` names the source (``file: key``) in errors.
    """
    return _normalize(raw, where, "responseSchema")


def _normalize(raw: Any, where: str, path: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise JobError(f"{where}: {path} must be a table/object, not {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = _camel(str(key))
        if name not in SCHEMA_KEYS:
            raise JobError(
                f"{where}: {path}: unknown key {key!r} (not a field of Gemini's Schema; "
                "allowed: " + ", ".join(sorted(SCHEMA_KEYS)) + ")"
            )
        out[name] = value
    if "type" in out or "anyOf" not in out:  # a bare anyOf needs no type of its own
        out["type"] = _type_name(out.get("type"), where, path)
    if "items" in out:
        out["items"] = _normalize(out["items"], where, f"{path}.items")
    if "properties" in out:
        props = out["properties"]
        if not isinstance(props, Mapping):
            raise JobError(f"{where}: {path}.properties must be a table/object")
        out["properties"] = {
            str(k): _normalize(v, where, f"{path}.properties.{k}") for k, v in props.items()
        }
    if "anyOf" in out:
        branches = out["anyOf"]
        if not isinstance(branches, list) or not branches:
            raise JobError(f"{where}: {path}.anyOf must be a non-empty list of schemas")
        out["anyOf"] = [_normalize(b, where, f"{path}.anyOf[{i}]") for i, b in enumerate(branches)]
    _check_shape(out, where, path)
    return out


def _type_name(value: Any, where: str, path: str) -> str:
    if isinstance(value, list):
        raise JobError(
            f"{where}: {path}.type: a list of types is not allowed in responseSchema; "
            "use one type with nullable = true"
        )
    if not isinstance(value, str):
        raise JobError(f"{where}: {path}: missing 'type' (one of {', '.join(TYPES)})")
    name = value.upper()
    if name not in TYPES:
        raise JobError(f"{where}: {path}.type: unknown type {value!r} (one of {', '.join(TYPES)})")
    return name


def _check_shape(node: dict[str, Any], where: str, path: str) -> None:
    kind = node.get("type")
    if kind == "ARRAY" and "items" not in node:
        raise JobError(f"{where}: {path}: an ARRAY needs 'items'")
    if "enum" in node:
        enum = node["enum"]
        if kind != "STRING" or not isinstance(enum, list) or not enum:
            raise JobError(f"{where}: {path}.enum: enum needs type STRING and a non-empty list")
        if not all(isinstance(e, str) for e in enum):
            raise JobError(f"{where}: {path}.enum: enum values must be strings")
    props = node.get("properties", {})
    for listed in ("required", "propertyOrdering"):
        names = node.get(listed, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise JobError(f"{where}: {path}.{listed} must be a list of property names")
        unknown = [n for n in names if n not in props]
        if unknown:
            raise JobError(f"{where}: {path}.{listed}: {unknown[0]!r} is not in properties")
    for bound in ("minItems", "maxItems", "minLength", "maxLength", "minProperties"):
        if bound in node and not (isinstance(node[bound], int) and node[bound] >= 0):
            raise JobError(f"{where}: {path}.{bound} must be a whole number >= 0")


def property_names(schema: Mapping[str, Any]) -> list[str]:
    """Properties of an OBJECT schema in output order: propertyOrdering first, then declared."""
    props = schema.get("properties", {})
    ordered = [p for p in schema.get("propertyOrdering", []) if p in props]
    return ordered + [p for p in props if p not in ordered]


def arrow_type(schema: Mapping[str, Any]) -> pa.DataType:
    """The Arrow type for values of a (normalized) schema.

    An OBJECT without properties, and an anyOf whose branches differ, have no single Arrow
    type: they are kept as their JSON text in a string column.
    """
    kind = schema.get("type")
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if arrow_type(b) != pa.null()]
        types = {arrow_type(b) for b in branches}
        # one type, and no JSON text inside, so that every branch shapes its values alike
        if len(types) == 1 and not any(_holds_json_text(b) for b in branches):
            return types.pop()
        return pa.string() if branches else pa.null()
    if kind in _ARROW_SCALARS:
        return _ARROW_SCALARS[kind]
    if kind == "ARRAY":
        return pa.list_(arrow_field("item", schema["items"]))
    if not schema.get("properties"):
        return pa.string()
    return pa.struct(
        [
            arrow_field(name, schema["properties"][name], name in schema.get("required", ()))
            for name in property_names(schema)
        ]
    )


def arrow_field(name: str, schema: Mapping[str, Any], required: bool = False) -> pa.Field:
    """An Arrow field; non-nullable only when the schema requires it and does not allow null."""
    nullable = not required or bool(schema.get("nullable")) or "anyOf" in schema
    kind = arrow_type(schema)
    return pa.field(name, kind, nullable=nullable or kind == pa.null())


def needs_json_text(schema: Mapping[str, Any]) -> bool:
    """Whether values of this schema are stored as JSON text (see :func:`arrow_type`)."""
    return arrow_type(schema) == pa.string() and not _text(schema)


def _holds_json_text(schema: Mapping[str, Any]) -> bool:
    """Whether this schema, or any schema inside it, is stored as JSON text."""
    inner = [*schema.get("anyOf", []), *schema.get("properties", {}).values()]
    if "items" in schema:
        inner.append(schema["items"])
    return needs_json_text(schema) or any(_holds_json_text(s) for s in inner)


def _text(schema: Mapping[str, Any]) -> bool:
    """A STRING, or an anyOf whose branches are all text (or null), however nested."""
    if "anyOf" in schema:
        return all(b.get("type") == "NULL" or _text(b) for b in schema["anyOf"])
    return bool(schema.get("type") == "STRING")


def to_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Translate a Gemini Schema (any accepted spelling) to JSON Schema draft 2020-12."""
    return _to_json(_normalize(schema, "schema", "responseSchema"))


def _to_json(node: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "anyOf" in node:
        branches = [_to_json(b) for b in node["anyOf"]]
        out["anyOf"] = branches + ([{"type": "null"}] if node.get("nullable") else [])
    else:
        kind = _JSON_TYPES[node["type"]]
        out["type"] = [kind, "null"] if node.get("nullable") and kind != "null" else kind
    if "enum" in node:
        out["enum"] = list(node["enum"]) + ([None] if node.get("nullable") else [])
    if "items" in node:
        out["items"] = _to_json(node["items"])
    if "properties" in node:
        out["properties"] = {k: _to_json(v) for k, v in node["properties"].items()}
    for key in _CONSTRAINTS:
        if key in node:
            out[key] = node[key]
    return out


class AnswerValidator:
    """Checks a parsed answer against the schema and shapes it for the Arrow columns."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        json_schema = to_json_schema(schema)
        jsonschema.Draft202012Validator.check_schema(json_schema)
        self._setup(json_schema, _shaper_for(schema), fast=json_schema)

    @classmethod
    def for_json_schema(
        cls, json_schema: Mapping[str, Any], shaper: Callable[[Any], Any] | None
    ) -> AnswerValidator:
        """A validator for a user's own JSON Schema (any draft it names; 2020-12 by default).

        The schema must be checked already (``response_schema.json_schema`` does, at load time):
        checking against the 2020-12 metaschema costs some 20 ms.
        """
        self = cls.__new__(cls)
        self.schema = json_schema
        self._setup(json_schema, shaper, fast=_fast_schema(json_schema))
        return self

    def _setup(
        self,
        json_schema: Mapping[str, Any],
        shaper: Callable[[Any], Any] | None,
        fast: dict[str, Any] | None,
    ) -> None:
        kind = jsonschema.validators.validator_for(
            json_schema, default=jsonschema.Draft202012Validator
        )
        self._validator = kind(json_schema)
        # fastjsonschema compiles the schema to Python: ~25x faster on the answers that conform
        # (nearly all); jsonschema stays the authority and explains the ones that do not.
        self._fast: Callable[[Any], Any] | None = None
        if fast is not None:
            try:
                self._fast = fastjsonschema.compile(fast)
            except fastjsonschema.JsonSchemaDefinitionException:
                pass  # jsonschema alone: slower, as exact
        self._shaper = shaper

    def problem(self, value: Any) -> str | None:
        """The first way ``value`` breaks the schema, as one line, or None when it conforms."""
        if self._fast is not None:
            try:
                self._fast(value)
                return None
            except fastjsonschema.JsonSchemaException:
                pass
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is None:
            return None
        where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.path)
        return f"answer{where}: {error.message}"

    def shape(self, value: Any) -> Any:
        """Make a conforming value fit its Arrow type (integers as int, JSON text columns).

        Raises ValueError (a ``ShapeError``) when a value cannot take its type, as a date that
        does not parse.
        """
        return self._shaper(value) if self._shaper is not None else value


# JSON Schema keywords fastjsonschema (drafts 4-7) does not know: it would pass what they forbid.
# prefixItems is not among them: it has a draft-7 spelling (items as a list, additionalItems).
_NEWER_KEYWORDS = frozenset(
    {"unevaluatedProperties", "unevaluatedItems", "dependentRequired", "dependentSchemas",
     "$dynamicRef", "$recursiveRef", "$anchor", "minContains", "maxContains"}
)  # fmt: skip
# Keys beside a $ref that constrain nothing; draft 7 ignores a $ref's siblings, 2020-12 does not.
_ANNOTATIONS = frozenset({"$ref", "description", "title", "default", "examples", "$comment"})


_VALUES = frozenset({"enum", "const", "default", "examples", "required"})  # data, not schemas
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties"})


class _NotForFastError(Exception):
    """The schema says something fastjsonschema would not check."""


def _for_fast(node: Any) -> Any:
    """The schema in the draft-7 spelling that fastjsonschema checks exactly (or raise)."""
    if isinstance(node, list):
        return [_for_fast(n) for n in node]
    if not isinstance(node, Mapping):
        return node
    if _NEWER_KEYWORDS & node.keys() or ("$ref" in node and not node.keys() <= _ANNOTATIONS):
        raise _NotForFastError
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _VALUES:
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {name: _for_fast(sub) for name, sub in value.items()}
        else:
            out[key] = _for_fast(value)
    if "prefixItems" in out and not isinstance(out.get("items"), list):
        rest = out.pop("items", None)
        out["items"] = out.pop("prefixItems")
        if rest is not None:
            out["additionalItems"] = rest
    return out


def _fast_schema(json_schema: Mapping[str, Any]) -> dict[str, Any] | None:
    """What fastjsonschema compiles for this schema, or None when it cannot check it exactly."""
    try:
        fast = dict(_for_fast(json_schema))
    except _NotForFastError:
        return None
    return {**fast, "$schema": "http://json-schema.org/draft-07/schema#"}


_Shaper = Callable[[Any], Any] | None


def _shaper_for(schema: Mapping[str, Any]) -> _Shaper:
    """Build a converter only where one is needed, so most answers pass through untouched."""
    if needs_json_text(schema):
        return lambda v: None if v is None else json.dumps(v, ensure_ascii=False)
    if "anyOf" in schema:  # one Arrow type for all branches: shape as the first real branch
        branches = [b for b in schema["anyOf"] if arrow_type(b) != pa.null()]
        return _shaper_for(branches[0]) if branches else None
    kind = schema.get("type")
    if kind == "INTEGER":  # JSON allows 3.0 for an integer; Arrow's int64 does not
        return lambda v: int(v) if isinstance(v, float) else v
    if kind == "ARRAY":
        return _list_shaper(_shaper_for(schema["items"]))
    if kind == "OBJECT":
        props = schema.get("properties", {})
        shapers = {k: s for k, s in ((k, _shaper_for(p)) for k, p in props.items()) if s}
        return _object_shaper(shapers) if shapers else None
    return None


def _list_shaper(inner: _Shaper) -> _Shaper:
    if inner is None:
        return None
    return lambda v: None if v is None else [inner(x) for x in v]


def _object_shaper(shapers: dict[str, Callable[[Any], Any]]) -> _Shaper:
    def shape(v: Any) -> Any:
        if v is None:
            return None
        return {k: (shapers[k](x) if k in shapers else x) for k, x in v.items()}

    return shape
