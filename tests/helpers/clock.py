"""The one fake clock (and a virtual time for many tasks), for time-dependent tests."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class Clock:
    """A clock that moves only when told: ``clock.now += 5``, or by its own ``sleep``.

    Call it for the time; ``sleep`` lets the time pass at once and keeps what was asked in
    ``slept``, so a sequential caller sees exactly the waits it asked for.
    """

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class VirtualTime:
    """A clock and a sleep for many tasks: time moves to the earliest timer once all wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), next(self._order), future))
        await future

    async def run_until(self, end: float) -> None:
        while True:
            for _ in range(5):  # let every task go on until it sleeps (nested tasks take turns)
                await asyncio.sleep(0)
            if not self._timers or self._timers[0][0] > end:
                return
            when, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not future.done():  # a sleep cancelled meanwhile
                future.set_result(None)
