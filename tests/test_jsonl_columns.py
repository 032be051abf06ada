"""JSON Lines input (plain and gzip) and naming any column in a template (``row[...]``,
``input.rename``): through the CLI against the built-in emulator, one line per bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.input.reader import InputReader
from batchgen.job.spec import InputSpec
from tests.helpers.jobs import item_job
from tests.helpers.outputs import read_rows


def rows(n: int) -> list[dict[str, object]]:
    return [
        {"id": f"r{i}", "Product Name": f"thing {i}", "n": i, "tags": ["a", i]} for i in range(n)
    ]


def lines(items: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in items).encode()


def job(folder: Path, name: str, content: bytes, prompt: str = "Say {{ row['Product Name'] }}",
        **extra: Any) -> Path:  # fmt: skip
    (folder / name).write_bytes(content)
    return item_job(folder, None, prompt=prompt, input={"path": name, **extra})


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args])
    return result.exit_code, result.output


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.ndjson", "rows.jsonl.gz"])
def test_jsonl_rows_are_all_answered_with_their_types(tmp_path: Path, name: str) -> None:
    content = lines(rows(120))
    if name.endswith(".gz"):
        content = gzip.compress(content)
    path = job(tmp_path, name, content, carry=["n", "tags"])
    code, output = run("run", str(path), "--emulator")
    assert code == 0, output
    results = read_rows(tmp_path / "out", "results")
    assert sorted(r["row_id"] for r in results) == sorted(f"r{i}" for i in range(120))
    by_id = {r["row_id"]: r for r in results}
    assert by_id["r7"]["n"] == 7  # whole numbers stay int64
    assert by_id["r7"]["tags"] == '["a", 7]'  # nested values arrive as their JSON text


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (b'{"id": "x", "Product Name": "a" "n": 1}\n',
         "not valid JSON (expected ',' or '}' (byte 32)); fix that line"),
        (b'["x", "a"]\n', "an array, not a JSON object; each line must be one"),
        (b'{"id": "x", "Product Name": "a", "n": "five"}\n',
         "column 'n' is a string, where the first rows hold whole numbers"),
        (b'{"id": "x", "Product Name": "caf\xe9"}\n', "not UTF-8 (byte 0xe9)"),
    ],
)  # fmt: skip
def test_a_bad_line_is_one_line_naming_row_and_line(
    tmp_path: Path, bad_line: bytes, message: str
) -> None:
    content = lines(rows(1200)) + b"\n" + bad_line + lines([{"id": "z"}])  # blank line: skipped
    path = job(tmp_path, "rows.jsonl", content, prompt="Say {{ row['Product Name'] }} {{ n }}")
    code, output = run("validate", str(path))
    assert code == 2
    assert output.count("\n") == 1, output
    assert f"rows.jsonl: row 1,201 (line 1,202): {message}" in output
    assert not (tmp_path / "out").exists()


def test_a_column_no_line_has_is_refused_before_any_call(tmp_path: Path) -> None:
    path = job(tmp_path, "rows.jsonl", lines(rows(3)), prompt="Say {{ row['Product name'] }}")
    code, output = run("run", str(path), "--emulator")
    assert code == 2
    assert output.strip().endswith(
        "rows.jsonl: no column 'Product name' (used in the prompt as row[...]); the file has: "
        "id, Product Name, n, tags; did you mean 'Product Name'?"
    )
    assert not (tmp_path / "out").exists()


def test_a_csv_column_with_a_space_by_rename(tmp_path: Path) -> None:
    content = b"id,Product Name\nr1,mug\nr2,tea pot\n"
    path = job(tmp_path, "rows.csv", content, prompt="Say {{ product }}",
               rename={"Product Name": "product"}, carry=["product"])  # fmt: skip
    code, output = run("run", str(path), "--emulator")
    assert code == 0, output
    results = read_rows(tmp_path / "out", "results")
    assert sorted(r["product"] for r in results) == ["mug", "tea pot"]


def test_rename_of_a_column_the_file_lacks_is_one_line(tmp_path: Path) -> None:
    path = job(tmp_path, "rows.csv", b"id,name\nr1,a\n", prompt="Say {{ name }}",
               rename={"Product Name": "product"})  # fmt: skip
    code, output = run("validate", str(path))
    assert code == 2
    assert "rows.csv: no column 'Product Name' (input.rename); the file has: id, name" in output


def test_a_real_column_named_row_keeps_its_meaning(tmp_path: Path) -> None:
    path = job(tmp_path, "rows.csv", b"id,row\nr1,seven\n", prompt="Say {{ row }}")
    code, output = run("run", str(path), "--emulator")
    assert code == 0, output
    assert [r["row_id"] for r in read_rows(tmp_path / "out", "results")] == ["r1"]


def test_row_subscripts_with_a_real_row_column_say_to_rename_it(tmp_path: Path) -> None:
    path = job(tmp_path, "rows.csv", b"id,row,a b\nr1,x,y\n", prompt="Say {{ row['a b'] }}")
    code, output = run("validate", str(path))
    assert code == 2
    assert output.endswith(
        "job.toml: prompt: row['a b'] cannot name a column: the input has a column named 'row', "
        'which {{ row }} is; rename it (input.rename = { row = "row_value" })\n'
    )
    both = "Say {{ row['a b'] }} {{ row_value }}"
    path = job(tmp_path, "rows.csv", b"id,row,a b\nr1,x,y\n", prompt=both,
               rename={"row": "row_value"})  # fmt: skip
    assert run("validate", str(path))[0] == 0


def test_the_whole_row_reads_every_column(tmp_path: Path) -> None:
    prompt = "{% for k, v in row.items() %}{{ k }}={{ v }} {% endfor %}"
    path = job(tmp_path, "rows.csv", b"id,a b,c\nr1,x,y\n", prompt=prompt)
    code, output = run("validate", str(path))
    assert code == 0, output
    assert "reads id, a b, c" in output


def test_jsonl_types_come_from_the_first_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    items = [
        {"id": "a", "whole": 1, "number": 1, "flag": True, "mixed": 1, "nested": {"k": [1]}},
        {"id": "b", "whole": 2, "number": 2.5, "flag": False, "mixed": "two"},
    ]
    path.write_bytes(lines(items) + b'{"id": "c", "whole": null}\n')
    needs = dict.fromkeys(["id", "whole", "number", "flag", "mixed", "nested"], "test")
    reader = InputReader(InputSpec(path, "jsonl", "id"), needs)
    assert reader.arrow_schema() == pa.schema(
        [("id", pa.string()), ("whole", pa.int64()), ("number", pa.float64()),
         ("flag", pa.bool_()), ("mixed", pa.string()), ("nested", pa.string())]
    )  # fmt: skip
    values = [r.values for batch in reader.batches() for r in batch]
    assert values[0] == {"id": "a", "whole": 1, "number": 1.0, "flag": True, "mixed": "1",
                         "nested": '{"k": [1]}'}  # fmt: skip
    assert values[2] == {"id": "c", "whole": None, "number": None, "flag": None, "mixed": None,
                         "nested": None}  # fmt: skip
