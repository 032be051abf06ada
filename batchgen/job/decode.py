"""Reading a TOML table into a declared msgspec type, with a one-line message naming file and key.

The declarations (``job/spec.py``, ``pricing/file.py``) state each key, its type, its default
and its range once; msgspec checks them. Its error names a JSON path (``$.limits.concurrency``)
and a type (``Expected `int | str`, got `bool```); :func:`explain` words that the way the rest
of batchgen speaks of a file: ``limits.concurrency must be a whole number or "auto", not True``.
A field whose wording is not its type's puts it in ``Meta(extra={"wanted": ...})``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec
from msgspec import inspect as mi

from batchgen.errors import JobError

__all__ = ["convert", "schema_hook"]

T = TypeVar("T")

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<at>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.(\w+)|\[(\d+)\]|\[\.\.\.\]")
_RANGE = re.compile(r"^Expected `\w+` [<>]=? \S+$")
_WORDS: dict[type, str] = {
    mi.IntType: "a whole number",
    mi.FloatType: "a number",
    mi.BoolType: "true or false",
    mi.StrType: "a string",
    mi.DateType: "a date such as 2026-12-01",
    mi.StructType: "a table",
    mi.DictType: "a table",
    mi.CustomType: "a string",  # a Path
}


def convert(raw: Mapping[str, Any], kind: type[T], where: str, *, label: str = "") -> T:
    """``raw`` as ``kind``; a mismatch is a :class:`JobError` ``"{where}: {what, where}"``.

    ``label`` (``models."x"``) prefixes key names when ``raw`` is not the file's top level;
    without one, keys in a section are named ``[section] key`` as a job file's are.
    """
    try:
        return msgspec.convert(raw, kind, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise JobError(f"{where}: {explain(str(exc), raw, kind, label)}") from None


def explain(message: str, raw: Mapping[str, Any], kind: type, label: str = "") -> str:
    """msgspec's ``message`` about ``raw`` in the file's words: the key, what it must be, and
    the value it has."""
    found = _AT.match(message)
    assert found is not None  # the pattern matches any text
    what = found["what"]
    steps: list[str | int] = [
        name if name else int(index) if index else -1
        for name, index in _STEP.findall(found["at"] or "")
    ]
    root = mi.type_info(kind)
    if (unknown := re.match(r"Object contains unknown field `(.*)`$", what)) is not None:
        key = _label(label, steps)
        allowed = ", ".join(sorted(f.encode_name for f in _struct(_type_at(root, steps)).fields))
        if label:
            return f"unknown key '{key}.{unknown[1]}' (allowed: {allowed})"
        return f"{f'[{key}] ' if key else ''}unknown key {unknown[1]!r} (allowed: {allowed})"
    if (missing := re.match(r"Object missing required field `(.*)`$", what)) is not None:
        key, need = _label(label, steps), _type_at(root, [*steps, missing[1]])
        if not label and isinstance(_table(need), mi.StructType):
            return f"missing section [{missing[1]}]"
        if own := _own_words(need):
            return f"{_label(label, [*steps, missing[1]])} must be {own}"
        return f"{f'[{key}]' if key and not label else key or 'the file'} needs {missing[1]!r}"
    while steps and not isinstance(steps[-1], str):  # carry[1]: speak of carry
        steps.pop()
    key, field, value = _label(label, steps), _type_at(root, steps), _value_at(raw, steps)
    if not what.startswith(("Expected `", "Invalid")):
        return f"{key}: {what}"
    if own := _own_words(field):
        return f"{key} must be {own}, not {value!r}"
    if _RANGE.match(what) and (bound := _bound(field)):
        return f"{key} must be {bound}, not {value}"
    if isinstance(_table(field), mi.StructType | mi.DictType) and not isinstance(value, dict):
        return f"{key} must be a table" + ("" if label else f" ([{key}])")
    return f"{key} must be {wanted(field, _declared_literals(kind, steps))}, not {value!r}"


def _label(label: str, steps: list[str | int]) -> str:
    """``limits.concurrency``, ``models."x".periods[0].input``."""
    named = "".join(f".{s}" if isinstance(s, str) else f"[{s}]" for s in steps)
    return f"{label}{named}" if label else named.removeprefix(".")


def _own_words(t: mi.Type) -> str:
    """A field's own wording (``Meta(extra={"wanted": ...})``), for all its members."""
    if isinstance(t, mi.Metadata):
        return str((t.extra or {}).get("wanted", ""))
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        words = [_own_words(m) for m in members]
        return " or ".join(words) if all(words) else ""
    return ""


