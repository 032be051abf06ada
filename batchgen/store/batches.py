"""The record in OUTPUT of every Batch Mode chunk: its file, its rows, its batch and its state.

::

    OUTPUT/batches/
      batches.jsonl            one fsynced line per step of a chunk (the first one lists its rows)
      chunk-<id>.jsonl         the request lines of one chunk (batchgen.backends.batch.jsonl)
      results-<id>.jsonl       its downloaded result lines

A chunk moves ``written → uploaded → submitting → submitted`` and ends ``collected``,
``failed``, ``expired`` or ``cancelled``. Each step is on disk before the next call is made:
``submitting`` (with the display name the batch is created under) before the create request,
``submitted`` (with the batch's name) before any waiting. So a run killed anywhere re-attaches:
a chunk left ``submitting`` is looked up by its display name before it is ever created again,
and rows of a chunk that has not ended are never put in another one, so no row is submitted
twice. Lines carry their format; a line cut short by a kill is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchgen.atomic import fsync_dir
from batchgen.errors import CheckpointError
from batchgen.store.files import open_append

BATCHES_DIR = "batches"
RECORD_FILE = "batches.jsonl"
FORMAT = 1
STATES = (
    "written",  # the chunk file is on disk
    "uploaded",  # the Files API holds it as file_name
    "submitting",  # a create request may have been sent, under display_name
    "submitted",  # the batch batch_name exists
    "collected",  # its results are in the journal
    "failed",
    "expired",
    "cancelled",
)
ENDED = frozenset(STATES[4:])
DISPLAY_PREFIX = "batchgen-"


@dataclass(frozen=True)
class ChunkRecord:
    """Where one chunk is: its rows, its uploaded file, its batch, its state."""

    chunk: str
    run_id: str
    rows: tuple[str, ...]
    state: str = "written"
    file_name: str | None = None
    batch_name: str | None = None
    error: str | None = None
    at: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def display_name(self) -> str:
        """The batch's display name: how a create whose answer was lost is found again."""
        return f"{DISPLAY_PREFIX}{self.chunk}"


class BatchStore:
    """The ``batches/`` folder of one output directory; writing needs the output's lock."""

    def __init__(self, output: Path, published: Callable[[], None] | None = None) -> None:
        """``published`` is called after each record is on disk: an object-store output
        uploads it then, so that a run resumed elsewhere re-attaches to its batches."""
        self.published = published
        self.folder = output / BATCHES_DIR
        self.path = self.folder / RECORD_FILE
        self._known: dict[str, ChunkRecord] | None = None  # read once; the lock keeps it true

    def chunk_path(self, chunk: str) -> Path:
        return self.folder / f"chunk-{chunk}.jsonl"

    def results_path(self, chunk: str) -> Path:
        return self.folder / f"results-{chunk}.jsonl"

    def add(self, chunk: str, run_id: str, rows: tuple[str, ...]) -> ChunkRecord:
        """Record a written chunk and its rows (the file is already at :meth:`chunk_path`)."""
        known = self._records()
        if chunk in known:
            raise ValueError(f"chunk {chunk} is already recorded")
        record = ChunkRecord(chunk, run_id, rows, at=_now())
        self._append({"chunk": chunk, "run_id": run_id, "state": record.state,
                      "rows": list(rows), "at": record.at})  # fmt: skip
        known[chunk] = record
        return record

    def mark(
        self,
        chunk: str,
        state: str,
        *,
        file_name: str | None = None,
        batch_name: str | None = None,
        error: str | None = None,
    ) -> ChunkRecord:
        """Record a chunk's next step; a chunk that ended does not move again."""
        if state not in STATES:
            raise ValueError(f"unknown chunk state {state!r}")
        known = self._records()
        current = known.get(chunk)
        if current is None or current.ended:
            raise ValueError(f"chunk {chunk} is {'ended' if current else 'not recorded'}")
        changes: dict[str, Any] = {"state": state, "at": _now()}
        changes.update({k: v for k, v in (("file_name", file_name), ("batch_name", batch_name),
                                           ("error", error)) if v is not None})  # fmt: skip
        self._append({"chunk": chunk, **changes})
        known[chunk] = replace(current, **changes)
        return known[chunk]

    def records(self) -> dict[str, ChunkRecord]:
        """Every chunk's latest state, in the order they were written."""
        return dict(self._records())

    def _records(self) -> dict[str, ChunkRecord]:
        if self._known is None:
            self._known = self._read()
        return self._known

    def _read(self) -> dict[str, ChunkRecord]:
        found: dict[str, ChunkRecord] = {}
        for line in self._lines():
            chunk = line.get("chunk")
            if not isinstance(chunk, str):
                continue
            if "rows" in line:
                rows = tuple(str(r) for r in line["rows"])
                found[chunk] = ChunkRecord(chunk, str(line.get("run_id", "")), rows)
            if chunk in found:
                fields = {k: line[k] for k in ("state", "file_name", "batch_name", "error", "at")
                          if k in line}  # fmt: skip
                found[chunk] = replace(found[chunk], **fields)
        return found

    def open_chunks(self) -> list[ChunkRecord]:
        """Chunks that have not ended: the next run re-attaches to them."""
        return [r for r in self._records().values() if not r.ended]

    def durations(self) -> list[float]:
        """Seconds from submitted to collected of every chunk collected so far (how long this
        output's batches took: what a batch's context cache is kept alive for)."""
        submitted: dict[str, datetime] = {}
        took = []
        for line in self._lines():
            chunk, state, at = line.get("chunk"), line.get("state"), line.get("at")
            with contextlib.suppress(TypeError, ValueError):
                when = datetime.fromisoformat(str(at))
                if state == "submitted":
                    submitted[str(chunk)] = when
                elif state == "collected" and chunk in submitted:
                    took.append((when - submitted.pop(str(chunk))).total_seconds())
        return took

    def rows_in_flight(self) -> set[str]:
        """Row ids in chunks that have not ended: never to be put in another chunk."""
        return {row for r in self.open_chunks() for row in r.rows}

    def _lines(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot read ({exc.strerror})") from None
        lines = []
        for raw in text.splitlines():
            with contextlib.suppress(ValueError):  # a line cut short by a kill
                line = json.loads(raw)
                if isinstance(line, dict):
                    lines.append(line)
        newer = [line["format"] for line in lines if line.get("format", 1) != FORMAT]
        if newer:
            raise CheckpointError(
                f"{self.path}: written in batch record format {newer[0]} (this batchgen reads "
                f"{FORMAT}); upgrade batchgen or use another output directory"
            )
        return lines

    def _append(self, line: dict[str, Any]) -> None:
        """One line, fsynced (and the folder, the first time) before the caller goes on."""
        try:
            new = not self.path.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            with os.fdopen(open_append(self.path), "a", encoding="utf-8") as f:
                f.write(json.dumps({"format": FORMAT, **line}, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if new:
                fsync_dir(self.folder)
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot write ({exc.strerror})") from None
        if self.published is not None:
            self.published()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
