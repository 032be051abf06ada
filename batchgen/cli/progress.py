"""Progress while a run works: a live bar on a terminal, a periodic line in cron's mail.

* on a terminal: a tqdm bar (rows done and failed, rows/s, tokens, cost so far, ETA);
* elsewhere (cron, CI): one concise line every ``every`` seconds, and one at the end;
* ``json``: the same periodic records as JSON lines, for log collectors;
* quiet: nothing.

Everything goes to stderr, so stdout stays the run's summary.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

from batchgen.records import Outage
from batchgen.run.progress import NoProgress, Progress, Snapshot

__all__ = ["BarProgress", "LineProgress", "choose"]


class BarProgress:
    """A live tqdm bar for a terminal."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from tqdm import tqdm

        self._bar: Any = None
        self._tqdm = tqdm
        self._stream = stream or sys.stderr

    def update(self, snap: Snapshot) -> None:
        if self._bar is None:
            self._bar = self._tqdm(total=snap.rows_todo, unit="row", file=self._stream)
        finished = snap.rows_done + snap.rows_failed
        self._bar.set_postfix_str(
            f"failed={snap.rows_failed} tokens={snap.tokens:,} cost={_money(snap.cost)}"
            + (f" {snap.note}" if snap.note else "")
            + (f" {outage_words(snap.outage)}" if snap.outage else ""),
            refresh=False,
        )
        self._bar.update(finished - self._bar.n)

    def close(self, snap: Snapshot) -> None:
        self.update(snap)
        self._bar.close()


class LineProgress:
    """One line (or JSON record) every ``every`` seconds, and one at the end."""

    def __init__(self, every: float = 60.0, as_json: bool = False, stream: IO[str] | None = None):
        self._every = every
        self._json = as_json
        self._stream = stream or sys.stderr
        self._next = time.monotonic() + every

    def update(self, snap: Snapshot) -> None:
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self._every
            self._emit(snap, "progress")

    def close(self, snap: Snapshot) -> None:
        self._emit(snap, "finished")

    def _emit(self, snap: Snapshot, event: str) -> None:
        finished = snap.rows_done + snap.rows_failed
        rate = finished / snap.elapsed if snap.elapsed > 0 else 0.0
        left = snap.rows_todo - finished
        # while the run waits out an outage, the pace so far says nothing of when it ends
        eta = left / rate if rate > 0 and left > 0 and snap.outage is None else None
        if self._json:
            record = {
                "ts": datetime.now(UTC).isoformat(timespec="seconds"),
                "event": event,
                "rows_todo": snap.rows_todo,
                "rows_done": snap.rows_done,
                "rows_failed": snap.rows_failed,
                "rows_per_s": round(rate, 2),
                "tokens": snap.tokens,
                "cost_usd": None if snap.cost is None else round(snap.cost, 6),
                "eta_s": None if eta is None else round(eta),
            }
            if snap.note:
                record["note"] = snap.note
            if snap.concurrency is not None:
                record["in_flight_target"] = snap.concurrency
            if snap.latency_p90 is not None:
                record["latency_p90_s"] = round(snap.latency_p90, 3)
            if snap.outage is not None:
                record["outage"] = {
                    "since": snap.outage.since.isoformat(timespec="seconds"),
                    "last_error": snap.outage.last_error,
                    "next_probe_s": _rounded(snap.outage.next_probe_s),
                    "probes": snap.outage.probes,
                    "note": outage_words(snap.outage),
                }
            line = json.dumps(record)
        else:
            line = (
                f"{datetime.now(UTC):%H:%M:%S} {event}: {finished}/{snap.rows_todo} rows "
                f"({snap.rows_failed} failed), {rate:.1f} rows/s, {snap.tokens:,} tokens, "
                f"{_money(snap.cost)}"
                + (f", ETA {_duration(eta)}" if eta is not None else "")
                + _pace(snap)
                + (f"; {snap.note}" if snap.note else "")
                + (f"; {outage_words(snap.outage)}" if snap.outage else "")
            )
        self._stream.write(line + "\n")
        self._stream.flush()


def _pace(snap: Snapshot) -> str:
    """ ", up to 120 in flight (p90 8.2 s)": the concurrency the run allows now, and why."""
    if snap.concurrency is None:
        return ""
    latency = f" (p90 {snap.latency_p90:.1f} s)" if snap.latency_p90 is not None else ""
    return f", up to {snap.concurrency} in flight{latency}"


def outage_words(outage: Outage) -> str:
    """ "outage: every call failing since 14:02:11 UTC (3m10s), last error: HTTP 500: …;
    next probe in 40s": why nothing moves, and when it tries again."""
    lasted = (datetime.now(UTC) - outage.since).total_seconds()
    last = f", last error: {outage.last_error}" if outage.last_error else ""
    probe = (
        "a probe call is in flight"
        if outage.next_probe_s is None
        else f"next probe in {_duration(outage.next_probe_s)}"
    )
    return (
        f"outage: every call failing since {outage.since:%H:%M:%S} UTC "
        f"({_duration(max(0.0, lasted))}, {outage.probes} probes){last}; {probe}; no new rows "
        "are sent meanwhile"
    )


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _money(cost: float | None) -> str:
    return "unpriced" if cost is None else f"${cost:,.4f}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def choose(quiet: bool, log_format: str, every: float, stream: IO[str] | None = None) -> Progress:
    """The reporter a user would expect here: quiet, JSON, a bar on a terminal, else lines."""
    stream = stream or sys.stderr
    if quiet:
        return NoProgress()
    if log_format == "json":
        return LineProgress(every, as_json=True, stream=stream)
    if stream.isatty():
        return BarProgress(stream)
    return LineProgress(every, stream=stream)
