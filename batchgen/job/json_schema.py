"""The JSON Schema dialect (``responseJsonSchema``): mapped to Arrow columns and shaped for them.

The schema is sent to the API as the user wrote it; this module only decides the Parquet types
and converts each (already validated) answer to fit them. The choices, in the order they apply:

* ``$ref`` to ``#``, ``#/$defs/…`` or ``#/definitions/…`` is followed. A reference back into a
  schema that is already being expanded (a recursive tree: comments with replies, org charts)
  has no finite Arrow type: that field is stored as **JSON text** and named in ``validate``.
  Only local references are followed; any other is a job error.
* ``allOf`` is merged (properties and ``required`` united), as pydantic and zod emit it.
* Nullability: a ``type`` list with ``"null"``, an ``anyOf``/``oneOf`` branch ``{"type":
  "null"}``, ``null`` in ``enum``, ``const: null`` or ``nullable: true`` make the value
  nullable. A property not in ``required`` is nullable; a required one that admits no null is
  a non-nullable Arrow field.
* ``anyOf``/``oneOf`` and type lists are unions: the null branch is dropped and the rest merged.
  Equal types merge to themselves; integer with number gives float64; strings with formatted
  strings give string. **Unions of objects** (discriminated unions included) give one struct
  with every branch's fields, all nullable — the discriminator is an ordinary string column —
  because that keeps every field queryable; a field whose branches disagree on its type is
  JSON text. Unions with no common type (string or object, say) are JSON text.
* ``enum``/``const`` take the type of their values (string enums are string columns: Parquet
  already dictionary-encodes repeated strings, and a plain string type lets parts written by
  different runs concatenate); mixed-type enums are JSON text.
* ``type: object`` with ``properties`` is a struct, its fields in ``propertyOrdering`` order (as
  in the Gemini dialect) and then as declared; keys an answer adds are dropped. With
  no properties and ``additionalProperties`` a schema, ``map<string, T>``; otherwise (free-form
  objects) JSON text.
* ``type: array``: ``items`` gives ``list<T>``; ``prefixItems`` (or draft-7 ``items`` as a list)
  gives a struct with fields ``item_0``, ``item_1``… (nullable past ``minItems``), unless
  further items are allowed by an ``items`` schema, then JSON text. With no ``items`` at all,
  items past the named ones (which JSON Schema allows, and models do not send) are dropped.
* ``string`` is string, except ``format: date`` → date32 and ``format: date-time`` →
  timestamp(us, UTC): the answer's text is parsed (RFC 3339; a time without offset is read as
  UTC) and a string that does not parse makes the row a ``schema`` failure.
* ``integer`` → int64, ``number`` → float64, ``boolean`` → bool, ``null`` → null; a schema with no
  type infers it from ``properties``/``items``; an empty schema (any value) is JSON text.
* List items and map values are always nullable fields, as in the Gemini dialect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from batchgen.errors import JobError

__all__ = ["JsonSchemaMap", "Node", "ShapeError", "map_json_schema"]

_SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "json": pa.string(),
    "null": pa.null(),
}
_TYPES = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool"}
_FORMATS = {"date": "date", "date-time": "timestamp"}
_TEXTS = frozenset({"string", "date", "timestamp"})
_LEAVES = frozenset({"string", "int64", "float64", "bool", "date", "timestamp"})

Shaper = Callable[[Any], Any]


class ShapeError(ValueError):
    """A value that passed the schema but cannot take its column type (a bad date)."""


@dataclass(frozen=True)
class Node:
    """One value's column type. ``fields`` for struct/tuple, ``item`` for list/map values."""

    kind: str
    nullable: bool = False
    fields: tuple[tuple[str, Node], ...] = ()
    item: Node | None = None

    def arrow(self) -> pa.DataType:
        """The Arrow type of values of this node."""
        if self.kind in _SCALARS:
            return _SCALARS[self.kind]
        if self.kind in ("struct", "tuple"):
            return pa.struct([pa.field(n, c.arrow(), nullable=c.nullable) for n, c in self.fields])
        assert self.item is not None
        if self.kind == "list":
            return pa.list_(pa.field("item", self.item.arrow()))
        return pa.map_(pa.string(), self.item.arrow())

    def children(self) -> list[Node]:
        return [c for _, c in self.fields] + ([self.item] if self.item is not None else [])


@dataclass(frozen=True)
class JsonSchemaMap:
    """The mapping of one JSON Schema: its root node and the fields kept as JSON text, and why."""

    node: Node
    recursive: tuple[str, ...] = ()  # paths stored as JSON text because a $ref recurses there
    untyped: tuple[str, ...] = ()  # paths stored as JSON text for any other reason

    def leaf_counts(self) -> tuple[int, int]:
        """(typed leaves, JSON-text leaves) over the whole tree."""
        typed = json_text = 0
        todo = [self.node]
        while todo:
            node = todo.pop()
            typed += node.kind in _LEAVES
            json_text += node.kind == "json"
            todo.extend(node.children())
        return typed, json_text

    def shaper(self) -> Shaper | None:
        """A converter from a conforming answer to the Arrow type, or None when none is needed."""
        return _shaper(self.node, "answer")


