"""Where things are, and writing a job file."""

from __future__ import annotations

import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SEED_COPY = ROOT / "tests" / "data" / "seed_structured_output.json"


def write_job(folder: Path, text: str, name: str = "job.toml") -> Path:
    """Write a job file (dedented TOML text) and return its path."""
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path
