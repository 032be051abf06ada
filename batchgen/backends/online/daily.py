"""Requests per Pacific day against ``limits.requests_per_day``.

The API's per-day quotas reset at midnight Pacific time (America/Los_Angeles, so 08:00 UTC in
winter and 07:00 UTC in summer; see ai.google.dev/gemini-api/docs/rate-limits). A run that has
sent its day's requests stops cleanly with exit 5 rather than earn a 429 per row, and a rerun
the next day resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from zoneinfo import ZoneInfo

from batchgen.errors import QuotaExhaustedError

__all__ = ["PACIFIC", "DailyQuota"]

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
        self._resets = self.resets_at()  # compared on every call: cheaper than a time zone
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
        if self._clock() >= self._resets:
            self._day, self.used = self.today(), 0
            self._resets = self.resets_at()
