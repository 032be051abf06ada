"""The exception tree. ``str(exc)`` is the one line the user reads.

::

    BatchgenError        anything batchgen reports to the user (exit code 2 unless noted)
    ├─ JobError          bad job file or option: names the file and the key
    ├─ InputError        unreadable input, missing column: names the file, row and column
    ├─ TemplateError     a placeholder the row lacks, or a broken template
    ├─ CheckpointError   the output directory cannot be used as it is
    ├─ FatalApiError     the run cannot go on: bad key, unknown model (exit code 3)
    ├─ RunStoppedError        stopped early, resumable: a signal, an unreachable API, an outage,
    │  │                       the time budget, rows left (exit code 4)
    │  ├─ QuotaExhaustedError a per-day quota is used up: try again tomorrow (exit code 5)
    │  ├─ BudgetReachedError  max_cost (--max-cost) is reached (exit code 6)
    │  └─ BatchPendingError   --no-wait: batches submitted and still running server-side; a
    │                          later run collects them (exit code 75, sysexits' EX_TEMPFAIL)
    └─ InternalError     a bug in batchgen stopped the run; what was answered is saved (exit 70)

Errors that end a run after it started carry its ``summary`` (what was done and flushed).

Failures of single rows are not exceptions that reach the user: they become failure records.
A message quoting another library's text (pyarrow's spans several lines) goes through
:func:`one_line`.
"""

from __future__ import annotations

from typing import Any


class BatchgenError(Exception):
    """Base of every error batchgen reports to the user."""

    exit_code = 2
    summary: Any = None  # the RunSummary when a started run ends with this error


class JobError(BatchgenError):
    """The job file or a command-line option is wrong."""


class InputError(BatchgenError):
    """The input file cannot be read as the job expects."""


class TemplateError(BatchgenError):
    """A prompt template is broken or refers to a column the row lacks."""


class CheckpointError(BatchgenError):
    """The output directory cannot be used as it is."""


class FatalApiError(BatchgenError):
    """The API refused in a way that no other row can fix (bad key, unknown model)."""

    exit_code = 3


class RunStoppedError(BatchgenError):
    """The run stopped before the end, with everything done so far flushed; rerun to resume."""

    exit_code = 4


class QuotaExhaustedError(RunStoppedError):
    """A per-day quota is used up: retrying before it resets only burns requests."""

    exit_code = 5


class BudgetReachedError(RunStoppedError):
    """``max_cost`` (``--max-cost``) is reached; the run stopped with everything so far saved."""

    exit_code = 6


class BatchPendingError(RunStoppedError):
    """``--no-wait``: the rows are in Batch Mode jobs that have not ended; run again to collect.

    75 is sysexits' EX_TEMPFAIL ("try again later"), so cron wrappers can tell "pending" from
    a failure.
    """

    exit_code = 75


class InternalError(BatchgenError):
    """A bug in batchgen stopped the run; everything answered so far is saved."""

    exit_code = 70


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (pyarrow's span several), control characters shown
    as escapes so that the terminal prints what the message says."""
    text = getattr(exc, "strerror", None) if isinstance(exc, OSError) else None
    words = " ".join((text or str(exc) or type(exc).__name__).split())
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in words)
