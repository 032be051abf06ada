from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchgen.errors import JobError
from batchgen.job.schema import normalize_schema
from batchgen.store.layout import part_files
from batchgen.store.outdir import write_part
from batchgen.store.output import (
    ERRORS_SCHEMA,
    META_FIELDS,
    OutputLayout,
    error_row,
)

NO_CARRY = pa.schema([])
META = {f.name: None for f in META_FIELDS}
RECIPES = normalize_schema(
    {
        "type": "ARRAY",
        "items": {
            "type": "OBJECT",
            "required": ["name"],
            "properties": {
                "name": {"type": "STRING"},
                "ingredients": {"type": "ARRAY", "items": {"type": "STRING"}},
            },
        },
    },
    "job.toml",
)


def test_object_gives_one_column_per_property() -> None:
    schema = normalize_schema(
        {
            "type": "OBJECT",
            "properties": {"b": {"type": "INTEGER"}, "a": {"type": "STRING"}},
            "propertyOrdering": ["a", "b"],
            "required": ["a"],
        },
        "job.toml",
    )
    carry = pa.schema([("topic", pa.string())])
    layout = OutputLayout(schema, False, carry, "job.toml")
    assert layout.schema.names[:4] == ["row_id", "topic", "a", "b"]
    assert not layout.schema.field("a").nullable and layout.schema.field("b").nullable
    rows = layout.rows({"row_id": "1", "topic": "t"}, {"a": "x", "b": 2, "extra": 1}, META)
    assert rows == [{"row_id": "1", "topic": "t", "a": "x", "b": 2, **META}]
    pa.Table.from_pylist(rows, schema=layout.schema)


def test_exploded_array_gives_a_row_per_item_with_its_index() -> None:
    layout = OutputLayout(RECIPES, True, NO_CARRY, "job.toml")
    assert layout.schema.names[:4] == ["row_id", "name", "ingredients", "item_index"]
    value = [{"name": "a", "ingredients": ["x"]}, {"name": "b"}]
    rows = layout.rows({"row_id": "7"}, value, META)
    assert [(r["name"], r["item_index"], r["ingredients"]) for r in rows] == [
        ("a", 0, ["x"]),
        ("b", 1, None),
    ]
    empty = layout.rows({"row_id": "8"}, [], META)
    assert [(r["row_id"], r["item_index"]) for r in empty] == [("8", None)]
    table = pa.Table.from_pylist(rows + empty, schema=layout.schema)
    assert table.num_rows == 3


def test_unexploded_array_is_one_list_column() -> None:
    layout = OutputLayout(RECIPES, False, NO_CARRY, "job.toml")
    assert layout.schema.field("result").type == pa.list_(
        pa.field(
            "item",
            pa.struct(
                [
                    pa.field("name", pa.string(), nullable=False),
                    pa.field("ingredients", pa.list_(pa.string())),
                ]
            ),
        )
    )


def test_scalar_schema_is_one_result_column() -> None:
    layout = OutputLayout(
        normalize_schema({"type": "STRING", "enum": ["y", "n"]}, "j"), False, NO_CARRY, "j"
    )
    assert layout.schema.field("result").type == pa.string()
    assert layout.rows({"row_id": "1"}, "y", META)[0]["result"] == "y"


def test_explode_needs_an_array() -> None:
    with pytest.raises(JobError, match="output.explode needs a top-level ARRAY"):
        OutputLayout(normalize_schema({"type": "STRING"}, "j"), True, NO_CARRY, "job.toml")


@pytest.mark.parametrize("name", ["row_id", "latency_ms", "topic"])
def test_column_collisions_are_refused(name: str) -> None:
    schema = normalize_schema({"type": "OBJECT", "properties": {name: {"type": "STRING"}}}, "j")
    with pytest.raises(JobError, match=f"job.toml: output column '{name}' is both"):
        OutputLayout(schema, False, pa.schema([("topic", pa.string())]), "job.toml")


def test_part_writer_is_atomic(tmp_path: Path) -> None:
    for seq, start in enumerate((0, 3), 1):
        table = pa.table({"row_id": [str(i) for i in range(start, start + 3)], "x": [1, 2, 3]})
        write_part(tmp_path / "results", f"part-run1-{seq:05d}.parquet", table)
    assert [p.name for p in part_files(tmp_path)] == [
        "part-run1-00001.parquet",
        "part-run1-00002.parquet",
    ]
    assert not list((tmp_path / "results").glob(".*"))  # no temporary file left behind
    assert pq.read_table(tmp_path / "results").num_rows == 6


def test_error_rows_fit_their_schema() -> None:
    row = error_row(
        "r1",
        "schema",
        "bad",
        status=None,
        attempts=2,
        text="x" * 5000,
        request_hash="abc",
        at=datetime.now(UTC),
    )
    table = pa.Table.from_pylist([row], schema=ERRORS_SCHEMA)
    assert len(table.column("raw_text")[0].as_py()) == 2000
