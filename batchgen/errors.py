"""The exception tree. ``str(exc)`` is the one line the user reads.

::

    BatchgenError        anything batchgen reports to the user (exit code 2 unless noted)
    ├─ JobError          bad job file or option: names the file and the key
    ├─ InputError        unreadable input, missing column: names the file, row and column
    ├─ TemplateError     a placeholder the row lacks, or a broken template
    ├─ CheckpointError   the output directory cannot be used as it is
    ├─ FatalApiError     the run cannot go on: bad key, unknown model, every call refused
    │                     alike (a proxy's own refusal), a base URL that does not relay the
    │                     Files API Batch Mode needs (exit code 3)
    ├─ RunStoppedError        stopped early, resumable: a signal, an unreachable API, an outage,
    │  │                       the time budget, rows left (exit code 4)
    │  ├─ QuotaExhaustedError a per-day quota is used up: try again tomorrow (exit code 5)
    │  ├─ BudgetReachedError  max_cost (--max-cost) is reached (exit code 6)
    │  └─ BatchPendingError   --no-wait: batches submitted and still running server-side; a
    │                          later run collects them (exit code 75, sysexits' EX_TEMPFAIL)
    └─ InternalError     a bug in batchgen stopped the run; what was answered is saved (exit 70)

``BatchgenWarning`` (a ``UserWarning``) is a note that does not stop anything: a key stripped of
the newline a copy from a file left on it.

Errors that end a run after it started carry its ``summary`` (what was done and flushed).

Failures of single rows are not exceptions that reach the user: they become failure records.
A message quoting another library's text (pyarrow's spans several lines) goes through
:func:`one_line`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Surface = Literal["library", "cli"]


@dataclass(frozen=True)
class Option:
    """A setting named in a message, as each surface names it: ``offline=True``, ``--offline``."""

    library: str
    cli: str


OFFLINE = Option("offline=True", "--offline")
FRESH = Option("fresh=True", "--fresh")
MAX_COST = Option("max_cost", "--max-cost")
PRICES = Option("prices=", "--prices FILE")
INPUT = Option("input=", "--input")


class BatchgenError(Exception):
    """Base of every error batchgen reports to the user.

    A message is text and :class:`Option` parts: ``str(exc)`` names the library's parameters,
    :meth:`worded` ``("cli")`` the command line's flags, so each surface speaks its own words.
    """

    exit_code = 2
    summary: Any = None  # the RunSummary when a started run ends with this error

    def __init__(self, *parts: str | Option) -> None:
        super().__init__(*parts)
        self.parts = parts

    def __str__(self) -> str:
        return self.worded("library")

    def worded(self, surface: Surface) -> str:
        """The message in the words of ``surface``."""
        return "".join(p if isinstance(p, str) else getattr(p, surface) for p in self.parts)


class BatchgenWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as one
    ``warning:`` line); ``str()`` is that line."""


class JobError(BatchgenError):
    """The job file or a command-line option is wrong."""


class InputError(BatchgenError):
    """The input file cannot be read as the job expects."""


class TemplateError(BatchgenError):
    """A prompt template is broken or refers to a column the row lacks."""


class CheckpointError(BatchgenError):
    """The output directory cannot be used as it is."""


class FatalApiError(BatchgenError):
    """The API (or a proxy before it) refused in a way that no other row can fix: a bad key, an
    unknown model, the same refusal on every call, Batch Mode without the Files API."""

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


def one_line(exc: BaseException | str) -> str:
    """A message (an exception's) on one line (pyarrow's span several), control characters
    shown as escapes so that the terminal prints what the message says."""
    if isinstance(exc, str):
        text = exc
    else:
        strerror = getattr(exc, "strerror", None) if isinstance(exc, OSError) else None
        text = strerror or str(exc) or type(exc).__name__
    words = " ".join(text.split())
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in words)
