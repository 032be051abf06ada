"""batchgen.atomic: a file is its old content or its new content, never half of each."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.atomic import atomic_file, temporary_name, write_bytes_atomically


class CrashError(Exception):
    pass


def test_new_content_replaces_old_whole(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_bytes(b"old")
    write_bytes_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["job.json"]


def test_file_is_fsynced_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        fsync(fd)

    def spy_replace(src: Path, dst: Path) -> None:
        events.append("rename")
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    write_bytes_atomically(tmp_path / "part.parquet", b"rows")
    assert events == ["fsync file", "rename", "fsync folder"]


def test_a_failed_write_keeps_the_old_content_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "chunk.jsonl"
    path.write_bytes(b"old")
    with pytest.raises(CrashError), atomic_file(path) as sink:
        sink.write(b"half of the new")
        raise CrashError
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["chunk.jsonl"]


def test_a_failed_rename_keeps_the_old_content_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "job.json"
    path.write_bytes(b"old")

    def no_space(src: Path, dst: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError, match="No space"):
        write_bytes_atomically(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["job.json"]


def test_a_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(CrashError), atomic_file(tmp_path / "new.parquet"):
        raise CrashError
    assert os.listdir(tmp_path) == []


def test_a_missing_folder_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_bytes_atomically(tmp_path / "absent" / "job.json", b"new")
    assert os.listdir(tmp_path) == []


def test_a_temporary_file_left_by_a_kill_is_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    temporary_name(path).write_bytes(b"torn bytes of a killed write, longer than the new")
    write_bytes_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["job.json"]


def test_a_process_killed_between_write_and_rename_leaves_the_old_content(
    tmp_path: Path,
) -> None:
    path = tmp_path / "job.json"
    path.write_bytes(b"old")
    child = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from batchgen.atomic import atomic_file\n"
        "with atomic_file(Path(sys.argv[1])) as sink:\n"
        "    sink.write(b'new')\n"
        "    sink.flush()\n"
        "    os._exit(9)  # no cleanup runs, as under SIGKILL\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(path)], check=False)
    assert done.returncode == 9
    assert path.read_bytes() == b"old"  # the torn temporary file is beside it, never in its place
    write_bytes_atomically(path, b"new")  # and the next write gets past it
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["job.json"]
