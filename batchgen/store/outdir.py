"""The output directory: how rows get there (its layout: batchgen.store.layout; what it holds
and the done rule: batchgen.store.reading).

Every outcome is in the journal before it is anywhere else; parts are compacted from closed
segments (``part-<segment>.parquet``, written whole under a temporary name, then the segment is
removed). A kill between the two leaves both, and folding the segment again finds its parts
already there, so a row is never written twice.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.atomic import atomic_file, create_new, fsync_dir
from batchgen.errors import FRESH, CheckpointError, Option
from batchgen.store.batches import BATCHES_DIR, BatchStore
from batchgen.store.files import linked
from batchgen.store.journal import JournalFormatError, read_segment
from batchgen.store.layout import ERRORS_DIR, JOB_FILE, JOURNAL_DIR, KINDS, RUNS_FILE, part_files
from batchgen.store.lock import output_lock
from batchgen.store.output import ERRORS_SCHEMA
from batchgen.store.reading import OutputReader

# --- parts ---------------------------------------------------------------------------------


def write_part(folder: Path, name: str, table: pa.Table) -> Path:
    """Write ``table`` as ``folder/name``: temporary name, fsync, rename, fsync the folder."""
    final = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(final) as sink:
            pq.write_table(table, sink)
    except OSError as exc:
        raise CheckpointError(
            f"{folder}: cannot write results ({exc.strerror}); the answers stay in the journal: "
            "free space or fix permissions, then rerun"
        ) from None
    return final


# --- the directory -------------------------------------------------------------------------


class OutputDir(OutputReader):
    """One output directory: what it holds (:class:`OutputReader`) and, with its lock held
    (batchgen.store.lock), the writing: prepare, compaction, starting over."""

    # --- where the output lives (an object store's: batchgen.store.remote) ---------------

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The output's lock (batchgen.store.lock): one writer at a time."""
        return output_lock(self.path)

    def pull(self) -> None:
        """Bring what the output holds where it lives into :attr:`path` (here: it is there)."""

    def publish(self) -> None:
        """Make what was written in :attr:`path` visible where the output lives (here: it is)."""

    def named(self, exc: CheckpointError) -> CheckpointError:
        """``exc`` naming the output as the user gave it (here: :attr:`path` is that)."""
        return exc

    # --- writing (with the lock held) ---------------------------------------------------

    def prepare(self) -> None:
        """Create and test-write every folder a run writes, before the first paid call."""
        for name in (*KINDS, JOURNAL_DIR, BATCHES_DIR):
            folder = self.path / name
            probe = folder / f".probe-{os.getpid()}"
            if folder.is_symlink():  # everything the run writes would land where it points
                raise linked(folder)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                os.close(create_new(probe))
                probe.unlink()
            except OSError as exc:
                raise CheckpointError(
                    f"{folder}: cannot write here ({exc.strerror}); nothing was sent: fix the "
                    "permissions or free space, or choose another output directory"
                ) from None
            for tmp in folder.glob(".part-*.tmp"):  # a killed compaction: never complete
                tmp.unlink(missing_ok=True)

    def fold_journal(self) -> int:
        """Compact every journal segment into parts (segments of killed runs); return how many."""
        segments = self.segments()
        for segment in segments:
            self.compact(segment)
        return len(segments)

    def compact(self, segment: Path) -> dict[str, int]:
        """Write a closed segment's rows as parts (unless written already), then remove it."""
        try:
            content = read_segment(segment)
        except JournalFormatError as exc:
            raise CheckpointError(str(exc)) from None
        counts = {}
        for kind in KINDS:
            table = content.table(kind)
            if table is None:
                continue
            counts[kind] = len(table)
            name = f"part-{segment.stem}.parquet"
            if not (self.path / kind / name).exists():
                write_part(self.path / kind, name, table)
        segment.unlink()
        fsync_dir(segment.parent)
        return counts

    def compact_errors(self, run_id: str) -> None:
        """Keep one failure record per row still failed, its latest, in one part.

        The new part is written before the old ones are removed: a kill in between leaves
        duplicates that the next compaction folds, never a loss.
        """
        parts = part_files(self.path, ERRORS_DIR)
        if not parts:
            return
        latest = self.latest_failures().select(ERRORS_SCHEMA.names).cast(ERRORS_SCHEMA)
        if len(parts) == 1 and latest.num_rows == self._rows_in(parts[0]):
            return  # already compact
        if latest.num_rows:
            write_part(self.path / ERRORS_DIR, f"part-{run_id}-compact.parquet", latest)
        for part in parts:
            part.unlink()

    # --- starting over -----------------------------------------------------------------

    def start_fresh(self) -> Path | None:
        """Move an earlier job's files into ``previous-<time>/``: never delete paid results.

        Refused while Batch Mode jobs of the output may still run: moved aside, nobody would
        collect the answers they bill for.
        """
        try:
            chunks = BatchStore(self.path).open_chunks()
        except CheckpointError:  # an unreadable record: --fresh is how one gets past it
            chunks = []
        running = [c for c in chunks if c.state in ("submitting", "submitted")]
        if running:
            shown = ", ".join(c.batch_name or c.display_name for c in running[:3])
            more = f" and {len(running) - 3} more" if len(running) > 3 else ""
            cancel = Option(f"cancel_batches({str(self.path)!r})", f"`batchgen cancel {self.path}`")
            raise CheckpointError(
                f"{self.path}: ", FRESH, f" would abandon {len(running)} Batch Mode job(s) "
                f"still running and billing ({shown}{more}): run without ", FRESH, " to collect "
                "their answers (", cancel, " first to stop them early), then start fresh",
            )  # fmt: skip
        names = (JOB_FILE, RUNS_FILE, JOURNAL_DIR, BATCHES_DIR, *KINDS)
        present = [self.path / n for n in names if (self.path / n).exists()]
        if not present:
            return None
        aside = self.path / f"previous-{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            aside.mkdir()
            for path in present:
                path.rename(aside / path.name)
        except OSError as exc:
            raise CheckpointError(
                f"{self.path}: cannot move the earlier output aside: {exc}"
            ) from None
        return aside
