"""The typed values that cross layers: a row read, the work it becomes, what became of it, what
each call returned and cost, and which rows an output already holds.

They sit at the bottom of the package (beside ``errors``), so the readers, the clients, the store,
the backends and the run can all hand them to each other without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from batchgen.keys import Keys


@dataclass(frozen=True)
class InputRow:
    """One input row: its id (the id column's value, or its 0-based position) and its values."""

    row_id: str
    position: int
    values: Mapping[str, Any]


@dataclass(frozen=True)
class MediaRef:
    """One media value as the pre-scan found it: where its bytes are, not the bytes (a row's
    raw-bytes cell is the exception: it already is in memory with its row).

    ``kind`` is ``path`` (a local file, checked to be ``size`` bytes at ``mtime_ns``),
    ``bytes`` (``data``), ``uri`` (an ``https://`` or ``gs://`` URI the API fetches) or
    ``file`` (a Files API name). ``column`` is the input column, or ``context`` for a shared
    context file.
    """

    column: str
    kind: str
    mime: str
    size: int = 0
    path: str | None = None
    mtime_ns: int = 0
    uri: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Work:
    """A rendered request for one row.

    With media, ``body`` is the text-only request and ``media`` the references the request is
    built from when the row is sent (so no row's file bytes are held before then).
    """

    row: InputRow
    body: bytes
    hash: str
    tokens: int  # estimated prompt tokens (characters / 4; media by the published rules)
    media: tuple[MediaRef, ...] = ()
    text: tuple[str, str | None] | None = None  # (user, system) when media are sent


@dataclass(frozen=True)
class Outage:
    """An outage the run is waiting out (the online backend's breaker is open), for progress."""

    since: datetime  # when the breaker opened (UTC)
    last_error: str  # the last server-side failure, one line
    next_probe_s: float | None  # seconds until the next probe; None while a probe is in flight
    probes: int  # probes sent so far


@dataclass(frozen=True)
class Outcome:
    """What became of one row: its result rows, or its failure record."""

    rows: list[dict[str, Any]]  # result rows (several when exploded) or one failure record
    failed: bool
    category: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Usage:
    """Token counts of one call. ``output`` excludes thinking; both are billed as output."""

    prompt: int = 0
    output: int = 0
    thinking: int = 0
    cached: int = 0
    total: int = 0


@dataclass(frozen=True)
class Answer:
    """What one successful HTTP call returned."""

    text: str | None
    finish_reason: str | None
    block_reason: str | None
    usage: Usage
    model_version: str | None
    response_id: str | None
    has_candidate: bool


@dataclass(frozen=True)
class Billed:
    """One call that returned usage: a row of the usage ledger (USAGE_SCHEMA)."""

    run_id: str
    job: str
    row_id: str
    attempt: int
    model: str
    answer: Answer
    outcome: str  # "ok", or the answer's failure category
    at: datetime
    tier: str = "standard"  # the service tier that served the call

    def to_row(self) -> dict[str, Any]:
        usage = self.answer.usage
        return {
            "run_id": self.run_id,
            "job": self.job,
            "row_id": self.row_id,
            "attempt": self.attempt,
            "model": self.model,
            "model_version": self.answer.model_version,
            "prompt_tokens": usage.prompt,
            "output_tokens": usage.output,
            "thinking_tokens": usage.thinking,
            "cached_tokens": usage.cached,
            "total_tokens": usage.total,
            "http_status": 200,
            "outcome": self.outcome,
            "finish_reason": self.answer.finish_reason,
            "at": self.at,
            "tier": self.tier,
        }


@dataclass(frozen=True)
class DoneState:
    """Sorted 64-bit keys (batchgen.keys) of rows done and of rows whose latest outcome failed."""

    done: Keys
    failed: Keys
