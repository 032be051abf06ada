"""A circuit breaker for outages: stop sending while the server fails every call.

A proxy that has withdrawn a model, or an API having an outage, answers every call with a 5xx
(or not at all). Retrying each row on its own then spends every row's attempts on an outage:
60 rows became 300 failed calls. The breaker watches calls as a whole instead::

    closed --THRESHOLD server-side failures in a row, no success--> open
    open   --probe due (5 s, doubling to 60 s)--> one probe call in flight
    probe  --success--> closed        probe --failure--> open, the next probe later
    open for retry.outage_minutes --> RunStoppedError (exit 4): cron reruns the job later

Only failures that say nothing about the request count: 5xx, timeouts, dropped connections. A
429, a 400 or an answer that failed validation proves the server is up and ends a streak, as a
success does. A success ends a streak only if its call was sent after the streak began: the
answers to calls sent before an outage keep coming for a whole latency (up to a minute) after
it began, and must not hide it.

The threshold is a count, not a share of the concurrency: each failed call past it is a call
spent on the outage, and a 503 storm answers at once, so a threshold of twice a concurrency of
a thousand would spend two thousand calls before pausing. Ten failures in a row with no
success among calls sent meanwhile is not chance at any error rate worth sending into.

Decisions read an injected clock (:meth:`Breaker.poll`), so tests step time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from batchgen.errors import RunStoppedError
from batchgen.records import Outage

__all__ = ["Breaker", "State"]

THRESHOLD = 10  # server-side failures in a row that open the breaker
FIRST_PROBE_SECONDS = 5.0
MAX_PROBE_SECONDS = 60.0

State = Literal["closed", "open", "probing"]
Sleep = Callable[[float], Awaitable[Any]]


class Breaker:
    """Admits calls while the server works; pauses them and probes while it does not.

    Ask right before each call is sent, after the rate limiter's turn (waiting here spends no
    attempt); a dispatcher waits for :meth:`wait_closed` before it takes a new row::

        sent = await limits.acquire(tokens)
        if await breaker.admit():          # it waited: the limiter's turn is stale
            sent = await limits.acquire(tokens)
        ...                                # the call
        breaker.record(ok, server_side, sent)

    Asked before the limiter instead, the calls queued at the limiter when it opens would all
    still go out into the outage. Both waits raise RunStoppedError after ``outage_minutes``.
    """

    def __init__(
        self,
        outage_minutes: float = 10.0,
        threshold: int = THRESHOLD,
        where: str = "the API",
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.outage_seconds = outage_minutes * 60
        self.threshold = threshold
        self.where = where
        self._clock = clock
        self._sleep = sleep
        self.state: State = "closed"
        self.failures = 0  # server-side failures in a row
        self._streak_began: float | None = None  # when the first of them was sent
        self._opened_at = 0.0
        self._probe_at = 0.0  # when the next probe may go
        self._probe_sent = 0.0  # when the probe in flight went
        self._interval = FIRST_PROBE_SECONDS
        self._last_error = ""
        self.probes = 0  # probes sent, for run records
        self._changed = asyncio.Event()  # set (and replaced) when waiters should look again

    def poll(self, probe: bool = True) -> float | None:
        """What the next call should do now: None to go, else seconds to wait.

        Going while open makes the caller the probe (unless ``probe`` is false: then only a
        closed breaker lets it go). Raises RunStoppedError once the breaker has been open for
        ``outage_minutes``.
        """
        if self.state == "closed":
            return None
        now = self._clock()
        if now - self._opened_at >= self.outage_seconds:
            raise self.outage()
        if probe and self.state == "open" and now >= self._probe_at:
            self.state = "probing"
            self.probes += 1
            self._probe_sent = now
            return None
        limit = self._opened_at + self.outage_seconds - now
        if probe and self.state == "open":
            return max(0.0, min(self._probe_at - now, limit))
        return limit

    async def admit(self) -> bool:
        """Return once a call may go (perhaps as the probe): whether it had to wait."""
        waited = False
        while (wait := self.poll()) is not None:
            waited = True
            await self._wait(wait)
        return waited

    async def wait_closed(self) -> None:
        """Return once the breaker is closed, never as the probe (for taking new rows)."""
        while (wait := self.poll(probe=False)) is not None:
            await self._wait(wait)

    def record(self, success: bool, server_side: bool, sent_at: float | None = None) -> bool:
        """One call's outcome; return whether a failure should spend the row's attempt.

        ``server_side``: the failure was a 5xx, a timeout or a dropped connection.
        ``sent_at``: when the call was sent, on this breaker's clock (None: now).
        """
        sent = self._clock() if sent_at is None else sent_at
        if success or not server_side:
            # an answer to a call sent before the streak began says nothing about now
            if self._streak_began is None or sent >= self._streak_began:
                self._close()
            return True
        if self._streak_began is None:
            self._streak_began = sent
        self.failures += 1
        if self.state == "probing" and sent >= self._probe_sent:
            self._reopen()
        elif self.state == "closed" and self.failures >= self.threshold:
            self._open()
        return self.state == "closed"  # failures during an outage spend no attempt

    def note(self, message: str) -> None:
        """The last failure's one-line description, for the outage message."""
        self._last_error = message

    def showing(self) -> Outage | None:
        """The outage while the breaker is not closed (since when, the last error, the next
        probe), for progress; None while it is closed."""
        if self.state == "closed":
            return None
        now = self._clock()
        since = datetime.now(UTC) - timedelta(seconds=max(0.0, now - self._opened_at))
        probe = max(0.0, self._probe_at - now) if self.state == "open" else None
        return Outage(since, self._last_error, probe, self.probes)

    def outage(self) -> RunStoppedError:
        """The error that stops the run once the breaker has been open too long."""
        minutes = self.outage_seconds / 60
        last = f" (last: {self._last_error})" if self._last_error else ""
        return RunStoppedError(
            f"{self.where}: every call failed server-side for {minutes:g} minutes{last}, "
            f"{self.probes} probes included; rerun later to resume"
        )

    def _open(self) -> None:
        now = self._clock()
        self.state = "open"
        self._opened_at = now
        self._interval = FIRST_PROBE_SECONDS
        self._probe_at = now + self._interval

    def _reopen(self) -> None:
        """A probe failed: wait twice as long (up to a minute) for the next one."""
        self.state = "open"
        self._interval = min(MAX_PROBE_SECONDS, self._interval * 2)
        self._probe_at = self._clock() + self._interval
        self._signal()

    def _close(self) -> None:
        was = self.state
        self.state = "closed"
        self.failures = 0
        self._streak_began = None
        if was != "closed":
            self._signal()

    def _signal(self) -> None:
        """Wake every waiter to look again (the next probe's time, or go)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the breaker closes meanwhile."""
        closed = asyncio.ensure_future(self._changed.wait())
        timer = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait((closed, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            timer.cancel()
