"""Hostile inputs: each is one line naming file, row and column, before the first paid call.

Every case goes through the CLI (``validate`` and ``run``) against an emulator that counts what
reaches it, over an OUTPUT a good run already filled: the exit code is 2, stderr is one line,
no request is sent and nothing in OUTPUT changes.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import InputError
from batchgen.input import csv as csv_input
from batchgen.input.reader import InputReader
from batchgen.job.spec import InputSpec
from batchgen.keys import keys_of
from tests.helpers.emulator_calls import StartEmulator
from tests.helpers.paths import write_job

KEY = "hostile-key-31"
JOB = """
    [input]
    path = "{name}"
    id_column = "id"

    [model]
    name = "gemini-2.5-flash-lite"

    [prompt]
    user = "Summarise in a few words: {{{{ review }}}}"

    [response_schema]
    type = "OBJECT"
    required = ["label"]
    properties = {{ label = {{ type = "STRING" }} }}

    [limits]
    concurrency = 4
    requests_per_minute = 1000000

    [output]
    directory = "out"
"""
ROWS = 50_000  # deep enough that a bad value sits far past the first block


@pytest.fixture
def emulator(emulator_factory: StartEmulator) -> EmulatorThread:
    return emulator_factory(EmulatorConfig(api_keys=frozenset({KEY}), record=True))


def csv_rows(n: int, bad: dict[int, bytes] | None = None) -> bytes:
    """A CSV of ``n`` rows (id, review, other); ``bad`` replaces whole rows by 0-based index."""
    lines = [b"id,review,other\n"]
    lines += [(bad or {}).get(i, b"r%d,review number %d,x\n" % (i, i)) for i in range(n)]
    return b"".join(lines)


def parquet_table(n: int) -> pa.Table:
    return pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "review": [f"review number {i} " * 3 for i in range(n)],
            "other": list(range(n)),
        }
    )


def write_parquet(path: Path, n: int = ROWS, **options: object) -> None:
    pq.write_table(parquet_table(n), path, row_group_size=5_000, **options)  # type: ignore[arg-type]


def corrupt_chunk(path: Path, group: int, column: str) -> None:
    """Overwrite bytes in the middle of one column chunk, found through the file's metadata."""
    meta = pq.ParquetFile(path).metadata.row_group(group)
    names = [meta.column(i).path_in_schema for i in range(meta.num_columns)]
    chunk = meta.column(names.index(column))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    with path.open("r+b") as f:
        f.seek(start + chunk.total_compressed_size // 2)
        f.write(b"\xff" * 64)


def deep_latin1(path: Path) -> None:
    path.write_bytes(csv_rows(ROWS, {49_998: b"r49998,caf\xe9 au lait,x\n"}))


def deep_field_count(path: Path) -> None:
    path.write_bytes(csv_rows(ROWS, {30_000: b"r30000,an unquoted, comma,x\n"}))


def deep_duplicate_id(path: Path) -> None:
    path.write_bytes(csv_rows(ROWS, {40_000: b"r17,again,x\n"}))


def empty_id(path: Path) -> None:
    path.write_bytes(csv_rows(100, {41: b",no id,x\n"}))


def duplicate_header(path: Path) -> None:
    path.write_bytes(b"id,review,review\nr1,a,b\n")


def parquet_named_csv(path: Path) -> None:
    write_parquet(path, 100)


def gzip_latin1(path: Path) -> None:  # gzip is read (by its first bytes); what is in it is checked
    path.write_bytes(gzip.compress(csv_rows(ROWS, {49_998: b"r49998,caf\xe9 au lait,x\n"})))


def a_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def empty_file(path: Path) -> None:
    path.write_bytes(b"")


def header_only(path: Path) -> None:
    path.write_bytes(b"id,review,other\n")


def corrupt_review_page(path: Path) -> None:
    write_parquet(path)
    corrupt_chunk(path, 7, "review")


def corrupt_id_page(path: Path) -> None:
    write_parquet(path)
    corrupt_chunk(path, 8, "id")


def truncated_parquet(path: Path) -> None:
    write_parquet(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def non_utf8_parquet_string(path: Path) -> None:
    reviews = pa.array([b"fine"] * 9_000 + [b"caf\xe9"] + [b"fine"] * 999, pa.binary())
    table = pa.table({"id": [f"r{i}" for i in range(10_000)], "review": reviews.view(pa.string())})
    pq.write_table(table, path, row_group_size=2_500)


def duplicate_parquet_column(path: Path) -> None:
    table = pa.table(
        [pa.array(["r1"]), pa.array(["a"]), pa.array(["b"])], ["id", "review", "review"]
    )
    pq.write_table(table, path)


CASES: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "rows.csv",
        deep_latin1,
        "rows.csv: row 49,999, column 'review': not UTF-8 (byte 0xe9); re-encode the file as UTF-8",
    ),
    (
        "rows.csv",
        deep_field_count,
        "rows.csv: row 30,001 (line 30,002): 4 fields where the header has 3; "
        "check the quotes and commas of that row",
    ),
    (
        "rows.csv",
        deep_duplicate_id,
        "rows.csv: rows 18 and 40,001 share the id 'r17' in column 'id'",
    ),
    ("rows.csv", empty_id, "rows.csv: row 42: empty id in column 'id'"),
    ("rows.csv", duplicate_header, "rows.csv: columns 2 and 3 are both named 'review'"),
    ("rows.csv", parquet_named_csv, "rows.csv: is a Parquet file; name it .parquet"),
    ("rows.csv", gzip_latin1, "rows.csv: row 49,999, column 'review': not UTF-8 (byte 0xe9)"),
    ("rows.csv", a_directory, "rows.csv: is a directory; set input.path (or --input)"),
    ("rows.csv", empty_file, "rows.csv: empty file (no header row)"),
    ("rows.csv", header_only, "rows.csv: no rows (the file has only a header)"),
    (
        "rows.parquet",
        corrupt_review_page,
        "rows.parquet: row group 8 of 10 (rows 35,001 to 40,000), column 'review': damaged (",
    ),
    (
        "rows.parquet",
        corrupt_id_page,
        "rows.parquet: row group 9 of 10 (rows 40,001 to 45,000), column 'id': damaged (",
    ),
    ("rows.parquet", truncated_parquet, "rows.parquet: truncated or damaged Parquet file"),
    (
        "rows.parquet",
        non_utf8_parquet_string,
        "rows.parquet: row 9,001 (row group 4 of 4), column 'review': not UTF-8 (byte 0xe9)",
    ),
    ("rows.parquet", duplicate_parquet_column, "columns 2 and 3 are both named 'review'"),
]