def wanted(t: mi.Type, order: Sequence[Any] = ()) -> str:
    """What a value of type ``t`` must be, in words: ``a whole number or "auto"``; ``order``
    lists choices in the order declared (msgspec sorts them)."""
    if isinstance(t, mi.Metadata):
        return str((t.extra or {}).get("wanted") or wanted(t.type, order))
    if isinstance(t, mi.UnionType):
        words = (wanted(m, order) for m in t.types if not isinstance(m, mi.NoneType))
        return " or ".join(words)
    if isinstance(t, mi.LiteralType):
        ranked = sorted(t.values, key=lambda v: order.index(v) if v in order else len(order))
        return " or ".join(json.dumps(v) for v in ranked)
    if isinstance(t, mi.ListType | mi.VarTupleType):
        return f"a list of {wanted(t.item_type).removeprefix('a ')}s"
    return _WORDS.get(type(t), "something else")


def _bound(t: mi.Type) -> str:
    """The range a number of type ``t`` must be in, as declared: ``> 0``."""
    if isinstance(t, mi.Metadata):
        return _bound(t.type)
    if isinstance(t, mi.UnionType):
        return " or ".join(b for b in map(_bound, t.types) if b)
    if isinstance(t, mi.IntType | mi.FloatType):
        ops = {">": t.gt, ">=": t.ge, "<": t.lt, "<=": t.le}
        return " and ".join(f"{op} {n:g}" for op, n in ops.items() if n is not None)
    return ""


def _table(t: mi.Type) -> mi.Type:
    """``t`` without its metadata; a union of one table type with None is that table type."""
    if isinstance(t, mi.Metadata):
        return _table(t.type)
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        return _table(members[0]) if len(members) == 1 else t
    return t


def _struct(t: mi.Type) -> mi.StructType:
    plain = _tables_in(t)
    assert isinstance(plain, mi.StructType), plain  # only a struct reports unknown fields
    return plain


def _tables_in(t: mi.Type) -> mi.Type:
    """The table (or list) type a path steps into: in a union, its one such member."""
    t = _table(t)
    if isinstance(t, mi.UnionType):
        inner = [_table(m) for m in t.types]
        nested = (mi.StructType, mi.DictType, mi.ListType, mi.VarTupleType)
        return next((m for m in inner if isinstance(m, nested)), t)
    return t


def _type_at(t: mi.Type, steps: list[str | int]) -> mi.Type:
    for step in steps:
        plain = _tables_in(t)
        if isinstance(plain, mi.StructType):
            t = next(f.type for f in plain.fields if f.encode_name == step)
        elif isinstance(plain, mi.DictType):
            t = plain.value_type
        elif isinstance(plain, mi.ListType | mi.VarTupleType):
            t = plain.item_type
    return t


def _declared_literals(kind: Any, steps: list[str | int]) -> list[Any]:
    """The choices of the Literal types on the path, in the order they are declared."""
    for step in steps:
        struct = next((a for a in _args(kind) if isinstance(a, type)), None)
        if not isinstance(step, str) or struct is None or not issubclass(struct, msgspec.Struct):
            return []
        names = {f.encode_name: f.name for f in msgspec.structs.fields(struct)}
        kind = get_type_hints(struct, include_extras=True).get(names.get(step, step))
    return [a for a in _args(kind) if not isinstance(a, type)]


def _args(hint: Any) -> list[Any]:
    """The members of a hint, through Annotated, unions and Literal: ``[int, "auto"]``."""
    if get_origin(hint) in (Annotated, Literal, Union, UnionType):
        return [m for a in get_args(hint)[: 1 if get_origin(hint) is Annotated else None]
                for m in _args(a)]  # fmt: skip
    return [hint]


def _value_at(raw: Any, steps: list[str | int]) -> Any:
    for step in steps:
        if isinstance(raw, Mapping):
            raw = raw.get(step)
        else:
            listed = isinstance(raw, list) and isinstance(step, int) and step < len(raw)
            raw = raw[step] if listed else None
    return raw


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise TypeError(f"Expected `{kind.__name__}`")


def schema_hook(kind: type) -> dict[str, Any]:
    """The JSON Schema of a type msgspec does not know (a Path is a string)."""
    if kind is Path:
        return {"type": "string"}
    raise NotImplementedError(kind)