def map_json_schema(schema: Any, where: str) -> JsonSchemaMap:
    """Map a JSON Schema to Arrow (rules in the module docstring); JobError names ``where``."""
    if not isinstance(schema, Mapping):
        raise JobError(f"{where}: the JSON Schema must be an object, not {type(schema).__name__}")
    mapper = _Mapper(schema, where)
    node = mapper.map(schema, "", ())
    return JsonSchemaMap(node, tuple(mapper.recursive), tuple(mapper.untyped))


@dataclass
class _Mapper:
    root: Mapping[str, Any]
    where: str
    recursive: list[str] = field(default_factory=list)
    untyped: list[str] = field(default_factory=list)

    def map(self, node: Any, path: str, stack: tuple[str, ...]) -> Node:
        if isinstance(node, bool):  # `true` admits anything; `false` nothing (never answered)
            return self._json(path, nullable=True)
        if not isinstance(node, Mapping):
            raise JobError(f"{self.where}: {path or '(root)'}: a schema must be an object")
        if isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if ref in stack:
                self.recursive.append(path or "(root)")
                return Node("json", nullable=True)
            return self.map(self._lookup(ref, path), path, (*stack, ref))
        if isinstance(node.get("allOf"), list):
            return self.map(self._all_of(node, path), path, stack)
        nullable = node.get("nullable") is True
        result = self._unioned(node, path, stack)
        if result is None:
            result = self._typed(node, path, stack)
        return replace(result, nullable=True) if nullable else result

    def _unioned(self, node: Mapping[str, Any], path: str, stack: tuple[str, ...]) -> Node | None:
        branches = node.get("anyOf") or node.get("oneOf")
        if isinstance(branches, list) and branches:
            return self._merge([self.map(b, path, stack) for b in branches], path)
        if "const" in node:
            return self._values([node["const"]], path)
        if isinstance(node.get("enum"), list) and node["enum"]:
            return self._values(node["enum"], path)
        kind = node.get("type")
        if isinstance(kind, list):
            rest = {k: v for k, v in node.items() if k != "type"}
            return self._merge([self.map({**rest, "type": t}, path, stack) for t in kind], path)
        return None

    def _typed(self, node: Mapping[str, Any], path: str, stack: tuple[str, ...]) -> Node:
        kind = node.get("type")
        if kind is None:
            if "properties" in node or "additionalProperties" in node:
                kind = "object"
            elif "items" in node or "prefixItems" in node:
                kind = "array"
        if kind == "object":
            return self._object(node, path, stack)
        if kind == "array":
            return self._array(node, path, stack)
        if kind == "null":
            return Node("null", nullable=True)
        if kind == "string":
            return Node(_FORMATS.get(str(node.get("format", "")), "string"))
        if kind in _TYPES:
            return Node(_TYPES[kind])
        if kind is not None:
            raise JobError(f"{self.where}: {path or '(root)'}.type: unknown type {kind!r}")
        return self._json(path)

    def _object(self, node: Mapping[str, Any], path: str, stack: tuple[str, ...]) -> Node:
        props = node.get("properties")
        extra = node.get("additionalProperties")
        if isinstance(props, Mapping) and props:
            required = set(node.get("required") or ())
            fields = []
            ordering = [n for n in node.get("propertyOrdering") or () if n in props]
            for name in [*ordering, *(n for n in props if n not in ordering)]:
                child = self.map(props[name], f"{path}.{name}", stack)
                fields.append(
                    (str(name), replace(child, nullable=child.nullable or name not in required))
                )
            return Node("struct", fields=tuple(fields))
        if isinstance(extra, Mapping) and extra:
            value = self.map(extra, f"{path}.*", stack)
            return Node("map", item=replace(value, nullable=True))
        return self._json(path)

    def _array(self, node: Mapping[str, Any], path: str, stack: tuple[str, ...]) -> Node:
        items = node.get("items")
        prefix = node.get("prefixItems")
        if isinstance(items, list):  # draft 7 tuples: items is the list, additionalItems the rest
            prefix, items = items, node.get("additionalItems", False)
        if isinstance(prefix, list) and prefix:
            if items is not None and items is not False:
                return self._json(path)  # further items of another schema: no fixed struct
            low = int(node.get("minItems") or 0)
            fields = []
            for i, sub in enumerate(prefix):
                child = self.map(sub, f"{path}[{i}]", stack)
                fields.append((f"item_{i}", replace(child, nullable=child.nullable or i >= low)))
            return Node("tuple", fields=tuple(fields))
        if isinstance(items, Mapping) and items:
            return Node("list", item=replace(self.map(items, f"{path}[]", stack), nullable=True))
        return self._json(path)

    def _values(self, values: Sequence[Any], path: str) -> Node:
        """enum/const: the type their values share (null makes it nullable)."""
        nodes = [_value_node(v) for v in values]
        return self._merge(nodes, path)

    def _merge(self, nodes: Sequence[Node], path: str) -> Node:
        nullable = any(n.nullable for n in nodes)
        real = [n for n in nodes if n.kind != "null"]
        if not real:
            return Node("null", nullable=True)
        merged = _combine(real)
        if merged is None:
            return self._json(path, nullable)
        return replace(merged, nullable=nullable or merged.nullable)

    def _json(self, path: str, nullable: bool = False) -> Node:
        self.untyped.append(path or "(root)")
        return Node("json", nullable=nullable)

    def _lookup(self, ref: str, path: str) -> Any:
        if not ref.startswith("#"):
            raise JobError(
                f"{self.where}: {path or '(root)'}.$ref {ref!r}: only references inside the "
                "schema (#/$defs/…) are supported; copy the referenced schema into $defs"
            )
        target: Any = self.root
        for part in ref[1:].split("/"):
            if part:
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, Mapping) else None
        if target is None:
            raise JobError(f"{self.where}: {path or '(root)'}.$ref {ref!r}: no such definition")
        return target

    def _all_of(self, node: Mapping[str, Any], path: str) -> dict[str, Any]:
        """allOf merged into one schema: properties and required united, other keys first wins."""
        merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
        for part in node["allOf"]:
            while isinstance(part, Mapping) and isinstance(part.get("$ref"), str):
                part = self._lookup(part["$ref"], path)
            if not isinstance(part, Mapping):
                continue
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged


