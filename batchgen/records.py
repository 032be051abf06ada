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
    # (user, system, per-row example turns) when media are sent: the request is built then
    text: tuple[str, str | None, bytes | None] | None = None


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


MODALITIES = ("text", "image", "audio", "video", "document")  # the API's, lower-case


@dataclass(frozen=True)
class Modalities:
    """Prompt tokens by modality, as ``promptTokensDetails`` or ``cacheTokensDetails`` report
    them (a modality the API adds later is counted as text: billed at the input rate)."""

    text: int = 0
    image: int = 0
    audio: int = 0
    video: int = 0
    document: int = 0

    @property
    def total(self) -> int:
        return self.text + self.image + self.audio + self.video + self.document

    def __add__(self, other: Modalities) -> Modalities:
        return Modalities(*(getattr(self, m) + getattr(other, m) for m in MODALITIES))

    def as_dict(self) -> dict[str, int]:
        return {m: getattr(self, m) for m in MODALITIES}


@dataclass(frozen=True)
class Usage:
    """Token counts of one call. ``output`` excludes thinking; both are billed as output.

    ``prompt_details`` splits ``prompt`` by modality and ``cached_details`` splits ``cached``
    (None: the answer did not say, so the whole prompt is billed at the input rate)."""

    prompt: int = 0
    output: int = 0
    thinking: int = 0
    cached: int = 0
    total: int = 0
    prompt_details: Modalities | None = None
    cached_details: Modalities | None = None

    @property
    def audio(self) -> int:
        """Prompt tokens of audio (0 when the answer gave no details)."""
        return self.prompt_details.audio if self.prompt_details else 0

    @property
    def cached_audio(self) -> int:
        """Cached prompt tokens of audio (0 when the answer gave no details)."""
        return self.cached_details.audio if self.cached_details else 0


@dataclass(frozen=True)
class TokenCount:
    """What countTokens (or the offline count) says of one prompt: its total and, when known,
    its split by modality."""

    total: int
    details: Modalities | None = None


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
            **modality_columns("prompt", usage.prompt_details),
            **modality_columns("cached", usage.cached_details),
            "cache_token_hours": self.token_hours,
        }


def modality_columns(kind: str, details: Modalities | None) -> dict[str, int | None]:
    """The ledger's ``{kind}_{modality}_tokens`` columns (null: the answer gave no details)."""
    return {
        f"{kind}_{m}_tokens": None if details is None else getattr(details, m) for m in MODALITIES
    }


@dataclass(frozen=True)
class DoneState:
    """Sorted 64-bit keys (batchgen.keys) of rows done and of rows whose latest outcome failed."""

    done: Keys
    failed: Keys