def good_input(path: Path) -> None:
    if path.suffix == ".parquet":
        write_parquet(path, 5)
    else:
        path.write_bytes(csv_rows(5))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, env={"GEMINI_API_KEY": KEY})
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(
    ("name", "make", "message"), CASES, ids=[make.__name__ for _, make, _ in CASES]
)
def test_hostile_input_is_one_line_before_any_call(
    tmp_path: Path,
    emulator: EmulatorThread,
    command: str,
    name: str,
    make: Callable[[Path], None],
    message: str,
) -> None:
    job = write_job(tmp_path, JOB.format(name=name))
    good_input(tmp_path / name)
    url = ["--base-url", emulator.base_url]
    assert invoke(["run", str(job), *url])[0] == 0  # an OUTPUT with results already in it
    before, sent = snapshot(tmp_path / "out"), emulator.emulator.counts["generateContent"]

    make(tmp_path / name)
    code, out, err = invoke([command, str(job), *url] if command == "run" else [command, str(job)])

    assert code == 2, out + err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err
    assert "Traceback" not in out + err
    assert emulator.emulator.counts["generateContent"] == sent  # nothing paid for
    assert snapshot(tmp_path / "out") == before  # nothing in OUTPUT changed


def test_quoted_newlines_across_blocks_read_alike_in_validate_and_run(
    tmp_path: Path, emulator: EmulatorThread
) -> None:
    rows = [b'r%d,"line one of %d\nline two, ""quoted""",x\n' % (i, i) for i in range(30_000)]
    (tmp_path / "rows.csv").write_bytes(b"id,review,other\n" + b"".join(rows))  # > 1 MiB
    job = write_job(tmp_path, JOB.format(name="rows.csv"))
    code, out, err = invoke(["validate", str(job)])
    assert code == 0 and "30,000 rows" in out, out + err

    reader = InputReader(InputSpec(tmp_path / "rows.csv", "csv", "id"), {"id": "", "review": ""})
    values = [r.values["review"] for b in reader.batches() for r in b]
    assert len(values) == 30_000 and values[29_999] == 'line one of 29999\nline two, "quoted"'

    code, out, err = invoke(["run", str(job), "--base-url", emulator.base_url, "--limit", "20"])
    assert code == 0, out + err
    assert emulator.emulator.counts["generateContent"] == 20


