"""When a run stops and why: signals, the time budget, an unreachable API, errors.

The first reason given is the one reported. Stopping is in two steps: ``halt`` stops taking
rows (the calls in flight may finish, within the grace period); ``cancel_calls`` ends the calls
in flight. Every path that stops a run goes through here, so a run never ends without a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from batchgen.errors import BatchgenError, FatalApiError, InternalError, RunStoppedError
from batchgen.redact import url_host

# calls that reached nothing: no server answered (a timeout is the breaker's, see TransportWatch)
TRANSPORT_CATEGORIES = frozenset({"connection"})
# calls that failed before leaving this machine (out of file descriptors): they say nothing
# about the server, so they neither count towards "unreachable" nor end a streak of it
LOCAL_CATEGORIES = frozenset({"open_files"})


class StopControl:
    """Holds the reason a run stops and the means to stop it."""

    def __init__(
        self, out: Path, grace: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.out = out
        self.grace = grace
        self.clock = clock
        self.reason: BatchgenError | None = None
        self.by: str | None = None
        self.stopping = asyncio.Event()
        self.calls: set[asyncio.Task[Any]] = set()  # cancelled by cancel_calls
        self._timers: list[asyncio.TimerHandle] = []
        self._signals = 0

    def halt(self, reason: BatchgenError, by: str) -> None:
        """Stop taking rows; the first reason given is the one reported."""
        if self.reason is None:
            self.reason = reason
            self.by = by
        self.stopping.set()

    def cancel_calls(self) -> None:
        """End the calls in flight now (only ever after a reason to stop was given)."""
        assert self.reason is not None, "calls cancelled without a reason to stop"
        for task in self.calls:
            task.cancel()

    def fail(self, reason: BatchgenError, by: str) -> None:
        """Stop at once: halt and cancel the calls in flight."""
        self.halt(reason, by)
        self.cancel_calls()

    def track(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Let :meth:`cancel_calls` end ``task`` while it runs (a call, or what dispatches them)."""
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)
        return task

    async def guard(self, name: str, body: Coroutine[Any, Any, None]) -> None:
        """Run a task's body; an error no other part handled stops the run with one line."""
        try:
            await body
        except asyncio.CancelledError:
            raise
        except BatchgenError as exc:
            self.fail(exc, name)
        except Exception as exc:  # a bug: say so in one line, keep what was answered
            self.fail(
                InternalError(
                    f"{self.out}: internal error in the {name}: {type(exc).__name__}: "
                    f"{exc}; results so far are saved; rerun to resume (and please report this)"
                ),
                "internal",
            )

    def end(self) -> None:
        """The work is over: a late timer must not stop it."""
        for timer in self._timers:
            timer.cancel()

    # --- the time budget --------------------------------------------------------------

    def watch_time_budget(self, budget: float | None, started: float) -> None:
        """Stop taking rows a grace period before the budget ends; end the calls at its end."""
        if budget is None:
            return
        left = budget - (self.clock() - started)
        grace = min(self.grace, budget / 4)
        loop = asyncio.get_running_loop()
        stop = RunStoppedError(
            f"{self.out}: the time budget of {budget:g} s is used up; results so far are "
            "saved: the next run resumes"
        )
        self._timers.append(loop.call_later(max(0.0, left - grace), self.halt, stop, "time_budget"))
        # the calls still in flight then end just before the budget does, leaving time to flush
        end = loop.call_later(max(0.0, left - min(1.0, grace / 4)), self.cancel_calls)
        self._timers.append(end)

    # --- signals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def signal_handlers(self, install: bool) -> Iterator[None]:
        """SIGINT/SIGTERM stop the run cleanly while the block runs (when ``install``)."""
        loop = asyncio.get_running_loop()
        installed = {}
        for sig in (signal.SIGINT, signal.SIGTERM) if install else ():
            try:
                previous = signal.getsignal(sig)
                loop.add_signal_handler(sig, self.on_signal, sig)
                installed[sig] = previous
            except (RuntimeError, ValueError):  # not the main thread: the caller handles signals
                pass
        try:
            yield
        finally:
            for sig, previous in installed.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous)  # the caller's own (the CLI's), not the default

    def on_signal(self, sig: signal.Signals) -> None:
        """The first signal stops taking rows; a second, or the grace period, ends the calls."""
        self._signals += 1
        if self._signals > 1:
            self.cancel_calls()
            return
        self.halt(
            RunStoppedError(
                f"{self.out}: stopped by {sig.name}: results so far are saved; "
                "rerun the same command to resume"
            ),
            "signal",
        )
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.grace, self.cancel_calls))


