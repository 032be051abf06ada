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
    while steps and not isinstance(steps[-1], str):  # carry[1]: speak of carry
        steps.pop()
    named = ".".join(str(s) for s in steps)
    key = f"{label}.{named}" if label and named else label or named
    field = _type_at(mi.type_info(kind), steps)
    order = _declared_literals(kind, steps)
    if (unknown := re.match(r"Object contains unknown field `(.*)`$", what)) is not None:
        allowed = ", ".join(sorted(f.encode_name for f in _struct(field).fields))
        if label:
            return f"unknown key '{key}.{unknown[1]}' (allowed: {allowed})"
        where = f"[{key}] " if key else ""
        return f"{where}unknown key {unknown[1]!r} (allowed: {allowed})"
    if (missing := re.match(r"Object missing required field `(.*)`$", what)) is not None:
        need = _type_at(field, [missing[1]])
        if isinstance(_plain(need), mi.StructType) and not label:
            return f"missing section [{missing[1]}]"
        return f"{f'[{key}]' if key and not label else key or 'the file'} needs {missing[1]!r}"
    value = _value_at(raw, steps)
    if _RANGE.match(what) and (bound := _bound(field)):
        return f"{key} must be {bound}, not {value}"
    if what.startswith(("Expected `", "Invalid enum value")):
        if isinstance(_plain(field), mi.StructType | mi.DictType) and not isinstance(value, dict):
            return f"{key} must be a table ([{key}])"
        return f"{key} must be {wanted(field, order)}, not {value!r}"
    return f"{key}: {what}"


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


def _plain(t: mi.Type) -> mi.Type:
    """``t`` without its metadata, or the one table type in a union with None."""
    if isinstance(t, mi.Metadata):
        return _plain(t.type)
    if isinstance(t, mi.UnionType):
        tables = [m for m in t.types if isinstance(_plain(m), mi.StructType | mi.DictType)]
        return _plain(tables[0]) if len(tables) == 1 else t
    return t


def _struct(t: mi.Type) -> mi.StructType:
    plain = _plain(t)
    assert isinstance(plain, mi.StructType), plain  # only a struct reports unknown fields
    return plain


def _type_at(t: mi.Type, steps: list[str | int]) -> mi.Type:
    for step in steps:
        plain = _plain(t)
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
        raw = raw.get(step) if isinstance(raw, Mapping) else None
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
