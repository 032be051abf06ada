"""Hypothesis strategies shared by the tests: random schemas in Gemini's Schema dialect."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_NAMES = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)


def _type(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.capitalize()])


@st.composite
def _leaf(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["STRING", "INTEGER", "NUMBER", "BOOLEAN", "NULL"]))
    node: dict[str, Any] = {"type": draw(_type(kind))}
    if kind == "STRING":
        extra = draw(st.sampled_from(["", "enum", "format", "length"]))
        if extra == "enum":
            node["enum"] = draw(st.lists(_NAMES, min_size=1, max_size=4, unique=True))
        elif extra == "format":
            node["format"] = draw(st.sampled_from(["date", "date-time", "email"]))
        elif extra == "length":
            low = draw(st.integers(0, 30))
            node |= {"minLength": low, "maxLength": low + draw(st.integers(0, 10))}
    elif kind in ("INTEGER", "NUMBER"):
        bounds: list[float] = draw(st.lists(st.integers(-(10**6), 10**6), min_size=2, max_size=2))
        if kind == "NUMBER":
            bounds = [b / 7 for b in bounds]
        lo, hi = sorted(bounds)
        node |= draw(st.sampled_from([{}, {"minimum": lo}, {"maximum": hi},
                                      {"minimum": lo, "maximum": hi}]))  # fmt: skip
    if kind != "NULL" and draw(st.booleans()):
        node["nullable"] = True
    return node


@st.composite
def _container(draw: st.DrawFn, children: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    kind = draw(st.sampled_from(["ARRAY", "OBJECT", "anyOf"]))
    if kind == "anyOf":
        return {"anyOf": draw(st.lists(children, min_size=1, max_size=3))}
    node: dict[str, Any]
    if kind == "ARRAY":
        node = {"type": draw(_type(kind)), "items": draw(children)}
        low = draw(st.integers(0, 3))
        node |= draw(st.sampled_from([{}, {"minItems": low}, {"maxItems": low},
                                      {"minItems": low, "maxItems": low + 2}]))  # fmt: skip
    else:
        props = draw(st.dictionaries(_NAMES, children, max_size=4))
        node = {"type": draw(_type(kind)), "properties": props}
        node["required"] = (
            draw(st.lists(st.sampled_from(list(props)), unique=True)) if props else []
        )
        if draw(st.booleans()) and props:
            node["propertyOrdering"] = draw(st.permutations(list(props)))
    if draw(st.booleans()):
        node["nullable"] = True
    return node


GEMINI_SCHEMAS = st.recursive(_leaf(), _container, max_leaves=12)


# --- JSON Schema (responseJsonSchema) -----------------------------------------------------------

_PATTERNS = ("^[A-Z]{3}$", "^[a-z0-9_]+$", "^INV-[0-9]{4}$", "[0-9]")


@st.composite
def _json_leaf(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["string", "integer", "number", "boolean", "null", "const"]))
    if kind == "const":
        return {"const": draw(st.one_of(_NAMES, st.integers(-5, 5), st.booleans()))}
    node: dict[str, Any] = {"type": kind}
    if kind == "string":
        extra = draw(st.sampled_from(["", "enum", "date", "date-time", "length", "pattern"]))
        if extra == "enum":
            node["enum"] = draw(st.lists(_NAMES, min_size=1, max_size=4, unique=True))
        elif extra in ("date", "date-time"):
            node["format"] = extra
        elif extra == "length":
            low = draw(st.integers(0, 20))
            node |= {"minLength": low, "maxLength": low + draw(st.integers(0, 10))}
        elif extra == "pattern":
            node["pattern"] = draw(st.sampled_from(_PATTERNS))
    elif kind in ("integer", "number"):
        lo, hi = sorted(draw(st.lists(st.integers(-(10**6), 10**6), min_size=2, max_size=2)))
        node |= draw(st.sampled_from([{}, {"minimum": lo}, {"maximum": hi},
                                      {"minimum": lo, "maximum": hi}]))  # fmt: skip
    if kind not in ("null", "const") and draw(st.booleans()):
        node["type"] = [kind, "null"]  # the JSON Schema way to say nullable
    return node


@st.composite
def _json_container(draw: st.DrawFn, children: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    kind = draw(st.sampled_from(["array", "object", "map", "tuple", "nullable", "union"]))
    if kind == "array":
        return {"type": "array", "items": draw(children), "maxItems": draw(st.integers(0, 3))}
    if kind == "map":
        return {"type": "object", "additionalProperties": draw(children)}
    if kind == "tuple":
        prefix = draw(st.lists(children, min_size=1, max_size=3))
        return {"type": "array", "prefixItems": prefix, "items": False}
    if kind == "nullable":
        return {"anyOf": [draw(children), {"type": "null"}]}
    if kind == "union":  # objects with distinct field names: the union's struct of all fields
        left, right = draw(children), draw(children)
        one = {"type": "object", "properties": {"a": left}, "required": ["a"]}
        other = {"type": "object", "properties": {"b": right}, "required": ["b"]}
        return {"anyOf": [one, other]}
    props = draw(st.dictionaries(_NAMES, children, min_size=1, max_size=4))
    required = draw(st.lists(st.sampled_from(list(props)), unique=True))
    return {"type": "object", "properties": props, "required": required}


@st.composite
def _with_defs(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    """The same schema, sometimes with its root moved into $defs behind a $ref."""
    if draw(st.booleans()):
        return {"$defs": {"Root": schema}, "$ref": "#/$defs/Root"}
    return schema


JSON_SCHEMAS = st.recursive(_json_leaf(), _json_container, max_leaves=10).flatmap(_with_defs)
