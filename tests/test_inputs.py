from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchgen.errors import InputError
from batchgen.input import csv as csv_input
from batchgen.input.locate import describe_invalid, first_invalid
from batchgen.input.reader import FORMATS, InputReader
from batchgen.job.spec import INPUT_FORMATS, InputSpec


def read_all(reader: InputReader) -> list[tuple[str, int, dict[str, object]]]:
    return [(r.row_id, r.position, dict(r.values)) for b in reader.batches() for r in b]


def test_csv_streams_in_batches_and_keeps_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_input, "CSV_BLOCK_BYTES", 256)  # force many record batches
    path = tmp_path / "rows.csv"
    path.write_text("id,text,n\n" + "".join(f"r{i},hello {i},{i}\n" for i in range(500)))
    reader = InputReader(InputSpec(path, "csv", "id"), {"id": "id", "text": "prompt"})
    batches = list(reader.batches())
    assert len(batches) > 5
    rows = [r for b in batches for r in b]
    assert [r.row_id for r in rows] == [f"r{i}" for i in range(500)]
    assert [r.position for r in rows] == list(range(500))
    assert rows[7].values == {"id": "r7", "text": "hello 7"}  # only the needed columns


def test_csv_values_are_strings_and_empty_cells_are_null(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('a,b\n1,"x, y"\n,NA\n')
    reader = InputReader(InputSpec(path, "csv"), {"a": "x", "b": "y"})
    assert read_all(reader) == [("0", 0, {"a": "1", "b": "x, y"}), ("1", 1, {"a": None, "b": "NA"})]
    assert reader.arrow_schema() == pa.schema([("a", pa.string()), ("b", pa.string())])


def test_parquet_streams_with_types(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    table = pa.table({"k": list(range(10)), "t": [f"t{i}" for i in range(10)], "skip": [1.0] * 10})
    pq.write_table(table, path, row_group_size=3)
    reader = InputReader(InputSpec(path, "parquet", "k"), {"k": "id", "t": "prompt"}, batch_rows=4)
    batches = list(reader.batches())
    assert [len(b) for b in batches] == [3, 3, 3, 1] or sum(len(b) for b in batches) == 10
    rows = [r for b in batches for r in b]
    assert [r.row_id for r in rows] == [str(i) for i in range(10)]
    assert rows[2].values == {"k": 2, "t": "t2"}
    assert reader.arrow_schema() == pa.schema([("k", pa.int64()), ("t", pa.string())])


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,text\n1,a\n")
    with pytest.raises(InputError) as info:
        InputReader(InputSpec(path, "csv"), {"topic": "used in the prompt"})
    assert str(info.value) == (
        f"{path}: no column 'topic' (used in the prompt); the file has: id, text"
    )
    path.write_text("id, Topic\n1,a\n")
    with pytest.raises(InputError, match=r"the file has: id,  Topic; did you mean ' Topic'\?$"):
        InputReader(InputSpec(path, "csv"), {"topic": "used in the prompt"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        ("na\u00efve,x\n1,2\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_unreadable_csv(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        InputReader(InputSpec(path, "csv"), {})


def test_non_utf8_in_the_body_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"id,text\n1,ok\n2,caf\xe9\n")
    reader = InputReader(InputSpec(path, "csv"), {"text": "prompt"})
    with pytest.raises(InputError) as info:
        read_all(reader)
    assert str(info.value) == (
        f"{path}: row 2, column 'text': not UTF-8 (byte 0xe9); re-encode the file as UTF-8"
    )


def test_missing_file_and_not_parquet(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="input file not found"):
        InputReader(InputSpec(tmp_path / "nope.csv", "csv"), {})
    bad = tmp_path / "bad.parquet"
    bad.write_text("id,text\n")
    with pytest.raises(InputError, match="bad.parquet: not a Parquet file"):
        InputReader(InputSpec(bad, "parquet"), {})


def test_empty_id_is_named(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,text\n1,a\n,b\n")
    reader = InputReader(InputSpec(path, "csv", "id"), {"id": "id"})
    with pytest.raises(InputError, match="row 2: empty id in column 'id'"):
        read_all(reader)


@given(
    size=st.integers(1, 300),
    bad=st.sets(st.integers(0, 299), max_size=4),
    byte=st.sampled_from([0x80, 0xC3, 0xE9, 0xFF]),
)
def test_first_invalid_finds_the_first_bad_string(size: int, bad: set[int], byte: int) -> None:
    values = [b"ok %d" % i if i not in bad else b"bad " + bytes([byte]) for i in range(size)]
    column = pa.array(values, pa.binary()).view(pa.string())
    first = min((i for i in bad if i < size), default=None)
    assert first_invalid(column) == first
    if first is not None:
        assert describe_invalid(column, first) == f"not UTF-8 (byte 0x{byte:02x})"


def test_every_format_a_job_can_name_has_a_reader() -> None:
    assert set(INPUT_FORMATS.values()) == set(FORMATS)
