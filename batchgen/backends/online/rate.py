"""The client-side request rate, and its adaptation to 429s.

Requests per minute and input tokens per minute are each a leaky bucket owned here,
on an injectable clock: it starts full and allows a burst of half a second's worth after a
lull. The API counts in sliding 60-second windows, so the bucket drains at the rate that keeps
a burst *and* the full pace after it within the limit: ``limit / (60 s + burst)``, times a
margin for network jitter. (Draining at ``limit / 60 s``, a burst after the ramp of a slow run
put the first full window over the limit by the burst, and earned as many 429s.) A request
takes one request and its *estimated* prompt tokens; the estimate (characters / 4) is corrected
by the ratio of real to estimated tokens seen so far, and any shortfall is paid when the answer
tells the real count.

When the server still answers 429 (the configured limit is too high, or someone else shares the
quota), every request pauses for the server's delay and the rate steps down — to where the bucket
sends 98% of what the server accepted over the last minute when we were near its limit, else by
a factor — then climbs back by 1% of the configured rate per minute, and a quarter as fast once
it sends more than 99.5% of the limit the server last showed: additive increase, multiplicative
decrease, and a slow probe past the last known limit (TCP CUBIC's plateau, in a line), so that a
run configured above its quota spends its minutes just under it rather than climbing into the
next wave of 429s. (Stepping to 97% of the *rate*, the bucket's own margin came on top: it sent
96% of the quota and climbed back into a wave every two minutes; 0.95 of the quota, live.)
Two details make this converge under a strict rolling window (the server counts the requests it
accepted in the last 60 s, and its 429 says when the oldest leaves):

- What the server accepted is counted at the time each request was *sent*, which is when the
  server counted it; counted when the answer came, it would lag a whole latency behind, and
  at a latency of 10 s the step down would land a sixth below the limit.
- A pause restarts the buckets full, and requests that were waiting take new turns: a bucket
  that filled up during the pause, or turns handed out before it, would send a burst into a
  window that frees only as fast as it filled a minute ago, and earn as many 429s.
- A step down goes to just under what the server showed it takes, never under our own rate
  again: a 429 while we already send below that pauses but does not step. And what the server
  showed stands for a minute after the step (plus its delay): a window that counts the calls
  it refused too (a gateway's) still holds the wave that earned the step, and answers 429s
  again when the pause ends (each second, if it sends no delay) until that wave has left it.
  Stepping on each, the rate fell by 3% a second, to 0.42 of the quota after the first minute.

How many calls may be in flight is :mod:`batchgen.backends.online.concurrency`'s; requests per
day are counted in :mod:`batchgen.backends.online.daily`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from batchgen.backends.online.retry import RowDeadline

BURST_SECONDS = 0.5  # how much of a minute's budget may go out at once
DECREASE = 0.7  # rate factor after a 429, when the accepted rate tells nothing
INCREASE_PER_MINUTE = 0.01  # share of the configured rate regained per minute without 429s
FLOOR = 0.02  # never below this share of the configured rate
SETTLE = 0.98  # after a 429, aim this far below what the server accepted
SLOT_SECONDS = 0.25  # what the server took is kept per quarter of a second
NEAR = 0.995  # past this share of the limit the server last showed, probe ...
PROBE = 0.25  # ... at this share of the climb
MARGIN = 0.995  # send this share of the rate: at exactly the limit, milliseconds of network
# jitter put one request of a window into the next and earn a 429

PACE = MARGIN * 60 / (60 + BURST_SECONDS)  # what a bucket sends a minute, per unit of its rate

Sleep = Callable[[float], Awaitable[Any]]


class AdaptiveRate:
    """The AIMD controller for one per-minute limit, on an injectable clock."""

    def __init__(self, configured: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.configured = configured
        self.rate = configured
        self._clock = clock
        # what the server took over the last minute, by when it was sent: a ring of slots
        slots = round(60 / SLOT_SECONDS) + 2
        self._slots = [-1] * slots
        self._amounts = [0.0] * slots
        self._last_increase = clock()
        self.quiet_until = 0.0  # 429s before this belong to a burst already answered
        # what the server took in the minute before the last step down, and until when that
        # stands: a window that counts refused calls too still holds the wave until it ends
        self._shown = 0.0
        self._shown_until = 0.0
        self._ceiling = 0.0  # what the server took when it last said no (requests a minute)

    def accepted(self, amount: float = 1.0, sent_at: float | None = None) -> None:
        """The server took ``amount`` (a request, or prompt tokens) sent at ``sent_at``.

        Count a request when it is sent, since the server counts it when it arrives, and take
        it back (a negative amount) if it is refused: counted when answered, it would lag a
        whole latency behind.
        """
        now = self._clock()
        slot = int((now if sent_at is None else sent_at) / SLOT_SECONDS)
        index = slot % len(self._slots)
        if self._slots[index] != slot:
            if self._slots[index] > slot:
                return  # older than the ring: long out of the window
            self._slots[index], self._amounts[index] = slot, 0.0
        self._amounts[index] += amount
        minutes = (now - self._last_increase) / 60
        if minutes >= 1 / 60:  # at most once a second
            step = self.configured * INCREASE_PER_MINUTE * minutes
            if self._ceiling and self.rate * PACE >= self._ceiling * NEAR:
                step *= PROBE  # past where the server said no last time: probe slowly
            self.rate = min(self.configured, self.rate + step)
            self._last_increase = now

    def observed(self) -> float:
        """What the server took of what was sent over the last minute."""
        oldest = int((self._clock() - 60) / SLOT_SECONDS)
        return sum(a for s, a in zip(self._slots, self._amounts, strict=True) if s >= oldest)

    def rejected(self, delay: float) -> bool:
        """The server said 429 with this delay; return whether the rate stepped down."""
        now = self._clock()
        if now < self.quiet_until:
            return False
        observed = self.observed()
        if now < self._shown_until and self._shown > observed:
            observed = self._shown  # the wave of the last step down is still in the window
        elif observed >= 0.5 * self.rate:
            self._shown, self._shown_until = observed, now + 60 + max(delay, 1.0)
        if observed >= 0.5 * self.rate:  # we were near the server's limit: it showed us the limit
            self._ceiling = observed
            lower = min(self.rate, observed * SETTLE / PACE)  # already under: pause, no step
        else:
            lower = self.rate * DECREASE
        before, self.rate = self.rate, max(self.configured * FLOOR, lower)
        self.quiet_until = now + max(delay, 1.0)
        self._last_increase = now + delay
        return self.rate < before


class Bucket:
    """A leaky bucket on an injected clock, handing out turns in order (virtual scheduling).

    ``level`` drains at ``per_minute / 60`` a second; taking an amount adds it, and the taker
    waits until the level is back within ``capacity``. It starts full: a burst at the start
    would put the first sliding window over the limit by the burst (and earn as many 429s at
    its end).
    """

    def __init__(self, per_minute: float, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.per_second = _pace(per_minute)
        self.capacity = max(1.0, self.per_second * BURST_SECONDS)
        self.level = self.capacity
        self._at = clock()

    def set_rate(self, per_minute: float) -> None:
        self._drain()
        self.per_second = _pace(per_minute)

    def take(self, amount: float) -> float:
        """Take ``amount`` (at most the capacity); return the seconds to wait before sending."""
        self._drain()
        self.level += min(amount, self.capacity)
        return max(0.0, (self.level - self.capacity) / self.per_second)

    def restart(self, at: float) -> None:
        """Full at ``at`` (the end of a pause), every turn handed out before forgotten."""
        self.level, self._at = self.capacity, at

    def _drain(self) -> None:
        now = self._clock()
        if now > self._at:
            self.level = max(0.0, self.level - (now - self._at) * self.per_second)
            self._at = now


def _pace(per_minute: float) -> float:
    """The drain rate (per second) at which a burst plus a minute at that rate stays within
    ``MARGIN`` of ``per_minute``: any 60 s window then holds at most the limit."""
    return per_minute * PACE / 60


class PromptRatio:
    """Real ÷ estimated prompt tokens, learnt from answers (a moving average), and the estimate
    it corrects; ``value`` is shared as is between processes (the Ray engine's leases)."""

    def __init__(self) -> None:
        self.value = 1.0

    def estimate(self, estimated_tokens: int) -> int:
        """The raw estimate corrected by what answers have shown so far."""
        return max(1, round(estimated_tokens * self.value))

    def learn(self, estimated: int, actual: int) -> None:
        if actual > 0 and estimated > 0:
            self.value = 0.9 * self.value + 0.1 * (actual / estimated)


class RateLimits:
    """Requests per minute and optional input tokens per minute for one run."""

    def __init__(
        self,
        requests_per_minute: float,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.requests = AdaptiveRate(requests_per_minute, clock)
        self._request_bucket = Bucket(requests_per_minute, clock)
        self.tokens = AdaptiveRate(tokens_per_minute, clock) if tokens_per_minute else None
        self._token_bucket = Bucket(tokens_per_minute, clock) if tokens_per_minute else None
        self.ratio = PromptRatio()
        self._tokens_per_request = 0.0  # charged, on average (for the allowed request rate)
        self._paused_until = 0.0
        self._pauses = 0  # turns taken before the latest pause are void
        self._primed = False
        self.rejections = 0

    @property
    def clock(self) -> Callable[[], float]:
        """The run's clock, which the concurrency controller shares."""
        return self._clock

    @property
    def sleep(self) -> Sleep:
        """The run's sleep, which the concurrency controller shares."""
        return self._sleep

    def estimate(self, estimated_tokens: int) -> int:
        """The raw estimate corrected by what answers have shown so far."""
        return self.ratio.estimate(estimated_tokens)

    def per_second(self) -> float:
        """The request rate the limits allow now, per second (for the concurrency target)."""
        rate = self.requests.rate / 60
        if self.tokens is not None and self._tokens_per_request > 0:
            rate = min(rate, self.tokens.rate / 60 / self._tokens_per_request)
        return rate

    async def acquire(self, tokens: int, deadline: RowDeadline | None = None) -> float:
        """Wait out any pause, then for a request's turn and ``tokens`` prompt tokens.

        Returns the time it was sent (the clock's), for :meth:`settle`. Raises DeadlineError
        rather than wait out a pause that ends past the row's ``deadline``.
        """
        self._tokens_per_request = 0.95 * self._tokens_per_request + 0.05 * tokens
        if not self._primed:  # full from the first request, however long the checks took
            self._primed = True
            self._restart(self._clock())
        while True:
            while (wait := self._paused_until - self._clock()) > 0:
                if deadline is not None and self._paused_until >= deadline.at:
                    why = "after a 429, the server asked every call to wait"
                    raise deadline.passed(why, self._clock(), wait)
                await self._sleep(wait)
            pauses = self._pauses
            wait = self._request_bucket.take(1)
            if self._token_bucket is not None:
                wait = max(wait, self._token_bucket.take(tokens))
            if wait > 0:
                await self._sleep(wait)
            if pauses == self._pauses:  # no 429 meanwhile: the turn stands
                sent = self._clock()
                self.requests.accepted(1, sent)
                if self.tokens is not None:
                    self.tokens.accepted(tokens, sent)
                return sent

    async def settle(
        self, estimated: int, charged: int, actual: int, sent_at: float | None = None
    ) -> None:
        """Learn from an answer's real prompt tokens; pay any shortfall to the token bucket.

        ``estimated`` is the raw estimate, ``charged`` what :meth:`acquire` took and
        ``sent_at`` what it returned.
        """
        self.ratio.learn(estimated, actual)
        if self.tokens is not None and self._token_bucket is not None:
            self.tokens.accepted(actual - charged, sent_at)  # charged was counted when sent
            extra = actual - charged
            if extra > 0:
                await self._sleep(self._token_bucket.take(extra))
        self._apply()

    @property
    def pauses(self) -> int:
        """429 pauses so far: a turn handed out before the latest one is void."""
        return self._pauses

    def turn(self, tokens: int) -> float:
        """The next turn on the buckets' schedule, without waiting: when it may be sent (the
        clock's), counted as taken then. For turns handed out to other processes
        (:mod:`batchgen.backends.online.shared`); :meth:`acquire` is this, waited out."""
        self._tokens_per_request = 0.95 * self._tokens_per_request + 0.05 * tokens
        start = max(self._clock(), self._paused_until)  # the buckets restart at its end
        wait = self._request_bucket.take(1)
        if self._token_bucket is not None:
            wait = max(wait, self._token_bucket.take(tokens))
        at = start + wait
        self.requests.accepted(1, at)
        if self.tokens is not None:
            self.tokens.accepted(tokens, at)
        return at

    def learnt(self, ratio: float | None, extra_tokens: int) -> None:
        """What another process's answers taught: the real / estimated prompt tokens, and
        prompt tokens sent beyond what their turns were charged (paid to the token bucket)."""
        if ratio is not None:
            self.ratio.value = ratio
        if extra_tokens and self.tokens is not None and self._token_bucket is not None:
            self.tokens.accepted(extra_tokens)
            self._token_bucket.take(extra_tokens)

    def rejected(
        self,
        delay: float | None,
        quota: str | None,
        sent_at: float | None = None,
        charged: int = 0,
    ) -> None:
        """A 429: pause everyone for the server's delay and step the limited rate down.

        ``sent_at`` and ``charged``: what :meth:`acquire` returned and took, to take back what
        :meth:`acquire` counted as taken by the server.
        """
        self.rejections += 1
        if sent_at is not None:
            self.requests.accepted(-1, sent_at)
            if self.tokens is not None:
                self.tokens.accepted(-charged, sent_at)
        delay = 1.0 if delay is None else delay
        self._paused_until = max(self._paused_until, self._clock() + delay)
        on_tokens = quota is not None and "Token" in quota
        target = self.tokens if on_tokens and self.tokens is not None else self.requests
        target.rejected(delay)
        self._pauses += 1
        self._restart(self._paused_until)
        self._apply()

    def _restart(self, at: float) -> None:
        for bucket in (self._request_bucket, self._token_bucket):
            if bucket is not None:
                bucket.restart(at)

    def _apply(self) -> None:
        self._request_bucket.set_rate(self.requests.rate)
        if self.tokens is not None and self._token_bucket is not None:
            self._token_bucket.set_rate(self.tokens.rate)
