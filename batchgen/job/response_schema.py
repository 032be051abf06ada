"""The job's response schema in either dialect, and pydantic models turned into one.

A job sends exactly one schema: Gemini's ``responseSchema`` (the OpenAPI subset, checked and
canonicalized by :mod:`batchgen.job.schema`) or a JSON Schema as ``responseJsonSchema`` (sent as
written, mapped by :mod:`batchgen.job.json_schema`). A pydantic model is its
``model_json_schema()`` in the JSON Schema dialect. :class:`ResponseSchema` gives the rest of
batchgen one face for both: the request key, the answer's Arrow field and the validator.

:func:`resolve_schema` tells the dialect of a plain dict by this rule, first match wins:

1. a JSON-Schema-only keyword anywhere (``$schema``, ``$defs``, ``definitions``, ``$ref``,
   ``$id``, ``const``, ``oneOf``, ``allOf``, ``prefixItems``, ``additionalProperties``,
   ``patternProperties``, ``exclusiveMinimum``/``exclusiveMaximum``), a ``type`` list, or an
   ``anyOf`` branch ``{"type": "null"}`` → JSON Schema;
2. an upper-case type name (``"OBJECT"``), ``nullable``, or a snake_case keyword
   (``property_ordering``, ``min_items``…) → Gemini;
3. lower-case type names only → JSON Schema (the two dialects read such a schema alike);
4. otherwise Gemini.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa

from batchgen.errors import JobError
from batchgen.job.json_schema import JsonSchemaMap, map_json_schema
from batchgen.job.schema import AnswerValidator, arrow_field, normalize_schema

__all__ = ["GEMINI", "JSON_SCHEMA", "ResponseSchema", "load_pydantic_schema", "resolve_schema"]

GEMINI = "gemini"
JSON_SCHEMA = "json_schema"
WIRE_KEYS = {GEMINI: "responseSchema", JSON_SCHEMA: "responseJsonSchema"}
_JSON_ONLY = frozenset(
    {"$schema", "$defs", "definitions", "$ref", "$id", "const", "oneOf", "allOf", "prefixItems",
     "additionalProperties", "patternProperties", "exclusiveMinimum", "exclusiveMaximum"}
)  # fmt: skip
_SNAKE_KEYS = frozenset(
    {"property_ordering", "min_items", "max_items", "min_length", "max_length", "any_of",
     "min_properties", "max_properties"}
)  # fmt: skip


@dataclass(frozen=True)
class ResponseSchema:
    """One response schema: its dialect, the JSON value sent, and where it came from."""

    dialect: str
    wire: dict[str, Any]
    source: str  # the job key or object it came from, for messages

    @property
    def wire_key(self) -> str:
        """The generationConfig field that carries it."""
        return WIRE_KEYS[self.dialect]

    @cached_property
    def mapping(self) -> JsonSchemaMap | None:
        """The JSON Schema dialect's mapping to Arrow (None for the Gemini dialect)."""
        if self.dialect != JSON_SCHEMA:
            return None
        return map_json_schema(self.wire, self.source)

    def answer_field(self) -> pa.Field:
        """The whole answer as one Arrow field (type and whether it may be null)."""
        if self.mapping is None:
            return arrow_field("result", self.wire, required=not self.wire.get("nullable"))
        node = self.mapping.node
        return pa.field("result", node.arrow(), nullable=node.nullable or node.kind == "null")

    def validator(self) -> AnswerValidator:
        """The answer validator (and shaper) for this schema."""
        if self.mapping is None:
            return AnswerValidator(self.wire)
        return AnswerValidator.for_json_schema(self.wire, self.mapping.shaper())

    def describe(self, columns: int) -> str:
        """One line for ``validate``: dialect, source, columns, fields kept as JSON text."""
        if self.mapping is None:
            return f"Gemini Schema ({self.source}, {columns} columns)"
        recursive = len(dict.fromkeys(self.mapping.recursive))
        untyped = len(dict.fromkeys(self.mapping.untyped))
        notes = [f"{columns} columns"]
        if recursive:
            notes.append(f"{recursive} recursive field{'s' * (recursive > 1)} as JSON string")
        if untyped:
            notes.append(f"{untyped} untyped field{'s' * (untyped > 1)} as JSON string")
        return f"JSON Schema ({self.source}, {', '.join(notes)})"

    def json_text_fields(self) -> list[str]:
        """Paths kept as JSON text, recursive ones marked, for ``validate``."""
        if self.mapping is None:
            return []
        marked = [f"{p} (recursive)" for p in self.mapping.recursive]
        return list(dict.fromkeys(marked + list(self.mapping.untyped)))


def gemini_schema(raw: Any, where: str, source: str) -> ResponseSchema:
    """A Gemini-dialect schema, checked and in canonical form."""
    return ResponseSchema(GEMINI, normalize_schema(raw, where), source)


