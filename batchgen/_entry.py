"""The ``batchgen`` command's entry point: signals are handled from the first instant.

Until a run installs its own handlers (and again after it), SIGINT and SIGTERM end the process
with one line and exit code 4, never a traceback: nothing is half written at those moments
(the journal drops a torn tail, a stale lock is taken over by the next run).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

STOPPED = 4  # batchgen.errors.RunStoppedError.exit_code; not imported: that costs start-up time


def _stop(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    sys.stderr.write(f"error: stopped by {name}; nothing more was sent: rerun to resume\n")
    sys.stderr.flush()
    os._exit(STOPPED)


def main() -> None:
    """Install the handlers, then import and run the command line."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    from batchgen.cli import main as cli

    cli()
