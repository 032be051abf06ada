"""``OUTPUT/job.json``: what produced the output (its format and the job's fingerprint)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from batchgen.atomic import write_bytes_atomically
from batchgen.errors import FRESH, CheckpointError
from batchgen.job.spec import Job
from batchgen.store.layout import JOB_FILE, KINDS, part_files

FORMAT = 2  # of job.json and the layout; 1: before the journal (no "format" key)


def fingerprint_parts(job: Job) -> dict[str, Any]:
    """What decides the answers and the output's columns; base_url and limits do not."""
    return {
        "model": job.model.name,
        "response_schema": job.response_schema,
        # only when not Gemini's, so that fingerprints of existing outputs stay as they were
        **({"schema_dialect": job.schema_dialect} if job.schema_dialect != "gemini" else {}),
        "prompt.user": job.prompt.user,
        "prompt.system": job.prompt.system,
        "generation": job.generation,
        "output.explode": job.output.explode,
        "input.carry": list(job.input.carry),
        "input.id_column": job.input.id_column,
        # only when set, so that fingerprints of outputs written before they existed stay
        **({"prompt.examples": [msgspec.to_builtins(e) for e in job.prompt.examples]}
           if job.prompt.examples else {}),
        **({"safety_settings": [msgspec.to_builtins(s) for s in job.safety_settings]}
           if job.safety_settings else {}),
        **({"prompt.media": list(job.prompt.media)} if job.prompt.media else {}),
        **({"prompt.context": list(job.prompt.context)} if job.prompt.context else {}),
    }  # fmt: skip


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A short hash of the fingerprint parts."""
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def read_job_record(directory: Path) -> dict[str, Any]:
    """job.json, upgraded to the current format; CheckpointError when unreadable or newer."""
    path = directory / JOB_FILE
    return _upgraded(path, _stored(path))


def _stored(path: Path) -> dict[str, Any]:
    """job.json as it is on disk."""
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("parts"), dict):
            raise ValueError("no parts")
    except (OSError, ValueError):
        raise CheckpointError(f"{path}: unreadable; move the output aside or use ", FRESH) from None
    return record


def _upgraded(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A stored record in the current format; CheckpointError when it is newer."""
    version = record.get("format", 1)
    if not isinstance(version, int) or version > FORMAT:
        raise CheckpointError(
            f"{path}: written by a newer batchgen (output format {version}; this one reads up "
            f"to {FORMAT}); upgrade batchgen or use another output directory"
        )
    if version == 1:
        record = _upgrade_1_to_2(record)
    return record


def _upgrade_1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    """Format 1 had no journal and no format key; its parts read as they are."""
    upgraded: dict[str, Any] = {**record, "format": 2}
    return upgraded


def check_fingerprint(job: Job, directory: Path, version: str) -> str:
    """Record the job's fingerprint in a new output; refuse an output made by another job."""
    parts = fingerprint_parts(job)
    path = directory / JOB_FILE
    if path.exists():
        stored = _stored(path)
        record = _upgraded(path, stored)
        recorded = record["parts"]
        changed = [k for k in parts if recorded.get(k) != parts[k]]
        if changed:
            raise CheckpointError(
                f"{directory}: written by a different job ({', '.join(changed)} changed); "
                "rerun with ", FRESH, " to start over, or choose another output",
            )  # fmt: skip
        if record.get("format") != stored.get("format"):  # stored in the current format now
            _write(path, record)
        return fingerprint(parts)
    if any(part_files(directory, kind) for kind in KINDS):
        raise CheckpointError(
            f"{directory}: has results but no {JOB_FILE}; choose another output or use ", FRESH
        )
    record = {"format": FORMAT, "fingerprint": fingerprint(parts), "job": job.name,
              "parts": parts, "batchgen_version": version}  # fmt: skip
    _write(path, record)
    return fingerprint(parts)


def _write(path: Path, record: Mapping[str, Any]) -> None:
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomically(path, text.encode("utf-8"))
