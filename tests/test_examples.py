"""The scripts in examples/ run as a user runs them, against the built-in emulator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_the_dataframe_example_prints_typed_answers_in_input_order(tmp_path: Path) -> None:
    script = Path(__file__).parent.parent / "examples" / "generate_dataframe.py"
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=True)  # fmt: skip
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:5] if line[:1] != " "][:1] == [["0", "0"]]
    assert "score                           int64[pyarrow]" in done.stdout
    assert lines[-1].startswith("4 rows, 4 ok, ")