def json_schema(raw: Any, where: str, source: str) -> ResponseSchema:
    """A JSON Schema, checked as a schema and mapped (both raise JobError naming ``where``)."""
    if not isinstance(raw, Mapping):
        raise JobError(f"{where}: {source} must be a table/object, not {type(raw).__name__}")
    kind = jsonschema.validators.validator_for(raw, default=jsonschema.Draft202012Validator)
    try:
        kind.check_schema(raw)
    except jsonschema.SchemaError as exc:
        at = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        raise JobError(f"{where}: {source}{at}: not a valid JSON Schema: {exc.message}") from None
    map_json_schema(raw, where)  # now, so that its errors surface at load time
    return ResponseSchema(JSON_SCHEMA, dict(raw), source)


def resolve_schema(obj: Any) -> ResponseSchema:
    """The response schema for a dict in either dialect or a pydantic model class.

    Args:
        obj: a :class:`ResponseSchema`; a pydantic ``BaseModel`` subclass; or a dict, whose
            dialect is told by the rule in this module's docstring.

    Raises:
        JobError: the schema is invalid in its dialect, or ``obj`` is none of these.
    """
    if isinstance(obj, ResponseSchema):
        return obj
    if isinstance(obj, type) and callable(getattr(obj, "model_json_schema", None)):
        name = f"{obj.__module__}.{obj.__qualname__}"
        return json_schema(_model_schema(obj, name), name, f"pydantic {name}")
    if isinstance(obj, Mapping):
        if looks_like_json_schema(obj):
            return json_schema(obj, "schema", "JSON Schema")
        return gemini_schema(obj, "schema", "Gemini Schema")
    raise JobError(
        f"schema: expected a dict (Gemini Schema or JSON Schema) or a pydantic model class, "
        f"not {type(obj).__name__}"
    )


def looks_like_json_schema(schema: Mapping[str, Any]) -> bool:
    """The dialect rule of this module's docstring: True for JSON Schema."""
    lower = False
    for node in _nodes(schema):
        keys = set(node)
        kind = node.get("type")
        branches = node.get("anyOf")
        null_branch = isinstance(branches, list) and {"type": "null"} in branches
        if keys & _JSON_ONLY or isinstance(kind, list) or null_branch:
            return True
        if keys & _SNAKE_KEYS or "nullable" in keys or (isinstance(kind, str) and kind.isupper()):
            return False
        lower = lower or (isinstance(kind, str) and kind.islower())
    return lower


def _nodes(schema: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every schema object inside ``schema`` (through properties, items, anyOf…), root first."""
    todo: list[Any] = [schema]
    while todo:
        node = todo.pop(0)
        if not isinstance(node, Mapping):
            continue
        yield node
        for key, value in node.items():
            if key in ("properties", "$defs", "definitions", "patternProperties"):
                todo.extend(value.values() if isinstance(value, Mapping) else ())
            elif key in ("items", "additionalProperties", "not"):
                todo.append(value)
            elif key in ("anyOf", "oneOf", "allOf", "prefixItems", "any_of"):
                todo.extend(value if isinstance(value, list) else ())


def load_pydantic_schema(target: str, folder: Path, where: str) -> dict[str, Any]:
    """``module:Model`` imported (from sys.path, then ``folder``) as its JSON Schema."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise JobError(f"{where}: schema {target!r}: expected 'package.module:Model'")
    module = _import(module_name, folder, f"{where}: schema {target!r}")
    model: Any = module
    for part in attr.split("."):
        model = getattr(model, part, None)
        if model is None:
            raise JobError(f"{where}: schema {target!r}: module {module_name} has no {attr!r}")
    if not (isinstance(model, type) and callable(getattr(model, "model_json_schema", None))):
        raise JobError(
            f"{where}: schema {target!r} is not a pydantic model class (a BaseModel subclass)"
        )
    return _model_schema(model, f"{where}: schema {target!r}")


def _import(name: str, folder: Path, where: str) -> Any:
    """Import ``name``; the job file's folder is searched after sys.path."""
    added = str(folder.resolve())
    sys.path.append(added)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == "pydantic":
            raise JobError(
                f"{where}: pydantic is not installed: pip install 'batchgen[pydantic]'"
            ) from None
        raise JobError(
            f"{where}: cannot import {name} ({exc}); looked on sys.path and in {folder}"
        ) from None
    except Exception as exc:  # the user's module failed while importing: say how, not where
        raise JobError(f"{where}: importing {name} failed: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(added)


def _model_schema(model: Any, where: str) -> dict[str, Any]:
    make: Callable[[], Any] = model.model_json_schema
    try:
        schema = make()
    except Exception as exc:  # pydantic's own errors for types with no JSON Schema
        raise JobError(f"{where}: no JSON Schema for this model: {exc}") from None
    if not isinstance(schema, dict):
        raise JobError(f"{where}: model_json_schema() did not return an object")
    return schema
