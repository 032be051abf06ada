"""RateLimits against the emulator's strict rolling window, in simulated time.

The emulator's QuotaWindows counts the requests it accepted in the last 60 s and answers 429
with the time until the oldest leaves. Workers send through RateLimits with a latency per
answer; a virtual clock jumps from one timer to the next, so minutes take a fraction of a
second and every run is the same. The last test adds the automatic concurrency: rows are
dispatched as the controller allows, as a runner would.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
from dataclasses import dataclass, field

import pytest

from batchgen.backends.online.concurrency import concurrency_for
from batchgen.backends.online.rate import RateLimits
from batchgen.emulator.quota import QuotaWindows
from batchgen.emulator.wire import ApiError
from batchgen.job.spec import LimitsSpec
from tests.helpers.clock import VirtualTime

MODEL = "gemini-2.5-flash"


@dataclass
class Limits:
    rpm_limit: int | None
    tpm_limit: int | None = None
    rpd_limit: int | None = None


@dataclass
class Tally:
    """Answers and 429s by the second they were sent."""

    ok: list[float] = field(default_factory=list)
    limited: list[float] = field(default_factory=list)

    def after(self, start: float, end: float) -> tuple[int, int]:
        return (
            sum(start <= t < end for t in self.ok),
            sum(start <= t < end for t in self.limited),
        )


async def simulate(
    quota: int, configured: int, latency: float, workers: int, seconds: float
) -> Tally:
    time = VirtualTime()
    server = QuotaWindows(Limits(rpm_limit=quota))
    limits = RateLimits(configured, clock=time, sleep=time.sleep)
    tally = Tally()

    async def worker() -> None:
        while True:
            sent = await limits.acquire(100)
            try:
                server.admit(MODEL, 100, time.now)
            except ApiError as exc:
                tally.limited.append(time.now)
                delay = float(exc.body()["error"]["details"][-1]["retryDelay"].rstrip("s"))
                limits.rejected(delay, "GenerateRequestsPerMinutePerProjectPerModel", sent, 100)
                await time.sleep(delay)  # the retry policy waits the server's delay
                continue
            tally.ok.append(time.now)
            await time.sleep(latency)
            await limits.settle(100, 100, 100, sent_at=sent)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await time.run_until(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return tally


@pytest.mark.parametrize("latency", [0.05, 2.0, 10.0])
async def test_at_twice_the_quota_it_settles_just_under_it(latency: float) -> None:
    quota, seconds = 600, 240.0  # the first minute, then two cycles of climbing to the limit
    workers = int(2 * quota / 60 * latency * 1.3) + 4  # enough to send at twice the quota
    tally = await simulate(quota, 2 * quota, latency, workers, seconds)
    ok, limited = tally.after(60, seconds)
    achieved = ok / (seconds - 60) * 60 / quota
    assert limited / (ok + limited) <= 0.01
    assert achieved >= 0.97


class EveryCallWindow:
    """A gateway's strict window: every call enters it, refused ones too; the 429 says only
    ``Retry-After`` in whole seconds, or nothing, and never which quota."""

    def __init__(self, quota: int, retry_after: bool) -> None:
        self.quota, self.retry_after = quota, retry_after
        self.arrivals: collections.deque[float] = collections.deque()

    def refuse(self, now: float) -> float | None:
        """Seconds the 429 asks to wait, or None if the call is admitted."""
        while self.arrivals and self.arrivals[0] <= now - 60:
            self.arrivals.popleft()
        full = len(self.arrivals) >= self.quota
        self.arrivals.append(now)
        if not full:
            return None
        return max(1, math.ceil(self.arrivals[0] + 60 - now)) if self.retry_after else 0


@pytest.mark.parametrize("retry_after", [True, False])
async def test_a_window_that_counts_refused_calls_settles_as_close_to_its_quota(
    retry_after: bool,
) -> None:
    quota, latency, seconds = 600, 1.0, 240.0
    time = VirtualTime()
    server = EveryCallWindow(quota, retry_after)
    limits = RateLimits(2 * quota, clock=time, sleep=time.sleep)
    tally = Tally()

    async def worker() -> None:
        while True:
            sent = await limits.acquire(100)
            delay = server.refuse(time.now)
            if delay is not None:
                tally.limited.append(time.now)
                limits.rejected(float(delay) if delay else None, None, sent, 100)
                await time.sleep(delay or 1.0)  # the retry policy's wait when none is given
                continue
            tally.ok.append(time.now)
            await time.sleep(latency)
            await limits.settle(100, 100, 100, sent_at=sent)

    tasks = [asyncio.create_task(worker()) for _ in range(int(2 * quota / 60 * latency * 1.3) + 4)]
    await time.run_until(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ok, limited = tally.after(60, seconds)
    assert limited / (ok + limited) <= 0.01
    assert ok / (seconds - 60) * 60 / quota >= 0.97


async def test_at_the_quota_it_never_sees_a_429() -> None:
    tally = await simulate(600, 600, 2.0, 30, 180.0)
    ok, limited = tally.after(0, 180)
    assert limited == 0 and ok / 3 / 600 >= 0.98


async def dispatch(quota: int, median: float, seconds: float) -> tuple[Tally, int]:
    """Rows dispatched as concurrency_for(job defaults) allows, each answered after a lognormal
    latency (sigma 0.4); returns the tally and the most calls in flight."""
    time = VirtualTime()
    server = QuotaWindows(Limits(rpm_limit=quota))
    limits = RateLimits(quota, clock=time, sleep=time.sleep)
    controller = concurrency_for(LimitsSpec(), limits)
    dice = random.Random(11)
    tally, rows, most = Tally(), set(), [0]

    async def row(slot: int) -> None:
        try:
            sent = await limits.acquire(100)
            controller.sending(slot)
            try:
                server.admit(MODEL, 100, time.now)
            except ApiError:
                tally.limited.append(time.now)
                return
            tally.ok.append(time.now)
            latency = median * math.exp(0.4 * dice.gauss(0.0, 1.0))
            await time.sleep(latency)
            controller.observe(latency)
            await limits.settle(100, 100, 100, sent_at=sent)
        finally:
            controller.release(slot)

    async def dispatcher() -> None:
        while True:
            slot = await controller.acquire()
            most[0] = max(most[0], controller.in_flight)
            task = asyncio.create_task(row(slot))
            rows.add(task)
            task.add_done_callback(rows.discard)

    main = asyncio.create_task(dispatcher())
    await time.run_until(seconds)
    for task in [main, *rows]:
        task.cancel()
    await asyncio.gather(main, *rows, return_exceptions=True)
    return tally, most[0]


@pytest.mark.parametrize(("median", "ramp"), [(0.5, 20.0), (10.0, 40.0), (30.0, 90.0)])
async def test_automatic_concurrency_fills_the_quota_at_any_latency(
    median: float, ramp: float
) -> None:
    quota, seconds = 600, ramp + 90
    tally, most = await dispatch(quota, median, seconds)
    ok, limited = tally.after(ramp, seconds)
    assert limited == 0
    assert ok / (seconds - ramp) * 60 / quota >= 0.95
    # no runaway: the target is rate x the slowest tenth (1.67 x the median) x 1.2
    assert most <= 2 * quota / 60 * median * 1.67 * 1.2 + 8
