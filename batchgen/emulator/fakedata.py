"""Fake values that conform to a response schema, for the emulator.

Two schema dialects arrive at the emulator: the Gemini ``Schema`` proto of ``responseSchema``
(upper-case type names, ``nullable``, ``propertyOrdering``) and the JSON Schema subset of
``responseJsonSchema`` (lower-case types, type lists with ``"null"``, ``$ref``/``$defs``,
``oneOf``, ``allOf``, ``const``, ``prefixItems``, ``additionalProperties``, ``pattern``). Their
keywords do not clash, so one generator reads both.
It expects camelCase keys: the emulator normalizes snake_case proto names before calling it.

Everything is drawn from the ``random.Random`` passed in, so a seeded generator gives the same
value every time.
"""

from __future__ import annotations

import json
import math
import random
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import rstr

__all__ = ["WORDS", "fake_invalid_value", "fake_prose", "fake_value", "fake_words"]

WORDS: tuple[str, ...] = (
    "amber", "anchor", "apple", "arrow", "autumn", "basil", "beacon", "birch", "bramble",
    "breeze", "bright", "canyon", "cedar", "cinnamon", "clever", "cloud", "copper", "coral",
    "crisp", "delta", "ember", "fern", "field", "forest", "garden", "gentle", "ginger", "golden",
    "granite", "harbor", "hazel", "honey", "island", "ivory", "jasmine", "juniper", "lantern",
    "lemon", "linen", "maple", "meadow", "mellow", "mint", "morning", "nutmeg", "oak", "ocean",
    "olive", "orchard", "pebble", "pepper", "pine", "plum", "quiet", "rain", "river", "saffron",
    "sage", "silver", "slate", "spring", "stone", "summer", "thistle", "timber", "valley",
    "velvet", "willow", "winter", "yarrow",
)  # fmt: skip

# Probabilities chosen to look like real answers while still exercising both branches often.
OPTIONAL_PRESENT = 0.8
NULL_CHANCE = 0.15
DEFAULT_MIN_ITEMS = 1
DEFAULT_MAX_ITEMS = 4
# Past this depth only what the schema demands is generated, so recursive $refs terminate.
MAX_DEPTH = 12
# Past this many nested $ref expansions, likewise (recursive trees stay answer-sized).
MAX_REFS = 3
JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")
# Keys in an answer for an object that only says what its values are (additionalProperties).
MAP_KEYS = (1, 3)
# Tries at a string that matches a pattern and the length bounds at once.
PATTERN_TRIES = 20
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def fake_words(rng: random.Random, low: int = 1, high: int = 4) -> str:
    """A few lower-case words joined by spaces."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def fake_prose(rng: random.Random, sentences: int = 3) -> str:
    """Plain text: a few capitalised sentences of built-in words."""
    out = []
    for _ in range(sentences):
        text = fake_words(rng, 5, 12)
        out.append(text[0].upper() + text[1:] + ".")
    return " ".join(out)


def fake_value(schema: Mapping[str, Any], rng: random.Random) -> Any:
    """Return a value that conforms to ``schema`` (Gemini Schema or JSON Schema subset).

    Args:
        schema: a ``responseSchema`` or ``responseJsonSchema`` value, camelCase keys.
        rng: the source of every random choice.

    Returns:
        A JSON-serializable value: required properties always present, optional ones usually,
        enums, bounds, lengths, patterns (by ``rstr``) and item counts respected.
    """
    return _Faker(schema, rng).value(schema, 0)


def fake_invalid_value(schema: Mapping[str, Any], rng: random.Random) -> Any:
    """Return a value that does *not* conform to ``schema``, as a misbehaving model might.

    An object loses a required property when the root demands one; otherwise the value has a
    JSON type the root does not admit. A schema that admits every value gets a valid one back.
    """
    faker = _Faker(schema, rng)
    node = faker.resolve(schema)
    admitted = faker.admitted_types(node)
    if "object" in admitted and node.get("required") and isinstance(node.get("properties"), dict):
        value = faker.object_value(node, 0)
        value.pop(rng.choice([str(name) for name in node["required"]]), None)
        return value
    wrong: Sequence[tuple[str, Any]] = (
        ("object", {"unexpected": "value"}),
        ("array", ["unexpected"]),
        ("string", "unexpected"),
        ("number", 0.5),
        ("boolean", True),
        ("null", None),
    )
    for json_type, value in wrong:
        if json_type not in admitted:
            return value
    return faker.value(node, 0)


def _type_names(node: Mapping[str, Any]) -> list[str]:
    """The node's type names, lower-cased; a list for JSON Schema type lists."""
    raw = node.get("type")
    if raw is None:
        return []
    names = raw if isinstance(raw, list) else [raw]
    return [str(name).lower() for name in names]


