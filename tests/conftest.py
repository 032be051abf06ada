"""Shared fixtures: example jobs copied into a temporary folder, and a seed fixture loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEED_COPY = Path(__file__).resolve().parent / "data" / "seed_structured_output.json"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real key ever reaches a test by accident."""
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)  # google-genai's name, read first


@pytest.fixture
def seed() -> dict[str, Any]:
    """The real request/response pair (gemini-2.5-flash, with thinking tokens)."""
    return json.loads(SEED_COPY.read_text())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of jobs/ and sample_inputs/ so that runs write only under tmp_path."""
    for folder in ("jobs", "sample_inputs"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def write_job(folder: Path, text: str, name: str = "job.toml") -> Path:
    """Write a job file (dedented TOML text) and return its path."""
    import textwrap

    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path
