"""Batch Mode's JSONL files: request chunks out, result lines back into outcomes and ledger rows.

A request line is ``{"key": <row id>, "request": <the body the online path sends>}`` (the bytes of
:attr:`batchgen.records.Work.body`, not re-encoded), one per row; a chunk is one input file, at most
``max_rows`` lines and ``max_bytes`` bytes (the Files API takes 2 GB a file). A result line is
``{"key": ..., "response": <GenerateContentResponse>}`` or ``{"key": ..., "error": <Status>}``
(docs/gemini-api.md §7), in no guaranteed order, so results are matched by key. Each response goes
through what an online answer goes through (:func:`batchgen.gemini.answers.parse_response`,
:func:`~batchgen.gemini.answers.structured_value`, the output layout) and becomes the same
:class:`~batchgen.records.Outcome` and :class:`~batchgen.records.Billed` ledger entry; a per-line
error or a key with no line becomes a failure record, which the next run retries.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchgen.atomic import atomic_file
from batchgen.gemini.answers import AnswerError, excerpt, parse_response
from batchgen.plan import Plan
from batchgen.records import Answer, Billed, Outcome, Work
from batchgen.store.output import error_row, result_meta

MAX_FILE_BYTES = 2 * 1000**3  # the Files API's limit per file (2 GB)
BATCH_TIER = "batch"  # the tier a batch answer is billed at (job.TIERS)
LINE_ERROR = "batch_line_error"  # the batch answered this line with an error
MISSING = "batch_missing"  # the batch ended without a line for this row
_HTTP_CODES = range(100, 600)  # an error code in this range is an HTTP status, else an rpc code


@dataclass(frozen=True)
class Chunk:
    """One written input file: where it is, and the rows in it in line order."""

    path: Path
    rows: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class Collected:
    """What became of one row of a batch: its outcome, and the ledger entry when it was billed."""

    row_id: str
    outcome: Outcome
    billed: Billed | None


@dataclass
class CollectStats:
    """What a result file held besides one line per expected row."""

    lines: int = 0
    unreadable: int = 0  # not JSON, or without a string key
    unknown: int = 0  # a key this batch did not send
    repeated: int = 0  # a second line for a key (the first one counts)
    missing: list[str] = field(default_factory=list)


def request_line(work: Work) -> bytes:
    """The JSONL line for one row, its request body as the online path sends it."""
    key = json.dumps(work.row.row_id, ensure_ascii=False).encode()
    return b'{"key":' + key + b',"request":' + work.body + b"}\n"


def split_request_line(line: bytes) -> tuple[str | None, bytes]:
    """(row id, request body) of a line :func:`request_line` wrote; (None, b"") otherwise."""
    head = b'{"key":'
    if not line.startswith(head) or not line.endswith(b"}\n"):
        return None, b""
    try:
        key, _ = json.JSONDecoder().raw_decode(line[len(head) :].decode())
    except (UnicodeDecodeError, ValueError):
        return None, b""
    rest = line[len(head) + len(json.dumps(key, ensure_ascii=False).encode()) :]
    if not isinstance(key, str) or not rest.startswith(b',"request":'):
        return None, b""
    return key, rest[len(b',"request":') : -2]


def group_works(
    works: Iterable[Work], max_rows: int, max_bytes: int = MAX_FILE_BYTES
) -> Iterator[list[Work]]:
    """Works in input order, cut into chunks of at most ``max_rows`` lines and ``max_bytes``.

    A row id already in the chunk starts a new one (a key must name one line); a single line
    larger than ``max_bytes`` goes alone into its own chunk, where the upload refuses it.
    """
    if max_rows < 1 or max_bytes < 1:
        raise ValueError("max_rows and max_bytes must be positive")
    chunk: list[Work] = []
    keys: set[str] = set()
    size = 0
    for work in works:
        line = len(request_line(work))
        full = len(chunk) >= max_rows or size + line > max_bytes or work.row.row_id in keys
        if chunk and full:
            yield chunk
            chunk, keys, size = [], set(), 0
        chunk.append(work)
        keys.add(work.row.row_id)
        size += line
    if chunk:
        yield chunk


def write_chunk(path: Path, works: Sequence[Work]) -> Chunk:
    """Write one chunk file whole (temporary name, fsync, rename) before it is recorded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with atomic_file(path) as sink:
        for work in works:
            size += sink.write(request_line(work))
    return Chunk(path, tuple(w.row.row_id for w in works), size)