def _value_node(value: Any) -> Node:
    if value is None:
        return Node("null", nullable=True)
    if isinstance(value, bool):
        return Node("bool")
    if isinstance(value, int):
        return Node("int64")
    if isinstance(value, float):
        return Node("float64")
    return Node("string") if isinstance(value, str) else Node("json")


def _combine(nodes: Sequence[Node]) -> Node | None:
    """One node for several non-null ones, or None when they share no type."""
    bare = [replace(n, nullable=False) for n in nodes]
    kinds = {n.kind for n in bare}
    if all(n == bare[0] for n in bare):
        return bare[0]
    if kinds <= {"int64", "float64"}:
        return Node("float64")
    if kinds <= _TEXTS:
        return Node("string")
    if kinds == {"struct"}:
        return _combine_structs(bare)
    if kinds in ({"list"}, {"map"}):
        items = [n.item for n in bare if n.item is not None]
        inner = _combine(items)
        return None if inner is None else Node(bare[0].kind, item=replace(inner, nullable=True))
    return None


def _combine_structs(nodes: Sequence[Node]) -> Node:
    """Every branch's fields, all nullable; a field the branches type differently is JSON text."""
    by_name: dict[str, list[Node]] = {}
    for node in nodes:
        for name, child in node.fields:
            by_name.setdefault(name, []).append(child)
    fields = []
    for name, children in by_name.items():
        real = [c for c in children if c.kind != "null"]
        merged = _combine(real) if real else Node("null")
        fields.append((name, replace(merged or Node("json"), nullable=True)))
    return Node("struct", fields=tuple(fields))


# --- shaping answers ----------------------------------------------------------------------


def _shaper(node: Node, path: str) -> Shaper | None:
    """Build a converter only where one is needed, so most answers pass through untouched."""
    kind = node.kind
    if kind == "json":
        return lambda v: None if v is None else json.dumps(v, ensure_ascii=False)
    if kind == "int64":  # JSON allows 3.0 for an integer; Arrow's int64 does not
        return lambda v: int(v) if isinstance(v, float) else v
    if kind == "date":
        return lambda v: None if v is None else _date(v, path)
    if kind == "timestamp":
        return lambda v: None if v is None else _timestamp(v, path)
    if kind in ("list", "map") and node.item is not None:
        inner = _shaper(node.item, f"{path}[]")
        if inner is None:
            return None
        if kind == "list":
            return lambda v: None if v is None else [inner(x) for x in v]
        return lambda v: None if v is None else {k: inner(x) for k, x in v.items()}
    if kind == "tuple":
        return _tuple_shaper(node, path)
    if kind == "struct":
        return _struct_shaper(node, path)
    return None


def _struct_shaper(node: Node, path: str) -> Shaper | None:
    shapers = {n: s for n, c in node.fields if (s := _shaper(c, f"{path}.{n}")) is not None}
    if not shapers:
        return None

    def shape(v: Any) -> Any:
        if v is None:
            return None
        return {k: (shapers[k](x) if k in shapers and x is not None else x) for k, x in v.items()}

    return shape


def _tuple_shaper(node: Node, path: str) -> Shaper:
    shapers = [_shaper(c, f"{path}[{i}]") for i, (_, c) in enumerate(node.fields)]

    def shape(v: Any) -> Any:
        if v is None:
            return None
        return {
            f"item_{i}": (s(x) if s is not None and x is not None else x)
            for i, (s, x) in enumerate(zip(shapers, v, strict=False))
        }

    return shape


def _date(value: Any, path: str) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ShapeError(f"{path}: {value!r} is not a date (YYYY-MM-DD)") from None


def _timestamp(value: Any, path: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ShapeError(f"{path}: {value!r} is not a date-time (RFC 3339)") from None
    # RFC 3339 requires an offset; a model that leaves it out almost always means UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
