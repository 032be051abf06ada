"""Server-side rate limits of the emulator: sliding windows per model on an injected clock.

The real API limits requests per minute, input tokens per minute and requests per day, per
project and model (docs/gemini-api.md §5). Here each is a sliding window (60 s, 60 s, 24 h) over the
requests admitted so far; a refused request does not enter any window. The 429 carries the
time until the window frees enough room, which is what a well-behaved client waits.

That is the strict model of a rolling window: only accepted requests count, and once the window
holds the limit, the 429 says how long until the oldest accepted request leaves it. A client
that bursts is answered with the same burst a minute later, as the burst leaves the window.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from batchgen.emulator.replies import quota_error

__all__ = ["Limits", "QuotaWindows"]

MINUTE = 60.0
DAY = 86400.0

_Events = deque[tuple[float, int]]  # (admitted at, input tokens), oldest first


class Limits(Protocol):
    """The three limits, as EmulatorConfig carries them."""

    rpm_limit: int | None
    tpm_limit: int | None
    rpd_limit: int | None


class QuotaWindows:
    """Admits or refuses requests against rpm / tpm / rpd limits (None: no limit).

    The limits are read from the config object at every call, so a test or a benchmark may
    change them while the server runs.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._minute: dict[str, _Events] = {}
        self._day: dict[str, _Events] = {}

    def admit(self, model: str, tokens: int, now: float) -> None:
        """Record the request, or raise the 429 ApiError of the first limit it breaks."""
        rpm, tpm, rpd = self.limits.rpm_limit, self.limits.tpm_limit, self.limits.rpd_limit
        day = _window(self._day, model, now - DAY) if rpd is not None else None
        if day is not None and rpd is not None and len(day) >= rpd:
            delay = _wait(day, len(day) + 1 - rpd, now, DAY, count=True)
            raise quota_error(model, "rpd", rpd, delay)
        minute = None
        if rpm is not None or tpm is not None:
            minute = _window(self._minute, model, now - MINUTE)
            if rpm is not None and len(minute) >= rpm:
                delay = _wait(minute, len(minute) + 1 - rpm, now, MINUTE, count=True)
                raise quota_error(model, "rpm", rpm, delay)
            used = sum(n for _, n in minute)
            if tpm is not None and used + tokens > tpm:
                delay = _wait(minute, used + tokens - tpm, now, MINUTE, count=False)
                raise quota_error(model, "tpm", tpm, delay)
        for events in (day, minute):
            if events is not None:
                events.append((now, tokens))


def _window(windows: dict[str, _Events], model: str, cutoff: float) -> _Events:
    """The model's window with entries at or before ``cutoff`` dropped."""
    events = windows.setdefault(model, deque())
    while events and events[0][0] <= cutoff:
        events.popleft()
    return events


def _wait(events: _Events, excess: int, now: float, span: float, count: bool) -> float:
    """Seconds until enough of the oldest entries leave the window to free ``excess``."""
    freed = 0
    for at, tokens in events:
        freed += 1 if count else tokens
        if freed >= excess:
            return at + span - now
    # More than the whole limit at once: no wait is enough; a full window is the honest hint.
    return span
