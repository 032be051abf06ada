"""Job files for tests: ``item_job`` (the common one, any [section] key set by keyword), the
resume tests' template, and a minimal one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.helpers.paths import write_job

MINIMAL = """
    [input]
    path = "rows.csv"

    [model]
    name = "gemini-2.5-flash"

    [prompt]
    user = "Say {{ word }}"

    [response_schema]
    type = "STRING"
"""


JOB = """
    [input]
    path = "rows.csv"
    {id_line}

    [model]
    name = "gemini-2.5-flash-lite"

    [prompt]
    user = "Describe item {{{{ name }}}} in a few words."

    [response_schema]
    type = "OBJECT"
    required = ["label", "size"]
    properties = {{ label = {{ type = "STRING" }}, size = {{ type = "INTEGER" }} }}

    [limits]
    concurrency = {concurrency}
    requests_per_minute = 1000000

    [retry]
    attempts = 4
    backoff_initial_seconds = 0.01
    backoff_max_seconds = 0.05

    [output]
    directory = "out"
    {flush_lines}
"""


def make_job(folder: Path, rows: int, *, ids: bool = True, concurrency: int = 8,
             flush_rows: int | None = 50) -> Path:  # fmt: skip
    """A job over ``rows`` CSV rows; ``flush_rows=None`` keeps the output defaults a user gets."""
    with (folder / "rows.csv").open("w") as f:
        f.write("id,name\n")
        f.writelines(f"id-{i:05d},thing {i}\n" for i in range(rows))
    flush = "" if flush_rows is None else f"flush_rows = {flush_rows}\nflush_seconds = 0.2"
    text = JOB.format(id_line='id_column = "id"' if ids else "", concurrency=concurrency,
                      flush_lines=flush)  # fmt: skip
    return write_job(folder, text)


ITEM_SCHEMA = """
[response_schema]
type = "OBJECT"
required = ["label"]
properties = { label = { type = "STRING" } }
"""


def item_job(
    folder: Path,
    rows: int | None,
    *,
    prompt: str = "Describe {{ name }} in a few words.",
    **tables: Mapping[str, Any],
) -> Path:
    """``rows`` CSV rows (``r0,item-000`` ...; None: the caller writes the input) and a job that
    labels each one, writing to ``folder/out``; keyword tables add or replace keys of a section
    (a value may be a string, number, boolean, list or table):
    ``item_job(tmp, 4, limits={"concurrency": 2}, input={"path": "s3://b/rows.csv"})``."""
    if rows is not None:
        with (folder / "rows.csv").open("w") as f:
            f.write("id,name\n")
            f.writelines(f"r{i},item-{i:03d}\n" for i in range(rows))
    sections: dict[str, dict[str, Any]] = {
        "input": {"path": "rows.csv", "id_column": "id"},
        "model": {"name": "gemini-2.5-flash-lite"},
        "prompt": {"user": prompt},
        "output": {"directory": "out"},
    }
    for name, keys in tables.items():
        sections[name] = {**sections.get(name, {}), **keys}
    text = "".join(
        f"[{name}]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in keys.items()) + "\n"
        for name, keys in sections.items()
    )
    path = folder / "job.toml"
    path.write_text(text + ITEM_SCHEMA)
    return path


def _toml(value: Any) -> str:
    """A TOML value: a JSON string, number, boolean or list is the same TOML value; a table is
    written inline."""
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)
