"""Job files for tests."""

from __future__ import annotations

from pathlib import Path

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
