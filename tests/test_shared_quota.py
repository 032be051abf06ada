"""One quota for many workers (backends/online/shared.py), on a virtual clock: the turns every
worker gets add up to the limit, not the limit times the workers; a 429 one worker sees pauses
all of them; the day's count is one; leases stay small."""

from __future__ import annotations

import asyncio

import pytest

from batchgen.backends.online.shared import (
    LEASE_SECONDS,
    OUTAGE_HOLD,
    Lease,
    LeaseAsk,
    QuotaKeeper,
    SharedLimits,
)
from batchgen.errors import QuotaExhaustedError
from tests.helpers.clock import Clock, VirtualTime


def _workers(keeper: QuotaKeeper, clock: VirtualTime, n: int) -> list[SharedLimits]:
    async def lease(ask: LeaseAsk) -> Lease:
        return keeper.lease(ask)

    async def reject(delay: float | None, quota: str | None, at: float, charged: int) -> int:
        return keeper.rejected(delay, quota, at, charged)

    rpm = keeper.requests_per_minute
    return [SharedLimits(lease, reject, rpm, clock, clock.sleep) for _ in range(n)]


async def _send(limits: SharedLimits, sent: list[tuple[int, float]], who: int) -> None:
    while True:
        sent.append((who, await limits.acquire(100)))


async def test_workers_together_keep_to_one_limit() -> None:
    clock = VirtualTime()
    keeper = QuotaKeeper(600, clock=clock)
    sent: list[tuple[int, float]] = []
    workers = _workers(keeper, clock, 3)
    tasks = [
        asyncio.create_task(_send(w, sent, i)) for i, w in enumerate(workers) for _ in range(8)
    ]
    await clock.run_until(120.0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for start in range(0, 60, 5):  # every sliding minute within the limit
        assert sum(start <= t < start + 60 for _, t in sent) <= 600
    assert sum(60 <= t < 120 for _, t in sent) >= 0.97 * 600  # and near it
    assert {who for who, _ in sent} == {0, 1, 2}  # every worker had turns


async def test_a_429_one_worker_sees_pauses_every_worker() -> None:
    clock = VirtualTime()
    keeper = QuotaKeeper(600, clock=clock)
    sent: list[tuple[int, float]] = []
    a, b = _workers(keeper, clock, 2)
    tasks = [asyncio.create_task(_send(w, sent, i)) for i, w in enumerate((a, b)) for _ in range(4)]
    await clock.run_until(10.0)
    a.rejected(5.0, None, sent_at=clock.now - 0.5)
    await clock.run_until(10.0)  # the keeper hears of it
    paused_at = clock.now
    await clock.run_until(30.0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    after = [t for who, t in sent if t > paused_at]
    # turns already in another worker's hand go within a lease's span; then nobody sends
    late = [t for t in after if paused_at + LEASE_SECONDS < t < paused_at + 5.0 - 1e-9]
    assert after and late == []
    assert len([t for t in after if t < paused_at + 5.0]) <= 5  # at most a lease's turns
    assert keeper.limits.requests.rate < 600  # and the one rate stepped down


def test_a_lease_spans_half_a_second_of_the_rate_and_the_day_counts_once() -> None:
    clock = Clock(1000.0)
    keeper = QuotaKeeper(600, per_day=12, used_today=0, clock=clock)
    first = keeper.lease(LeaseAsk(turns=100, tokens=10))
    assert len(first.times) == 5  # 10 a second, half a second's worth
    assert all(b > a for a, b in zip(first.times, first.times[1:], strict=False))
    assert len(keeper.lease(LeaseAsk(turns=100, tokens=10)).times) == 5
    assert len(keeper.lease(LeaseAsk(turns=100, tokens=10)).times) == 2  # the day's last two
    spent = keeper.lease(LeaseAsk(turns=1, tokens=10))
    assert spent.times == () and spent.exhausted is not None
    assert "12 of 12 requests" in spent.exhausted


async def test_a_worker_told_the_day_is_spent_raises_the_run_s_error() -> None:
    clock = VirtualTime()
    keeper = QuotaKeeper(600, per_day=1, clock=clock)
    (worker,) = _workers(keeper, clock, 1)
    task = asyncio.ensure_future(worker.acquire(10))
    await clock.run_until(1.0)
    await task
    with pytest.raises(QuotaExhaustedError, match="requests_per_day"):
        await worker.acquire(10)


def test_while_one_worker_s_breaker_is_open_only_its_probes_get_turns() -> None:
    clock = Clock(1000.0)
    keeper = QuotaKeeper(600, clock=clock)
    keeper.outage("a", opened=True)
    held = keeper.lease(LeaseAsk(turns=3, tokens=10, worker="b"))
    assert held.times == () and held.wait > 0  # b waits, and asks again
    assert len(keeper.lease(LeaseAsk(turns=1, tokens=10, worker="a")).times) == 1  # a probes
    keeper.outage("a", opened=False)  # the probe succeeded
    assert len(keeper.lease(LeaseAsk(turns=3, tokens=10, worker="b")).times) == 3
    keeper.outage("a", opened=True)
    clock.now += OUTAGE_HOLD  # a said nothing since: its process is gone
    assert len(keeper.lease(LeaseAsk(turns=3, tokens=10, worker="b")).times) == 3