def _num(node: Mapping[str, Any], key: str) -> float | None:
    """A numeric keyword; proto3 JSON may carry int64 values as strings."""
    raw = node.get(key)
    if raw is None or isinstance(raw, bool):
        return None
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def _int(node: Mapping[str, Any], key: str) -> int | None:
    value = _num(node, key)
    return None if value is None else int(value)


class _Faker:
    """One generation pass; holds the root so ``$ref`` pointers can be resolved."""

    def __init__(self, root: Mapping[str, Any], rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.refs = 0  # $refs being expanded on the way down to the current node

    def resolve(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        """Follow local ``$ref`` pointers (``#``, ``#/$defs/X``); unknown ones become ``{}``."""
        seen = 0
        while isinstance(node.get("$ref"), str) and seen < 32:
            target: Any = self.root
            for part in node["$ref"].lstrip("#").split("/"):
                if part:
                    part = part.replace("~1", "/").replace("~0", "~")
                    target = target.get(part) if isinstance(target, Mapping) else None
            node = target if isinstance(target, Mapping) else {}
            seen += 1
        if isinstance(node.get("allOf"), list):
            return self.merge_all_of(node)
        return node

    def merge_all_of(self, node: Mapping[str, Any]) -> dict[str, Any]:
        """allOf as one schema: properties and required united, other keys the first one's."""
        merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
        for part in node["allOf"]:
            part = self.resolve(part) if isinstance(part, Mapping) else {}
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    def admitted_types(self, node: Mapping[str, Any]) -> set[str]:
        """JSON types a node can take at its root; every type when unconstrained."""
        node = self.resolve(node)
        if "const" in node:
            return {_json_type(node["const"])}
        enum = node.get("enum")
        if isinstance(enum, list) and enum:
            return {_json_type(v) for v in enum}
        branches = node.get("anyOf") or node.get("oneOf")
        if isinstance(branches, list) and branches:
            return set().union(*(self.admitted_types(b) for b in branches))
        names = set(_type_names(node)) or set(JSON_TYPES)
        if node.get("nullable") is True:
            names.add("null")
        if "number" in names:
            names.add("integer")
        return names

    def value(self, node: Mapping[str, Any], depth: int) -> Any:
        if isinstance(node.get("$ref"), str):
            # The API unrolls references only a few levels deep; past that, only what is required.
            self.refs += 1
            try:
                return self.value_of(
                    self.resolve(node), depth if self.refs <= MAX_REFS else MAX_DEPTH
                )
            finally:
                self.refs -= 1
        return self.value_of(self.resolve(node), depth)

    def value_of(self, node: Mapping[str, Any], depth: int) -> Any:
        rng = self.rng
        if "const" in node:
            return node["const"]
        if node.get("nullable") is True and rng.random() < NULL_CHANCE:
            return None
        enum = node.get("enum")
        if isinstance(enum, list) and enum:
            return rng.choice(enum)
        branches = node.get("anyOf") or node.get("oneOf")
        if isinstance(branches, list) and branches:
            return self.value(rng.choice(branches), depth + 1)
        return self.typed_value(node, self.pick_type(node), depth)

    def pick_type(self, node: Mapping[str, Any]) -> str:
        """Choose one type name; a type list picks ``null`` only now and then."""
        names = _type_names(node)
        if not names:
            # JSON Schema may leave the type implicit in its other keywords.
            if "properties" in node or "additionalProperties" in node:
                return "object"
            return "array" if "items" in node or "prefixItems" in node else "string"
        concrete = [n for n in names if n != "null"]
        if not concrete or (len(concrete) < len(names) and self.rng.random() < NULL_CHANCE):
            return "null"
        return self.rng.choice(concrete)

    def map_value(self, node: Mapping[str, Any], depth: int) -> dict[str, Any]:
        """An object that only says what its values are: a few keys of words."""
        count = self.rng.randint(*MAP_KEYS) if depth < MAX_DEPTH else 0
        keys = dict.fromkeys(fake_words(self.rng, 1, 1) for _ in range(count))
        return {k: self.value(node["additionalProperties"], depth + 1) for k in keys}

    def typed_value(self, node: Mapping[str, Any], type_name: str, depth: int) -> Any:
        if type_name == "object":
            if not node.get("properties") and isinstance(node.get("additionalProperties"), dict):
                return self.map_value(node, depth)
            return self.object_value(node, depth)
        if type_name == "array":
            return self.array_value(node, depth)
        if type_name == "integer":
            return _fake_integer(node, self.rng)
        if type_name == "number":
            return _fake_number(node, self.rng)
        if type_name == "boolean":
            return self.rng.random() < 0.5
        if type_name == "null":
            return None
        return _fake_string(node, self.rng)

    def object_value(self, node: Mapping[str, Any], depth: int) -> dict[str, Any]:
        """Required properties always, optional ones with OPTIONAL_PRESENT, in output order."""
        props = node.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = {str(name) for name in node.get("required") or ()}
        min_props = _int(node, "minProperties") or 0
        max_props = _int(node, "maxProperties")
        chosen = [name for name in props if name in required]
        optional = [name for name in props if name not in required]
        for name in optional:
            if max_props is not None and len(chosen) >= max_props:
                break
            keep = depth < MAX_DEPTH and self.rng.random() < OPTIONAL_PRESENT
            if keep or len(chosen) < min_props:
                chosen.append(name)
        out: dict[str, Any] = {}
        for name in _ordered(props, node.get("propertyOrdering")):
            if name in chosen:
                out[name] = self.value(props[name], depth + 1)
        for name in sorted(required - set(props)):
            # Required but undeclared: JSON Schema still demands the key, any value will do.
            out[name] = fake_words(self.rng)
        return out

    def array_value(self, node: Mapping[str, Any], depth: int) -> list[Any]:
        prefix, items = node.get("prefixItems"), node.get("items")
        if isinstance(items, list):  # draft 7 tuples: items is the list, additionalItems the rest
            prefix, items = items, node.get("additionalItems")
        prefix = prefix if isinstance(prefix, list) else []
        low, high = _item_bounds(node)
        if prefix and not isinstance(items, Mapping):  # a tuple: as many items as it names
            low, high = min(len(prefix), high), min(len(prefix), high)
        if depth >= MAX_DEPTH:  # only what the schema demands, so recursive arrays end
            low = high = min(low, _int(node, "minItems") or 0)
        count = self.rng.randint(low, high)
        items = items if isinstance(items, Mapping) else {"type": "string"}
        values = [
            self.value(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(count)
        ]
        if node.get("uniqueItems") is True:  # duplicates dropped, as long as enough are left
            unique = list({json.dumps(v, sort_keys=True): v for v in values}.values())
            values = unique if len(unique) >= low else values
        return values


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _ordered(props: Mapping[str, Any], ordering: Any) -> list[str]:
    """``propertyOrdering`` first, then any remaining properties in declared order."""
    first = [str(n) for n in ordering if n in props] if isinstance(ordering, list) else []
    return first + [name for name in props if name not in first]


def _item_bounds(node: Mapping[str, Any]) -> tuple[int, int]:
    low = _int(node, "minItems")
    high = _int(node, "maxItems")
    if low is None:
        low = DEFAULT_MIN_ITEMS if high is None else min(DEFAULT_MIN_ITEMS, high)
    if high is None:
        high = max(low, DEFAULT_MAX_ITEMS)
    return max(low, 0), max(high, low, 0)


def _bounds(node: Mapping[str, Any], span: float) -> tuple[float, float, bool, bool]:
    """Lower and upper bound plus whether each is exclusive; a missing side is ``span`` away."""
    low, high = _num(node, "minimum"), _num(node, "maximum")
    ex_low, ex_high = _num(node, "exclusiveMinimum"), _num(node, "exclusiveMaximum")
    low_open = ex_low is not None and (low is None or ex_low >= low)
    high_open = ex_high is not None and (high is None or ex_high <= high)
    low = ex_low if low_open else low
    high = ex_high if high_open else high
    if high is None:
        high = span if low is None else low + span
    if low is None:
        low = high - span
    return low, high, low_open, high_open


def _fake_integer(node: Mapping[str, Any], rng: random.Random) -> int:
    low, high, low_open, high_open = _bounds(node, 100)
    first = math.floor(low) + 1 if low_open else math.ceil(low)
    last = math.ceil(high) - 1 if high_open else math.floor(high)
    # An empty range cannot be satisfied; the lower bound is the least surprising answer.
    return first if last < first else rng.randint(first, last)


def _fake_number(node: Mapping[str, Any], rng: random.Random) -> float:
    low, high, low_open, high_open = _bounds(node, 1000.0)
    value = round(rng.uniform(low, high), 2)
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        # Rounding (or an open bound) pushed it out: the midpoint is inside any non-empty range.
        value = low / 2 + high / 2
    return value


def _fake_string(node: Mapping[str, Any], rng: random.Random) -> str:
    low, high = _int(node, "minLength"), _int(node, "maxLength")
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        text = _matching(pattern, low, high, rng)
        if text is not None:
            return text
    fmt = str(node.get("format", "")).lower()
    if fmt == "date":
        text = (_EPOCH + timedelta(days=rng.randint(0, 3650))).date().isoformat()
    elif fmt == "date-time":
        moment = _EPOCH + timedelta(seconds=rng.randint(0, 10 * 365 * 86400))
        text = moment.isoformat().replace("+00:00", "Z")
    elif fmt == "time":
        text = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    elif fmt == "email":
        text = f"{rng.choice(WORDS)}.{rng.choice(WORDS)}@example.com"
    elif fmt in ("uri", "url"):
        text = f"https://example.com/{rng.choice(WORDS)}/{rng.choice(WORDS)}"
    elif fmt == "uuid":
        text = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    else:
        text = fake_words(rng)
    return _fit_length(text, low, high, rng)


def _matching(pattern: str, low: int | None, high: int | None, rng: random.Random) -> str | None:
    """A string that ``pattern`` finds (JSON Schema patterns are not anchored), in the bounds."""
    try:
        regex = re.compile(pattern)
        maker = rstr.Rstr(rng)
        for _ in range(PATTERN_TRIES):
            text = maker.xeger(pattern)
            # rstr repeats `+`/`*` up to 100 times; cut to maxLength, keep it if it still matches
            for cut in (text, text[:high] if high is not None else text):
                if regex.search(cut) and (low or 0) <= len(cut) <= (high or len(cut)):
                    return cut
    except (re.error, ValueError, IndexError):
        pass  # a pattern Python cannot read: fall back to plain words
    return None


def _fit_length(text: str, low: int | None, high: int | None, rng: random.Random) -> str:
    """Pad with words up to ``low`` characters, cut down to ``high``."""
    low = max(low or 0, 0)
    while len(text) < low:
        text = f"{text} {rng.choice(WORDS)}" if text else rng.choice(WORDS)
    if high is not None and len(text) > high:
        text = text[: max(high, 0)].rstrip()
        text = text + "x" * (low - len(text)) if len(text) < low else text
    return text
