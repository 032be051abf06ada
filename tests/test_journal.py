"""The write-ahead journal and the output store: torn tails, folding, formats, the done rule."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.emulator import EmulatorConfig, EmulatorThread
from batchgen.errors import CheckpointError
from batchgen.job.spec import Overrides, load_job
from batchgen.keys import contains, keys_of
from batchgen.reports.status import output_status
from batchgen.run.runner import RunOptions, run_job
from batchgen.store.journal import MAGIC, JournalWriter, encode, read_segment
from batchgen.store.layout import part_files
from batchgen.store.outdir import OutputDir
from batchgen.store.output import ERRORS_SCHEMA, error_row
from tests.helpers.jobs import make_job

KEY = "journal-key-1"


def results(ids: list[str]) -> pa.Table:
    return pa.table({"row_id": ids, "x": list(range(len(ids)))})


def failures(ids: list[str], at: datetime) -> pa.Table:
    rows = [error_row(i, "server", "HTTP 503", status=503, at=at) for i in ids]
    return pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA)


def test_a_torn_tail_is_dropped_and_whole_frames_kept(tmp_path: Path) -> None:
    frames = [encode("results", results(["a", "b"])), encode("usage", results(["a"]))]
    writer = JournalWriter(tmp_path, "20261202T120000-abcdef")
    writer.append(frames)
    writer.append([encode("results", results(["c"]))])
    path = writer.roll()
    assert path is not None
    whole = path.read_bytes()
    boundaries = {len(MAGIC), len(MAGIC) + len(frames[0]), len(MAGIC) + len(frames[0] + frames[1])}
    for cut in range(len(MAGIC), len(whole)):  # a kill or a crash at any byte
        path.write_bytes(whole[:cut])
        segment = read_segment(path)
        table = segment.table("results")
        kept = table.column("row_id").to_pylist() if table is not None else []
        assert kept == ([] if cut < len(MAGIC) + len(frames[0]) else ["a", "b"])
        assert segment.torn == (cut not in boundaries)
    path.write_bytes(whole)
    assert read_segment(path).table("results").column("row_id").to_pylist() == ["a", "b", "c"]


def test_a_corrupt_frame_is_found_by_its_checksum(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, "20261202T120000-abcdef")
    writer.append([encode("results", results(["a"])), encode("results", results(["b"]))])
    path = writer.roll()
    assert path is not None
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # a flipped bit in the second frame's payload
    path.write_bytes(bytes(data))
    segment = read_segment(path)
    assert segment.torn and segment.table("results").column("row_id").to_pylist() == ["a"]


def test_folding_is_idempotent_after_a_kill_between_part_and_removal(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    out.prepare()
    writer = JournalWriter(tmp_path / "journal", "20261202T120000-abcdef")
    writer.append([encode("results", results(["a", "b"]))])
    segment = writer.roll()
    assert segment is not None
    copy = segment.read_bytes()
    out.compact(segment)
    segment.write_bytes(copy)  # as if killed after the part was written, before the removal
    assert out.done_rows() == 2  # the part is there; the segment is not counted twice
    assert out.fold_journal() == 1
    ids = pq.read_table(tmp_path / "results").column("row_id").to_pylist()
    assert sorted(ids) == ["a", "b"] and not out.segments()


def test_the_done_rule_reads_parts_and_journal_alike(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    out.prepare()
    early, late = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
    writer = JournalWriter(tmp_path / "journal", "20261202T120000-abcdef")
    writer.append([encode("errors", failures(["a", "b", "c"], early))])
    out.compact(writer.roll())  # type: ignore[arg-type]
    writer.append([encode("results", results(["a"])), encode("errors", failures(["b"], late))])
    writer.sync()  # left in the journal, as by a kill
    state = out.done_state()
    assert contains(state.done, keys_of(["a", "b", "c"])).tolist() == [True, False, False]
    assert contains(state.failed, keys_of(["a", "b", "c"])).tolist() == [False, True, True]
    latest = out.latest_failures()
    assert latest.column("row_id").to_pylist() == ["b", "c"]
    assert latest.column("failed_at").to_pylist()[0] == late


def test_a_newer_output_format_is_refused_in_one_line(tmp_path: Path) -> None:
    path = make_job(tmp_path, 3)
    with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}))) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        run_job(job, RunOptions(api_key=KEY))
        record = json.loads((tmp_path / "out" / "job.json").read_text())
        assert record["format"] == 2
        (tmp_path / "out" / "job.json").write_text(json.dumps(record | {"format": 3}))
        with pytest.raises(CheckpointError, match="written by a newer batchgen .output format 3"):
            run_job(job, RunOptions(api_key=KEY))
        result = CliRunner().invoke(main, ["status", str(tmp_path / "out")])
        assert result.exit_code == 2 and "newer batchgen" in result.stderr
        assert result.stderr.count("\n") == 1


def test_an_old_output_without_a_format_is_read_and_upgraded(tmp_path: Path) -> None:
    path = make_job(tmp_path, 4)
    with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}))) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        run_job(job, RunOptions(api_key=KEY, limit=2))
        record = json.loads((tmp_path / "out" / "job.json").read_text())
        del record["format"]  # as written by batchgen 0.1.0
        (tmp_path / "out" / "job.json").write_text(json.dumps(record))
        summary = run_job(job, RunOptions(api_key=KEY))
    assert (summary.rows_skipped, summary.rows_done) == (2, 2)
    assert json.loads((tmp_path / "out" / "job.json").read_text())["format"] == 2


def test_an_unwritable_output_folder_stops_before_the_first_call(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "out" / "usage"  # root ignores permissions: a file in the way
        blocker.parent.mkdir()
        blocker.write_text("not a folder")
    else:
        (tmp_path / "out" / "usage").mkdir(parents=True)
        (tmp_path / "out" / "usage").chmod(0o500)
    path = make_job(tmp_path, 5)
    with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}))) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        with pytest.raises(CheckpointError, match="usage: cannot write here .* nothing was sent"):
            run_job(job, RunOptions(api_key=KEY))
        assert server.emulator.counts["generateContent"] == 0


def test_status_counts_what_a_killed_run_left_in_the_journal(tmp_path: Path) -> None:
    path = make_job(tmp_path, 6)
    with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}))) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        run_job(job, RunOptions(api_key=KEY, limit=2))
    out = tmp_path / "out"
    writer = JournalWriter(out / "journal", "20261202T120000-abcdef")
    table = pq.read_table(part_files(out)[0]).slice(0, 1)
    writer.append([encode("results", table.set_column(0, "row_id", pa.array(["id-00005"])))])
    writer.sync()  # a killed run's answer, not yet in any part
    assert output_status(out).rows_done == 3
    with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}))) as server:
        job = load_job(path, Overrides(base_url=server.base_url))
        summary = run_job(job, RunOptions(api_key=KEY))
        assert server.emulator.counts["generateContent"] == 3  # id-00005 was not bought again
    assert (summary.folded, summary.rows_skipped, summary.rows_done) == (1, 3, 3)
    assert not OutputDir(out).segments()