# aiohttp warns (ResourceWarning, ignored by Python's default filters) that a body over 1 MiB
# given as bytes is sent in one piece; the 5 MB prompt is meant to be sent whole.
@pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")
def test_a_5_mb_cell_is_read_whole_and_sent(tmp_path: Path, emulator: EmulatorThread) -> None:
    cell = "a long prompt " * 380_000 + "end"  # 5.3 MB: past pyarrow's 1 MiB block
    rows = [b"r0,short,x\n", f'r1,"{cell}",x\n'.encode(), b"r2,short too,x\n"]
    (tmp_path / "rows.csv").write_bytes(b"id,review,other\n" + b"".join(rows))
    job = write_job(tmp_path, JOB.format(name="rows.csv"))
    assert invoke(["validate", str(job)])[0] == 0

    code, out, err = invoke(["run", str(job), "--base-url", emulator.base_url])

    assert code == 0, out + err
    texts = [r["contents"][0]["parts"][0]["text"] for r in emulator.emulator.received]
    assert sorted(len(t) for t in texts) == [31, 35, len("Summarise in a few words: " + cell)]


@pytest.mark.parametrize("closed", [False, True], ids=["quote-never-closed", "long-row"])
def test_a_row_past_the_cap_is_refused_naming_row_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed: bool
) -> None:
    monkeypatch.setattr(csv_input, "CSV_MAX_ROW_BYTES", 4 << 20)
    rows = csv_rows(2_000).split(b"r1500,", 1)
    long = b'"never closed ' + b"x" * (5 << 20) + (b'",x\n' if closed else b"\n")
    (tmp_path / "rows.csv").write_bytes(rows[0] + b"r1500," + long + rows[1])
    reader = InputReader(InputSpec(tmp_path / "rows.csv", "csv", "id"), {"id": "", "review": ""})
    with pytest.raises(InputError) as info:
        reader.scan()
    assert str(info.value) == (
        f"{tmp_path / 'rows.csv'}: row 1,501 (from line 1,502): longer than 4 MiB, the most "
        "batchgen reads in one row; a quote that is never closed does this: check the quotes there"
    )


def test_a_bom_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_rows(3))
    reader = InputReader(InputSpec(path, "csv", "id"), {"id": "", "review": ""})
    assert reader.scan().rows == 3
    assert [r.row_id for b in reader.batches() for r in b] == ["r0", "r1", "r2"]


def test_scan_returns_the_id_keys_in_input_order(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_parquet(path, 12_000)
    reader = InputReader(InputSpec(path, "parquet", "id"), {"id": "", "review": ""}, 1_000)
    scan = reader.scan()
    assert scan.rows == 12_000
    assert scan.id_keys is not None and scan.id_keys.dtype.name == "uint64"
    assert scan.id_keys.tolist() == keys_of([f"r{i}" for i in range(12_000)]).tolist()
    no_ids = InputReader(InputSpec(path, "parquet"), {"review": ""}).scan()
    assert (no_ids.rows, no_ids.id_keys) == (12_000, None)


@pytest.mark.parametrize("change", ["append", "rewrite", "remove"])
def test_an_input_changed_under_the_run_stops_it(tmp_path: Path, change: str) -> None:
    path = tmp_path / "rows.parquet"
    write_parquet(path, 3_000)
    reader = InputReader(InputSpec(path, "parquet", "id"), {"id": "", "review": ""}, 500)
    reader.scan()
    rows = reader.batches()
    assert len(next(rows)) == 500
    if change == "append":
        with path.open("ab") as f:
            f.write(b"more")
    elif change == "remove":
        path.unlink()
    else:
        stat = path.stat()  # same size, a later mtime (set: the clock may not have ticked)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(InputError, match=re.escape("rows.parquet: changed while the run was")):
        next(rows)


def test_a_value_python_cannot_hold_is_named(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    when = pa.array([0, 0, 400_000 * 365 * 86_400, 0], pa.timestamp("s"))  # year ~402000
    pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "when": when}), path)
    reader = InputReader(InputSpec(path, "parquet", "id"), {"id": "", "when": ""})
    with pytest.raises(InputError, match=r"rows.parquet: row 3, column 'when': cannot be read"):
        reader.scan()