def read_lines(path: Path, stats: CollectStats) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, line) of each readable result line, streamed; others are counted in ``stats``."""
    with path.open("rb") as source:
        for raw in source:
            if not raw.strip():
                continue
            stats.lines += 1
            try:
                line = json.loads(raw)
            except (ValueError, RecursionError):
                line = None
            key = line.get("key") if isinstance(line, dict) else None
            if not isinstance(key, str) or not isinstance(line, dict):
                stats.unreadable += 1
                continue
            yield key, line


class ResultCollector:
    """Turns a batch's result lines into outcomes and ledger entries, as online answers are."""

    def __init__(
        self, plan: Plan, run_id: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.plan = plan
        self.run_id = run_id
        self.now = clock

    def collect(
        self, works: Mapping[str, Work], results: Path, attempt: int = 1
    ) -> tuple[list[Collected], CollectStats]:
        """Every row of ``works`` (by row id) once: from its line, or as ``batch_missing``."""
        stats = CollectStats()
        out: list[Collected] = []
        seen: set[str] = set()
        for key, line in read_lines(results, stats):
            work = works.get(key)
            if work is None:
                stats.unknown += 1
            elif key in seen:
                stats.repeated += 1
            else:
                seen.add(key)
                out.append(self.line(work, line, attempt))
        stats.missing = [key for key in works if key not in seen]
        message = "the batch ended without a result line for this row; it is retried next run"
        out += self.failed([works[key] for key in stats.missing], MISSING, message, attempt)
        return out, stats

    def failed(
        self, works: Iterable[Work], category: str, message: str, attempt: int = 1
    ) -> list[Collected]:
        """Failure records for rows whose batch gave no answer (failed, expired, cancelled)."""
        return [
            Collected(w.row.row_id, self._failure(w, category, message, attempt), None)
            for w in works
        ]

    def line(self, work: Work, line: Mapping[str, Any], attempt: int) -> Collected:
        """One result line of ``work``'s row: an error, or a response read as online."""
        row_id = work.row.row_id
        if "response" not in line:
            category, message, status = _line_error(line.get("error"))
            return Collected(row_id, self._failure(work, category, message, attempt, status), None)
        try:
            answer = parse_response(line["response"])
        except AnswerError as exc:
            failure = self._failure(work, exc.category, exc.message, attempt, text=exc.text)
            return Collected(row_id, failure, None)
        meta = result_meta(answer, attempt, work.hash, self.now())
        try:
            rows = self.plan.answered(work, answer, meta)
        except AnswerError as exc:
            failure = self._failure(work, exc.category, exc.message, attempt, text=exc.text)
            return Collected(row_id, failure, self._bill(work, answer, exc.category, attempt))
        return Collected(
            row_id, Outcome(rows, failed=False), self._bill(work, answer, "ok", attempt)
        )

    def _bill(self, work: Work, answer: Answer, outcome: str, attempt: int) -> Billed:
        job = self.plan.job
        return Billed(
            self.run_id, job.name, work.row.row_id, attempt, job.model.name, answer, outcome,
            self.now(), BATCH_TIER,
        )  # fmt: skip

    def _failure(
        self,
        work: Work,
        category: str,
        message: str,
        attempt: int,
        status: int | None = None,
        text: str | None = None,
    ) -> Outcome:
        record = error_row(
            work.row.row_id, category, message, status=status, attempts=attempt, text=text,
            request_hash=work.hash, at=self.now(),
        )  # fmt: skip
        return Outcome([record], failed=True, category=category, message=message)


def _line_error(error: object) -> tuple[str, str, int | None]:
    """(category, message, HTTP status) of a line's error Status (any shape)."""
    if not isinstance(error, dict):
        return LINE_ERROR, f"the batch line has neither response nor error: {excerpt(error)}", None
    code, text = error.get("code"), " ".join(str(error.get("message") or "").split())
    number = code if isinstance(code, int) and not isinstance(code, bool) else None
    status = number if number in _HTTP_CODES else None
    return LINE_ERROR, f"the batch answered this row with error {code}: {text[:300]}", status