class TransportWatch:
    """Stops the run when the last calls all reached nothing, or were all redirected.

    It counts calls, not rows. A refused or dropped connection means no server answered at all (a
    wrong ``base_url``, no network): waiting helps little, so the run stops after ``after`` such
    calls in a row (exit 4). Every call redirected (a 3xx, never followed) means ``base_url`` is
    wrong. 5xx answers and timeouts mean a server that is there but failing: that is an outage, left
    to :class:`~batchgen.backends.online.breaker.Breaker`, which pauses and probes instead of
    stopping.
    """

    def __init__(self, stop: StopControl, where: str, after: int) -> None:
        self.stop = stop
        self.where = where
        self.after = after
        self.failures = 0

    def saw(self, category: str | None, message: str | None) -> None:
        """One call's outcome: None when it reached a server that answered."""
        if category in LOCAL_CATEGORIES:
            return
        if category not in TRANSPORT_CATEGORIES and category != "redirect":
            self.failures = 0
            return
        self.failures += 1
        if self.failures < self.after:
            return
        what = "redirected elsewhere" if category == "redirect" else "unreachable"
        self.stop.halt(
            RunStoppedError(
                f"{self.where}: {what} ({self.failures} calls in a row failed: {message}); "
                "rerun to resume"
            ),
            "unreachable",
        )


GOOGLE_API_HOST = "generativelanguage.googleapis.com"


class RefusalWatch:
    """Stops the run when the last calls were all refused alike: a setting, not the rows.

    A client error (4xx, but a 429) is normally this row's own bad request, data for its failure
    record. The same status and message on ``after`` calls in a row, with no answer among them, is
    something every row gets: a proxy refusing the key it was given ("No connected db."), a
    budget at the proxy used up. Sending the rest would only record each row as failed, so the
    run stops taking rows (the calls in flight end) with exit 3; the rows not sent stay for the
    next run, and those refused are in ``errors/`` and are retried by it. It watches only until
    the first call is answered: after that, the same 4xx on many rows is those rows' own (a run
    of oversized rows, say), and stopping would meet them again on every rerun.
    """

    def __init__(self, stop: StopControl, base_url: str, where: str, after: int) -> None:
        self.stop = stop
        self.base_url = base_url
        self.where = where
        self.after = after
        self.failures = 0
        self._last: tuple[int, str] | None = None
        self.armed = True

    def answered(self) -> None:
        """A call was answered: the API takes this key, so refusals from now on are the rows'."""
        self.armed = False

    def saw(self, status: int | None, message: str | None) -> None:
        """One call's outcome: its HTTP status (None when it got no answer) and message."""
        if not self.armed or status is None or not 400 <= status < 500 or status == 429:
            self.failures = 0
            self._last = None
            return
        seen = (status, message or "")
        self.failures = self.failures + 1 if seen == self._last else 1
        self._last = seen
        if self.failures >= self.after:
            self.stop.halt(FatalApiError(self._words(status, message or "")), "refused")

    def _words(self, status: int, message: str) -> str:
        said = message if message.startswith(f"HTTP {status}") else f"HTTP {status}: {message}"
        proxy = (
            ""
            if url_host(self.base_url) == GOOGLE_API_HOST
            else f"; model.base_url is a proxy, not {GOOGLE_API_HOST}: the refusal is likely "
            "its own, and the key it wants may be the proxy's, not a Gemini key"
        )
        return (
            f"{self.where}: the last {self.failures} calls were all refused alike ({said}), so "
            f"no row can succeed as set up{proxy}; fix the key or model.base_url, then rerun: "
            "rows not sent were not paid for, and the next run takes them and those refused"
        )
