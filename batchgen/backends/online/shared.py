"""One quota for many processes: the run's rate limits kept in one place, handed out in leases.

When the calls are made by several processes (the Ray engine's workers,
:mod:`batchgen.run.ray_engine`), the quota still belongs to the project: requests and tokens per
minute, the adaptive rate, the day's count and the pause a 429 asks for must be one, or the real
rate is the limit times the workers. :class:`QuotaKeeper` holds them (the same
:class:`~batchgen.backends.online.rate.RateLimits` and
:class:`~batchgen.backends.online.daily.DailyQuota` a local run uses), in one process (a Ray
actor); :class:`SharedLimits` is what each worker's calls pass instead of their own limits.

A worker does not ask once per call: it asks for a *lease*, up to a fraction of a second's worth
of turns at once, each turn a time on the keeper's schedule (the leaky bucket's virtual
scheduling hands out turns in advance without sleeping). So the keeper answers a few calls a
second per worker whatever the rate. A 429 is told to the keeper at once: it pauses everyone for
the server's delay, steps the rate down and starts a new *epoch*; turns of an older epoch are void,
and a worker learns of the new one at its next lease (within a lease's span) or when it reports.
What the answers teach (the real prompt tokens, and any shortfall to pay) rides on the next lease.
A worker whose breaker opens says so (:class:`TellingBreaker`): until it closes, only that worker
gets turns, for its probes, and the others wait rather than spend their calls on the outage.
Times are wall-clock (``time.time``): the keeper and the workers may be on different machines.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from batchgen.backends.online.breaker import Breaker
from batchgen.backends.online.daily import DailyQuota
from batchgen.backends.online.rate import AdaptiveRate, PromptRatio, RateLimits, Sleep
from batchgen.backends.online.retry import RowDeadline
from batchgen.errors import QuotaExhaustedError

__all__ = ["Lease", "LeaseAsk", "QuotaKeeper", "SharedLimits", "TellingBreaker"]

LEASE_SECONDS = 0.5  # a lease spans at most this much of the whole rate (and at least one turn)
OUTAGE_RETRY = 1.0  # seconds a worker waits to ask again while another's breaker is open
OUTAGE_HOLD = 150.0  # an open breaker's worker that asks nothing this long is taken for dead
# (it probes at least every minute: breaker.MAX_PROBE_SECONDS)


@dataclass(frozen=True)
class LeaseAsk:
    """A worker's request for turns, with what its answers taught since its last one."""

    turns: int  # how many it would use now
    tokens: int  # estimated prompt tokens per turn
    extra_tokens: int = 0  # real minus charged prompt tokens of the answers since
    ratio: float | None = None  # real / estimated prompt tokens, as the worker learnt it
    worker: str = ""  # who asks (the worker whose breaker is open probes; the others wait)


@dataclass(frozen=True)
class Lease:
    """Turns granted: the wall-clock time each may be sent, in the keeper's ``epoch``."""

    times: tuple[float, ...]
    epoch: int
    exhausted: str | None = None  # the day's quota is spent: the error's message
    wait: float = 0.0  # no turns: another worker's breaker is open; ask again after this


@dataclass
class QuotaKeeper:
    """The run's limits, kept once for every worker (inside one Ray actor)."""

    requests_per_minute: float
    tokens_per_minute: float | None = None
    per_day: int | None = None
    used_today: int = 0
    clock: Callable[[], float] = time.time
    limits: RateLimits = field(init=False)
    day: DailyQuota = field(init=False)
    granted: int = 0  # turns handed out, for the figures
    outage_by: str | None = None  # the worker whose breaker is open: only its probes go
    outage_until: float = 0.0  # ... until then, unless it says so again (a dead worker's ends)
    outages: int = 0

    def __post_init__(self) -> None:
        self.limits = RateLimits(self.requests_per_minute, self.tokens_per_minute, self.clock)
        self.day = DailyQuota(self.per_day, self.used_today)

    @property
    def epoch(self) -> int:
        """Turns handed out before the latest 429 pause or outage are void."""
        return self.limits.pauses + self.outages

    def outage(self, worker: str, opened: bool) -> int:
        """A worker's breaker opened (``opened``) or closed; return the epoch.

        While one worker's breaker is open, only that worker gets turns (for its probes): the
        others would spend their calls, and their rows' attempts, on the same outage.
        """
        now = self.clock()
        if opened and (self.outage_by is None or now >= self.outage_until):
            self.outage_by, self.outage_until = worker, now + OUTAGE_HOLD
            self.outages += 1
        elif not opened and worker == self.outage_by:
            self.outage_by = None
        return self.epoch

    def lease(self, ask: LeaseAsk) -> Lease:
        """Hand out up to ``ask.turns`` turns (at most a lease's span of the whole rate)."""
        lim = self.limits
        lim.learnt(ask.ratio, ask.extra_tokens)
        if self.outage_by is not None:
            now = self.clock()
            if ask.worker == self.outage_by:
                self.outage_until = now + OUTAGE_HOLD  # still probing
            elif now < self.outage_until:
                return Lease((), self.epoch, wait=OUTAGE_RETRY)
            else:
                self.outage_by = None  # it went quiet: its process died
        turns = min(ask.turns, max(1, math.floor(lim.per_second() * LEASE_SECONDS)))
        if self.day.per_day is not None:
            turns = min(turns, self.day.per_day - self.day.used)
            if turns <= 0:
                return Lease((), self.epoch, str(self.day.exhausted()))
            self.day.spend(turns)
        self.granted += turns
        return Lease(tuple(lim.turn(ask.tokens) for _ in range(turns)), self.epoch)

    def rejected(self, delay: float | None, quota: str | None, sent_at: float, charged: int) -> int:
        """A worker's call got a 429: pause everyone, step down; return the new epoch."""
        self.limits.rejected(delay, quota, sent_at, charged)
        return self.epoch


