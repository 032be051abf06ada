"""How many calls may be in flight: automatic concurrency by Little's law, or a pinned number.

The target follows the request rate that :class:`~batchgen.backends.online.rate.RateLimits`
allows now, times the latency of recent calls (see :class:`ConcurrencyController`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from batchgen.backends.online.descriptors import FileRoom
from batchgen.backends.online.rate import RateLimits, Sleep
from batchgen.job.spec import LimitsSpec

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

        async with controller.slot() as slot:
            await limits.acquire(tokens)
            controller.sending(slot)
            ...  # the call; then controller.observe(latency_seconds)

    or, cheaper than a large pool of waiting workers, one dispatcher that takes a slot and then
    starts the row's task, which releases it (only the dispatcher waits, and polls the target
    four times a second)::

        slot = await controller.acquire()
        task = asyncio.create_task(row(work, slot))  # sending(slot) ... release(slot)
    """

    def __init__(
        self,
        rate: Callable[[], float],
        cap: int = 2048,
        pinned: int | None = None,
        start: int = AUTO_START,
        headroom: float = HEADROOM,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        capped: Callable[[], None] | None = None,
    ) -> None:
        self._rate = rate  # allowed requests per second, read at each refresh
        self._capped = capped  # told once, when ``cap`` first holds the target down
        self.cap = max(1, pinned if pinned is not None else cap)
        self.pinned = pinned
        self.start = start
        self.headroom = headroom
        self._clock = clock
        self._sleep = sleep
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._held: dict[int, float | None] = {}  # slot id -> when its call was sent
        self._ids = itertools.count()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._target = min(self.cap, start if pinned is None else pinned)
        self._refreshed = -math.inf

    @property
    def in_flight(self) -> int:
        return len(self._held)

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
        ages = [now - at for at in self._held.values() if at is not None]
        aged = _percentile(ages, PERCENTILE) if ages else 0.0
        latency = max(self.latency() or 0.0, aged)
        if latency <= 0:
            return min(self.cap, self.start) if not self._latencies else 1
        wanted = math.ceil(self._rate() * latency * self.headroom)
        if wanted > self.cap and self._capped is not None:
            self._capped()
            self._capped = None
        return max(1, min(self.cap, wanted))

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        """Hold one of the ``target`` places in flight for the duration of a call."""
        slot = await self.acquire()
        try:
            yield slot
        finally:
            self.release(slot)

    async def acquire(self) -> int:
        """Wait until fewer than ``target`` calls are in flight; return the slot's id."""
        if self._waiters or self.in_flight >= self.target:
            await self._wait_for_room()
        slot = next(self._ids)
        self._held[slot] = None
        return slot

    def sending(self, slot: int) -> None:
        """The slot's call goes out now (after the rate limiter): its age counts from here.

        Not from :meth:`acquire`: time spent waiting for the limiter is not latency, and
        counting it would raise the target, which queues more calls at the limiter.
        """
        if slot in self._held:
            self._held[slot] = self._clock()

    def release(self, slot: int) -> None:
        """The call in ``slot`` is over (answered, failed or cancelled)."""
        self._held.pop(slot, None)
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
                timer = asyncio.ensure_future(self._sleep(REFRESH_SECONDS))
                try:
                    await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    timer.cancel()
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


def concurrency_for(
    spec: LimitsSpec,
    limits: RateLimits,
    room: FileRoom | None = None,
    note: Callable[[str], None] | None = None,
) -> ConcurrencyController:
    """The run's controller: "auto" follows the limits' allowed rate; an integer pins it.

    Either way, at most the connections ``room`` leaves under the open-file limit: when that
    holds the calls in flight lower than asked (a pinned number at once; "auto" when it first
    wants more), ``note`` is told so, once. It reads the limits' clock and sleeps their sleep:
    one clock for a run's time-dependent parts.
    """
    cap, pinned = spec.max_concurrency, spec.pinned
    capped: Callable[[], None] | None = None
    if room is not None and room.connections < spec.most_in_flight:
        cap = min(cap, room.connections)
        capped = _say(room, note)
        if pinned is not None:
            capped()
            pinned, capped = room.connections, None
    return ConcurrencyController(
        limits.per_second,
        cap=cap,
        pinned=pinned,
        clock=limits.clock,
        sleep=limits.sleep,
        capped=capped,
    )


def _say(room: FileRoom, note: Callable[[str], None] | None) -> Callable[[], None]:
    def capped() -> None:
        if note is not None:
            note(room.note())

    return capped


def connection_limit(limits: LimitsSpec, room: FileRoom | None = None) -> int:
    """The HTTP connection pool's size: room for every call the controller may let through
    (within the open-file limit's ``room``).

    aiohttp's TCPConnector allows 100 connections unless told otherwise, which would hold an
    automatic concurrency of several hundred to 100 calls in flight.
    """
    most = limits.most_in_flight
    return most if room is None else min(most, room.connections)
