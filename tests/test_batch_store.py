"""The batch record in OUTPUT: every step on disk first, re-read after a kill."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from batchgen.errors import CheckpointError
from batchgen.store.batches import BatchStore, ChunkRecord


def test_steps_are_recorded_and_read_back(tmp_path: Path) -> None:
    store = BatchStore(tmp_path)
    store.add("r1-00001", "r1", ("a", "b"))
    store.add("r1-00002", "r1", ("c",))
    store.mark("r1-00001", "uploaded", file_name="files/f1")
    store.mark("r1-00001", "submitting")
    store.mark("r1-00001", "submitted", batch_name="batches/b1")
    store.mark("r1-00002", "uploaded", file_name="files/f2")
    again = BatchStore(tmp_path).records()  # as the next run reads it
    assert again["r1-00001"] == ChunkRecord(
        "r1-00001", "r1", ("a", "b"), "submitted", "files/f1", "batches/b1",
        at=again["r1-00001"].at,
    )  # fmt: skip
    assert again["r1-00002"].state == "uploaded" and again["r1-00002"].batch_name is None
    assert again["r1-00001"].display_name == "batchgen-r1-00001"
    assert BatchStore(tmp_path).rows_in_flight() == {"a", "b", "c"}
    store.mark("r1-00001", "collected")
    store.mark("r1-00002", "expired", error="4: expired")
    reread = BatchStore(tmp_path)
    assert reread.rows_in_flight() == set() and reread.open_chunks() == []
    assert reread.records()["r1-00002"].error == "4: expired"
    with pytest.raises(ValueError, match="ended"):
        reread.mark("r1-00001", "submitted")  # an ended chunk never moves again
    with pytest.raises(ValueError, match="already"):
        reread.add("r1-00001", "r1", ("z",))
    with pytest.raises(ValueError, match="state"):
        reread.mark("r1-00003", "done")


def test_each_step_is_on_disk_when_mark_returns(tmp_path: Path) -> None:
    """A process killed right after a step leaves that step for the next run."""
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from batchgen.store.batches import BatchStore
        store = BatchStore(Path({str(tmp_path)!r}))
        store.add("c1", "run", ("x", "y"))
        store.mark("c1", "uploaded", file_name="files/f")
        store.mark("c1", "submitting")
        os.kill(os.getpid(), 9)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, timeout=30)
    assert done.returncode == -9
    (chunk,) = BatchStore(tmp_path).open_chunks()
    assert (chunk.state, chunk.file_name, chunk.rows) == ("submitting", "files/f", ("x", "y"))


def test_a_line_cut_short_is_skipped_and_a_newer_format_refused(tmp_path: Path) -> None:
    store = BatchStore(tmp_path)
    store.add("c1", "run", ("x",))
    with store.path.open("a") as f:
        f.write('{"format": 1, "chunk": "c1", "state": "subm')  # a kill mid-write
    assert BatchStore(tmp_path).records()["c1"].state == "written"
    with store.path.open("a") as f:
        f.write("\n" + json.dumps({"format": 2, "chunk": "c1", "state": "uploaded"}) + "\n")
    with pytest.raises(CheckpointError, match="format 2.*upgrade batchgen"):
        BatchStore(tmp_path).records()


def test_an_unwritable_output_is_a_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "batches").write_text("a file where the folder should be")
    with pytest.raises(CheckpointError, match="batches.jsonl: cannot .*Not a directory"):
        BatchStore(tmp_path).add("c1", "run", ("x",))
