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
class Work:
    """A rendered request for one row."""

    row: InputRow
    body: bytes
    hash: str
    tokens: int  # estimated prompt tokens (characters / 4)


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
class Candidate:
    """One candidate of an answer: its text (thought parts left out), finish reason, and its
    thought summaries (parts marked ``thought``), when the job asked for them."""

    text: str | None
    finish_reason: str | None
    thoughts: str | None = None


@dataclass(frozen=True)
class Answer:
    """What one successful HTTP call returned; ``text``, ``finish_reason`` and ``thoughts`` are
    candidate 0's, ``candidates`` all of them (several with ``candidateCount``)."""

    text: str | None
    finish_reason: str | None
    block_reason: str | None
    usage: Usage
    model_version: str | None
    response_id: str | None
    has_candidate: bool
    thoughts: str | None = None
    candidates: tuple[Candidate, ...] = ()


REUSED = "reused"  # a ledger outcome: a row answered by its twin's call (output.dedupe), unpaid
# ledger outcomes of an explicit context cache, not calls for a row: its creation (the prefix's
# tokens, billed as input) and its storage (token-hours, in cache_token_hours)
CACHE_CREATE = "cache_create"
CACHE_STORAGE = "cache_storage"
NOT_CALLS = frozenset({REUSED, CACHE_CREATE, CACHE_STORAGE})  # ledger entries that are no request


@dataclass(frozen=True)
class Billed:
    """One call that returned usage: a row of the usage ledger (USAGE_SCHEMA)."""

    run_id: str
    job: str
    row_id: str
    attempt: int
    model: str
    answer: Answer
    outcome: str  # "ok", "reused" (a twin's answer, no call), or the answer's failure category
    at: datetime
    tier: str = "standard"  # the service tier that served the call
    token_hours: float | None = None  # a cache_storage entry: the cache's tokens × hours alive

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
            "http_status": None if self.outcome == REUSED else 200,
            "outcome": self.outcome,
            "finish_reason": self.answer.finish_reason,
            "at": self.at,
            "tier": self.tier,
            "cache_token_hours": self.token_hours,
        }


@dataclass(frozen=True)
class DoneState:
    """Sorted 64-bit keys (batchgen.keys) of rows done and of rows whose latest outcome failed."""

    done: Keys
    failed: Keys
