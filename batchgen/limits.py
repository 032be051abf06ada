"""Client-side limits: requests and input tokens per minute, adapted when the server says 429.

Both limits are aiolimiter leaky buckets that start full and allow a burst of half a second's
worth after a lull, so that no 60-second window holds more than the limit (the API counts in
sliding windows). A request acquires one
request and its *estimated* prompt tokens; the estimate (characters / 4) is corrected by the
ratio of real to estimated tokens seen so far, and any shortfall is paid when the answer tells
the real count.

When the server still answers 429 (the configured limit is too high, or someone else shares the
quota), every worker pauses for the server's delay and the rate steps down — to just under what
the server accepted over the last minute when we were near its limit, else by a factor — then
climbs back by 1% of the configured rate per minute: additive increase, multiplicative decrease.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from zoneinfo import ZoneInfo

from aiolimiter import AsyncLimiter

from batchgen.errors import QuotaExhaustedError
from batchgen.job import LimitsSpec

BURST_SECONDS = 0.5  # how much of a minute's budget may go out at once
DECREASE = 0.7  # rate factor after a 429, when the accepted rate tells nothing
INCREASE_PER_MINUTE = 0.01  # share of the configured rate regained per minute without 429s
FLOOR = 0.02  # never below this share of the configured rate
SETTLE = 0.97  # after a 429, aim this far below what the server accepted


class AdaptiveRate:
    """The AIMD controller for one per-minute limit, on an injectable clock."""

    def __init__(self, configured: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.configured = configured
        self.rate = configured
        self._clock = clock
        # what the server accepted in the last 60 s, per second: [second, amount] (at most 61)
        self._accepted: deque[list[float]] = deque()
        self._accepted_sum = 0.0
        self._last_increase = clock()
        self.quiet_until = 0.0  # 429s before this belong to a burst already answered

    def accepted(self, amount: float = 1.0) -> None:
        """The server accepted ``amount`` (a request, or its prompt tokens)."""
        now = self._clock()
        second = float(int(now))
        if self._accepted and self._accepted[-1][0] == second:
            self._accepted[-1][1] += amount
        else:
            self._accepted.append([second, amount])
        self._accepted_sum += amount
        self._trim(now)
        minutes = (now - self._last_increase) / 60
        if minutes >= 1 / 60:  # at most once a second
            step = self.configured * INCREASE_PER_MINUTE * minutes
            self.rate = min(self.configured, self.rate + step)
            self._last_increase = now

    def rejected(self, delay: float) -> bool:
        """The server said 429 with this delay; return whether the rate stepped down."""
        now = self._clock()
        if now < self.quiet_until:
            return False
        self._trim(now)
        observed = self._accepted_sum  # what the server took over the last minute
        if observed >= 0.5 * self.rate:  # we were near the server's limit: it showed us the limit
            lower = min(self.rate, observed) * SETTLE
        else:
            lower = self.rate * DECREASE
        self.rate = max(self.configured * FLOOR, lower)
        self.quiet_until = now + max(delay, 1.0)
        self._last_increase = now + delay
        return True

    def _trim(self, now: float) -> None:
        while self._accepted and self._accepted[0][0] < now - 61:
            self._accepted_sum -= self._accepted.popleft()[1]


def _bucket(per_minute: float) -> AsyncLimiter:
    burst = max(1.0, per_minute / 60 * BURST_SECONDS)
    return AsyncLimiter(burst, burst * 60 / per_minute)


def _set_rate(limiter: AsyncLimiter, per_minute: float) -> None:
    """Change a leaky bucket's drip rate in place (aiolimiter reads it on every leak)."""
    limiter.time_period = limiter.max_rate * 60 / per_minute
    limiter._rate_per_sec = per_minute / 60  # aiolimiter has no setter for the rate


