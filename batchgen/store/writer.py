"""Where a run's outcomes go: journal frames as they arrive, parts on a schedule.

Outcomes and ledger entries are buffered for at most ``FRAME_SECONDS`` (or ``FRAME_ROWS``
rows), then written to the journal as one Arrow frame per kind: a kill loses at most that
window. The journal is fsynced at most every ``output.sync_seconds`` (group commit). Every
``output.flush_rows`` rows or ``output.flush_seconds`` seconds the segment is closed and
compacted into part files.

A row whose values do not fit its Arrow columns (an integer beyond int64, say) is not allowed
to take the rest of its frame down: the frame is converted row by row and such a row becomes
a failure record (``output_type``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from batchgen.errors import CheckpointError
from batchgen.job.spec import OutputSpec
from batchgen.store.journal import JournalWriter, encode
from batchgen.store.layout import ERRORS_DIR, JOURNAL_DIR, RESULTS_DIR, USAGE_DIR
from batchgen.store.outdir import OutputDir
from batchgen.store.output import ERRORS_SCHEMA, USAGE_SCHEMA, error_row

FRAME_SECONDS = 0.05  # answers wait at most this long in memory before they are in the journal
FRAME_ROWS = 2000


@dataclass
class _Buffer:
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    usage: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.results) + len(self.errors) + len(self.usage)


class RunWriter:
    """The journal and the part files of one run; its methods block (run them in a thread)."""

    def __init__(
        self,
        out: OutputDir,
        run_id: str,
        results_schema: pa.Schema,
        spec: OutputSpec,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.schema = results_schema
        self.spec = spec
        self.clock = clock
        self.journal = JournalWriter(out.path / JOURNAL_DIR, run_id)
        self.buffer = _Buffer()
        self.pending = 0  # outcome rows in the open segment, for the flush_rows schedule
        self.parts = 0  # result parts written
        self.rejected: list[dict[str, Any]] = []  # failure records made of unfit result rows
        now = clock()
        self._framed = self._synced = self._compacted = now

    def add_rows(self, rows: list[dict[str, Any]], failed: bool) -> None:
        (self.buffer.errors if failed else self.buffer.results).extend(rows)

    def add_usage(self, row: dict[str, Any]) -> None:
        self.buffer.usage.append(row)

    def frame_due(self) -> bool:
        """Is it time to write the buffer to the journal?"""
        if not len(self.buffer):
            return False
        return len(self.buffer) >= FRAME_ROWS or self.clock() - self._framed >= FRAME_SECONDS

    def compaction_due(self) -> bool:
        now = self.clock()
        due = now - self._compacted >= self.spec.flush_seconds
        return self.pending >= self.spec.flush_rows or (due and self.journal.path is not None)

    def commit(self) -> list[dict[str, Any]]:
        """Write the buffer as frames; fsync when a sync is due. Returns the rows it had to
        turn into failure records (already written as such)."""
        buffer, self.buffer = self.buffer, _Buffer()
        rejected: list[dict[str, Any]] = []
        frames = []
        if buffer.results:
            table, rejected = self._results(buffer.results)
            if table is not None:
                frames.append(encode(RESULTS_DIR, table))
        if buffer.errors or rejected:
            errors = buffer.errors + rejected
            frames.append(encode(ERRORS_DIR, pa.Table.from_pylist(errors, schema=ERRORS_SCHEMA)))
        if buffer.usage:
            frames.append(encode(USAGE_DIR, pa.Table.from_pylist(buffer.usage, USAGE_SCHEMA)))
        try:
            if frames:
                self.journal.append(frames)
            self._framed = self.clock()
            if self._framed - self._synced >= self.spec.sync_seconds:
                self.journal.sync()
                self._synced = self._framed
        except OSError as exc:
            raise CheckpointError(
                f"{self.out.path / JOURNAL_DIR}: cannot write ({exc.strerror}); the run stopped "
                "so as not to pay for answers it cannot keep"
            ) from None
        self.pending += len(buffer.results) + len(buffer.errors)
        return rejected

    def compact(self) -> None:
        """Close the open segment and compact it into parts."""
        try:
            segment = self.journal.roll()
        except OSError as exc:
            raise CheckpointError(
                f"{self.out.path / JOURNAL_DIR}: cannot close the journal segment "
                f"({exc.strerror}); what it holds is kept: free space or fix permissions, "
                "then rerun"
            ) from None
        self._compacted = self._synced = self.clock()
        self.pending = 0
        if segment is not None:
            counts = self.out.compact(segment)
            self.parts += RESULTS_DIR in counts

    def _results(self, rows: list[dict[str, Any]]) -> tuple[pa.Table | None, list[dict[str, Any]]]:
        try:
            return pa.Table.from_pylist(rows, schema=self.schema), []
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
        good, bad = [], []
        for row in rows:  # rare: find the rows that do not fit, keep the rest
            try:
                pa.Table.from_pylist([row], schema=self.schema)
                good.append(row)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                bad.append(self._unfit(row, exc))
        table = pa.Table.from_pylist(good, schema=self.schema) if good else None
        return table, bad

    def _unfit(self, row: dict[str, Any], exc: Exception) -> dict[str, Any]:
        return error_row(
            str(row["row_id"]), "output_type",
            f"the answer does not fit its output columns: {exc}",
            attempts=row.get("attempts") or 1, request_hash=row.get("request_hash"),
            at=datetime.now(UTC),
        )  # fmt: skip
