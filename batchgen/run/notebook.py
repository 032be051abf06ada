"""Progress for the library: a bar in a notebook, nothing elsewhere unless asked.

``generate``, ``agenerate`` and ``run_file`` take ``progress=``: ``None`` (the default) shows a bar
only inside an IPython kernel (Jupyter, VS Code's notebooks); ``True`` shows one anywhere; ``False``
nothing; a :class:`~batchgen.run.progress.Progress` is used as given. The bar is tqdm's notebook
widget where ipywidgets is installed, else tqdm's text bar (in a notebook, the cell's output), with
the figures the command line's bar shows: rows finished of rows to do, rows/s and ETA, then failed
rows, tokens, cost so far, and what the run waits for. A script, a service or a test stays quiet.

It lives here, below the API that chooses it (the command line's reporters, above the API, are in
:mod:`batchgen.cli.progress`); tqdm is imported only when a bar is made.
"""

from __future__ import annotations

import sys
from typing import Any

from batchgen.errors import JobError
from batchgen.run.progress import NoProgress, Progress, Snapshot

__all__ = ["NotebookProgress", "in_kernel", "library_progress"]


def in_kernel() -> bool:
    """Whether this process is an IPython kernel (a notebook), without importing IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def library_progress(progress: bool | Progress | None) -> Progress:
    """The reporter ``progress=`` asks for (None: a bar only in a notebook)."""
    if progress is None:
        progress = in_kernel()
    if progress is True:
        return NotebookProgress()
    if progress is False:
        return NoProgress()
    if not all(callable(getattr(progress, name, None)) for name in ("update", "close")):
        raise JobError(
            f"progress={progress!r}: give True, False, None (a bar only in a notebook) or an "
            "object with update(snapshot) and close(snapshot)"
        )
    return progress


class NotebookProgress:
    """A tqdm bar: the notebook widget inside a kernel with ipywidgets, else text on stderr."""

    def __init__(self) -> None:
        self._bar: Any = None

    def update(self, snap: Snapshot) -> None:
        if self._bar is None:
            self._bar = _bar_class()(total=snap.rows_todo, unit="row", file=sys.stderr)
        self._bar.set_postfix_str(_figures(snap), refresh=False)
        self._bar.update(snap.rows_done + snap.rows_failed - self._bar.n)

    def close(self, snap: Snapshot) -> None:
        self.update(snap)
        self._bar.close()


def _figures(snap: Snapshot) -> str:
    cost = "unpriced" if snap.cost is None else f"${snap.cost:,.4f}"
    shown = f"failed={snap.rows_failed} tokens={snap.tokens:,} cost={cost}"
    return shown + (f" {snap.note}" if snap.note else "")


def _bar_class() -> Any:
    """tqdm's notebook bar where it can draw (a kernel with ipywidgets), else its text bar."""
    if in_kernel():
        try:
            from tqdm.notebook import IProgress, tqdm_notebook
        except ImportError:  # IPython's display machinery missing: text will do
            pass
        else:
            if IProgress is not None:  # ipywidgets is installed
                return tqdm_notebook
    from tqdm.std import tqdm

    return tqdm