class RateLimits:
    """Requests per minute and optional input tokens per minute for one run."""

    def __init__(
        self,
        requests_per_minute: float,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.requests = AdaptiveRate(requests_per_minute, clock)
        self._request_bucket = _bucket(requests_per_minute)
        self.tokens = AdaptiveRate(tokens_per_minute, clock) if tokens_per_minute else None
        self._token_bucket = _bucket(tokens_per_minute) if tokens_per_minute else None
        self._ratio = 1.0  # real / estimated prompt tokens, learnt from answers
        self._paused_until = 0.0
        self._primed = False
        self.rejections = 0

    def estimate(self, estimated_tokens: int) -> int:
        """The raw estimate corrected by what answers have shown so far."""
        return max(1, round(estimated_tokens * self._ratio))

    async def acquire(self, tokens: int) -> None:
        """Wait out any pause, then for a request slot and ``tokens`` prompt tokens."""
        if not self._primed:
            await self._prime()
        while (wait := self._paused_until - self._clock()) > 0:
            await asyncio.sleep(wait)
        await self._request_bucket.acquire()
        if self._token_bucket is not None:
            await self._token_bucket.acquire(min(tokens, self._token_bucket.max_rate))

    async def _prime(self) -> None:
        """Start the buckets full: a burst at the start would put the first sliding window
        over the limit by the burst (and earn as many 429s at its end)."""
        self._primed = True
        for bucket in (self._request_bucket, self._token_bucket):
            if bucket is not None and bucket.max_rate > 1:
                await bucket.acquire(bucket.max_rate - 1)

    async def settle(self, estimated: int, charged: int, actual: int) -> None:
        """Learn from an answer's real prompt tokens; pay any shortfall to the token bucket.

        ``estimated`` is the raw estimate, ``charged`` what :meth:`acquire` took.
        """
        self.requests.accepted()
        if actual > 0 and estimated > 0:
            self._ratio = 0.9 * self._ratio + 0.1 * (actual / estimated)
        if self.tokens is not None and self._token_bucket is not None:
            self.tokens.accepted(actual)
            extra = actual - charged
            if extra > 0:
                await self._token_bucket.acquire(min(extra, self._token_bucket.max_rate))
        self._apply()

    def rejected(self, delay: float | None, quota: str | None) -> None:
        """A 429: pause everyone for the server's delay and step the limited rate down."""
        self.rejections += 1
        delay = 1.0 if delay is None else delay
        self._paused_until = max(self._paused_until, self._clock() + delay)
        on_tokens = quota is not None and "Token" in quota
        target = self.tokens if on_tokens and self.tokens is not None else self.requests
        target.rejected(delay)
        self._apply()

    def _apply(self) -> None:
        _set_rate(self._request_bucket, self.requests.rate)
        if self.tokens is not None and self._token_bucket is not None:
            _set_rate(self._token_bucket, self.tokens.rate)


# --- how many calls in flight ----------------------------------------------------------------

AUTO_START = 8  # calls in flight before anything is known about the latency
HEADROOM = 1.2  # above rate x latency, so that a slow spell does not starve the limiter
PERCENTILE = 0.9  # of the latencies, so that the slow tail is covered too
LATENCY_WINDOW = 256  # completed calls remembered: the recent past, in bounded memory
REFRESH_SECONDS = 0.25  # the target is recomputed at most this often, and waiters look again


class ConcurrencyController:
    """How many calls may be in flight: Little's law, L = lambda x W.

    To keep up the allowed request rate (lambda, per second) when each call takes W seconds,
    lambda x W calls must be in flight. W is the 90th percentile of the latencies of the last
    completed calls, times a headroom; the target starts at ``start`` and is capped by ``cap``.
    Calls still in flight count too, with the time they have taken so far: the slow calls of a
    first wave (or after the latency jumps) have not completed yet, and waiting for them to
    complete before the target grows would starve the limiter for a whole latency. Since the
    in-flight calls have ages spread up to the latency, the target runs ahead of what is in
    flight while the rate limiter, not the latency, is what should hold calls back.

    ``pinned`` fixes the target (an integer ``limits.concurrency``). Use::

        async with controller.slot():
            ...  # one call; then controller.observe(latency_seconds)
    """

    def __init__(
        self,
        rate: Callable[[], float],
        cap: int = 2048,
        pinned: int | None = None,
        start: int = AUTO_START,
        headroom: float = HEADROOM,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate  # allowed requests per second, read at each refresh
        self.cap = max(1, pinned if pinned is not None else cap)
        self.pinned = pinned
        self.start = start
        self.headroom = headroom
        self._clock = clock
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._started: dict[int, float] = {}  # slot id -> when it was taken, oldest first
        self._ids = itertools.count()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._target = min(self.cap, start if pinned is None else pinned)
        self._refreshed = -math.inf

    @property
    def in_flight(self) -> int:
        return len(self._started)

    @property
    def target(self) -> int:
        """Calls that may be in flight now (read before each dispatch)."""
        now = self._clock()
        if self.pinned is None and now - self._refreshed >= REFRESH_SECONDS:
            self._refreshed = now
            self._target = self._compute(now)
        return self._target

    def latency(self) -> float | None:
        """The latency the target is built on: the high percentile of recent calls (s)."""
        return _percentile(list(self._latencies), PERCENTILE) if self._latencies else None

    def observe(self, latency_s: float) -> None:
        """One call completed after ``latency_s`` seconds."""
        self._latencies.append(latency_s)
        if len(self._latencies) <= AUTO_START:  # the first answers: look again at once
            self._refreshed = -math.inf
        self._wake()

    def _compute(self, now: float) -> int:
        ages = [now - at for at in self._started.values()]  # oldest first
        aged = _percentile(ages, PERCENTILE) if ages else 0.0
        latency = max(self.latency() or 0.0, aged)
        if latency <= 0:
            return min(self.cap, self.start) if not self._latencies else 1
        wanted = math.ceil(self._rate() * latency * self.headroom)
        return max(1, min(self.cap, wanted))

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``target`` places in flight for the duration of a call."""
        slot = await self.acquire()
        try:
            yield
        finally:
            self.release(slot)

    async def acquire(self) -> int:
        """Wait until fewer than ``target`` calls are in flight; return the slot's id."""
        if self._waiters or self.in_flight >= self.target:
            await self._wait_for_room()
        slot = next(self._ids)
        self._started[slot] = self._clock()
        return slot

    def release(self, slot: int) -> None:
        """The call in ``slot`` is over (answered, failed or cancelled)."""
        self._started.pop(slot, None)
        self._wake()

    async def _wait_for_room(self) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            while self.in_flight >= self.target:
                if waiter.done():  # woken, but another call took the room first
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                # a timeout, not only a wake-up: the target also grows with the calls' ages
                await asyncio.wait((waiter,), timeout=REFRESH_SECONDS)
        finally:
            if not waiter.done():
                waiter.cancel()  # _wake skips it
            self._wake()  # pass on a wake-up this waiter will not use

    def _wake(self) -> None:
        room = self.target - self.in_flight
        while room > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1


def _percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def connection_limit(limits: LimitsSpec) -> int:
    """The HTTP connection pool's size: room for every call the controller may let through.

    aiohttp's TCPConnector allows 100 connections unless told otherwise, which would hold an
    automatic concurrency of several hundred to 100 calls in flight.
    """
    return limits.concurrency if not limits.auto_concurrency else limits.max_concurrency


# --- requests per day --------------------------------------------------------------------------

PACIFIC = ZoneInfo("America/Los_Angeles")  # where the API's per-day quotas reset at midnight


class DailyQuota:
    """Counts requests per Pacific day against ``limits.requests_per_day``.

    The API resets per-day quotas at midnight Pacific time, so the count starts again then, and
    a run that stops on it (exit 5) can resume the next day. ``clock`` gives the current time as
    an aware datetime; ``used`` is what earlier runs spent on the day of ``used_on``.
    """

    def __init__(
        self,
        per_day: int | None,
        used: int = 0,
        used_on: datetime | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.per_day = per_day
        self._clock = clock
        self._day = self.today()
        same_day = used_on is None or used_on.astimezone(PACIFIC).date() == self._day
        self.used = used if same_day else 0

    def today(self) -> date:
        """The Pacific calendar day now."""
        return self._clock().astimezone(PACIFIC).date()

    def allows(self, requests: int = 1) -> bool:
        """Whether ``requests`` more fit in today's quota (always, without a quota)."""
        self._roll()
        return self.per_day is None or self.used + requests <= self.per_day

    def spend(self, requests: int = 1) -> None:
        """Count requests sent (call right before sending, after :meth:`allows`)."""
        self._roll()
        self.used += requests

    def resets_at(self) -> datetime:
        """The next midnight Pacific, when the count starts again (aware, in UTC)."""
        midnight = datetime.combine(self.today() + timedelta(days=1), dt_time(), PACIFIC)
        return midnight.astimezone(UTC)

    def exhausted(self) -> QuotaExhaustedError:
        """The error that stops the run (exit 5) once :meth:`allows` says no."""
        resets = self.resets_at().strftime("%Y-%m-%d %H:%M UTC")
        return QuotaExhaustedError(
            f"limits.requests_per_day: {self.used:,} of {self.per_day:,} requests sent on "
            f"{self._day} (Pacific time); the quota resets at midnight Pacific ({resets}): "
            "rerun then to resume"
        )

    def _roll(self) -> None:
        today = self.today()
        if today != self._day:
            self._day, self.used = today, 0