LeaseCall = Callable[[LeaseAsk], Awaitable[Lease]]
RejectCall = Callable[[float | None, str | None, float, int], Awaitable[int]]
OutageCall = Callable[[str, bool], Awaitable[int]]


class TellingBreaker(Breaker):
    """A worker's :class:`Breaker` that tells ``told(opened)`` when it opens and closes (so
    the keeper can hold the other workers back; its probes and its stop stay its own)."""

    def __init__(self, told: Callable[[bool], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._told = told

    def _open(self) -> None:
        super()._open()
        self._told(True)

    def _close(self) -> None:
        was = self.state
        super()._close()
        if was != "closed":
            self._told(False)


class SharedLimits:
    """A worker's side of the keeper: what :class:`~batchgen.backends.online.caller.Pacing` and
    :class:`~batchgen.backends.online.caller.RowCaller` use in place of a local ``RateLimits``."""

    def __init__(
        self,
        lease: LeaseCall,
        reject: RejectCall,
        requests_per_minute: float,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        outage: OutageCall | None = None,
        worker: str = "",
    ) -> None:
        self._lease, self._reject, self._outage = lease, reject, outage
        self.worker = worker
        self._clock, self._sleep = clock, sleep
        self.requests = AdaptiveRate(requests_per_minute, clock)  # for per_second(): configured
        self.tokens: AdaptiveRate | None = None
        self._turns: deque[tuple[float, int]] = deque()  # (when, prompt tokens it was charged)
        self._epoch = 0
        self._waiting = 0
        self._asking: asyncio.Lock | None = None
        self.ratio = PromptRatio()
        self._extra = 0
        self._tokens = 0.0
        self.rejections = 0

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def sleep(self) -> Sleep:
        return self._sleep

    def estimate(self, estimated_tokens: int) -> int:
        return self.ratio.estimate(estimated_tokens)

    def per_second(self) -> float:
        return self.requests.rate / 60

    async def acquire(self, tokens: int, deadline: RowDeadline | None = None) -> float:
        """Wait for a turn of the current epoch; return when the call is sent."""
        self._tokens = 0.95 * self._tokens + 0.05 * tokens if self._tokens else float(tokens)
        self._waiting += 1
        try:
            while True:
                at, charged, epoch = await self._next(deadline)
                if deadline is not None and at >= deadline.at:
                    why = "after a 429, the server asked every call to wait"
                    raise deadline.passed(why, self._clock(), at - self._clock())
                if (wait := at - self._clock()) > 0:
                    await self._sleep(wait)
                if epoch == self._epoch:  # no 429 meanwhile: the turn stands
                    self._extra += tokens - charged  # the keeper charged the average
                    return self._clock()
        finally:
            self._waiting -= 1

    async def _next(self, deadline: RowDeadline | None) -> tuple[float, int, int]:
        """This worker's next turn, asking the keeper for a lease when it has none."""
        if self._asking is None:
            self._asking = asyncio.Lock()
        async with self._asking:
            while not self._turns:
                tokens = round(self._tokens)
                ask = LeaseAsk(
                    max(1, self._waiting), tokens, self._extra, self.ratio.value, self.worker
                )
                self._extra = 0
                lease = await self._lease(ask)
                if lease.exhausted is not None:
                    raise QuotaExhaustedError(lease.exhausted)
                self._new_epoch(lease.epoch)
                self._turns.extend((at, tokens) for at in lease.times)
                if lease.wait:  # another worker's breaker is open: wait for its probes
                    if deadline is not None and self._clock() + lease.wait >= deadline.at:
                        why = (
                            "the API fails every call (an outage: batchgen is waiting to probe it)"
                        )
                        raise deadline.passed(why, self._clock())
                    await self._sleep(lease.wait)
            at, charged = self._turns.popleft()
            return at, charged, self._epoch

    def breaker_changed(self, opened: bool) -> None:
        """This worker's breaker opened or closed: tell the keeper (see :class:`TellingBreaker`)."""
        if self._outage is not None:
            task = asyncio.ensure_future(self._outage(self.worker, opened))
            task.add_done_callback(self._told)

    def _new_epoch(self, epoch: int) -> None:
        if epoch > self._epoch:
            self._epoch = epoch
            self._turns.clear()  # turns handed out before the pause are void

    async def settle(
        self, estimated: int, charged: int, actual: int, sent_at: float | None = None
    ) -> None:
        """Learn the real prompt tokens; the shortfall is paid with the next lease."""
        self.ratio.learn(estimated, actual)
        self._extra += actual - charged

    def rejected(
        self, delay: float | None, quota: str | None, sent_at: float | None = None, charged: int = 0
    ) -> None:
        """A 429: tell the keeper now (everyone pauses); this worker's turns are void."""
        self.rejections += 1
        self._turns.clear()
        self._epoch = -1  # until the keeper's answer: turns in hand no longer stand
        task = asyncio.ensure_future(self._reject(delay, quota, sent_at or self._clock(), charged))
        task.add_done_callback(self._told)

    def _told(self, task: asyncio.Future[int]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._new_epoch(task.result())
