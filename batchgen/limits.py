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
import time
from collections import deque
from collections.abc import Callable

from aiolimiter import AsyncLimiter

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
