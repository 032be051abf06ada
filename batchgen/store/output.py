"""The rows a run writes: typed result columns from the schema, failure records, the ledger.

Where they go (the output directory, its journal and part files) is :mod:`batchgen.store.outdir`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from batchgen.errors import JobError
from batchgen.job.response_schema import ResponseSchema, resolve_schema
from batchgen.records import MODALITIES, Answer

RAW_TEXT_LIMIT = 2000

# batchgen's own columns, after the row id, the carried columns and the answer's columns.
META_FIELDS = [
    pa.field("prompt_tokens", pa.int64()),
    pa.field("output_tokens", pa.int64()),
    pa.field("thinking_tokens", pa.int64()),
    pa.field("cached_tokens", pa.int64()),
    pa.field("total_tokens", pa.int64()),
    pa.field("model_version", pa.string()),
    pa.field("response_id", pa.string()),
    pa.field("finish_reason", pa.string()),
    pa.field("latency_ms", pa.float64()),
    pa.field("attempts", pa.int32()),
    pa.field("completed_at", pa.timestamp("ms", tz="UTC")),
    pa.field("request_hash", pa.string()),
]
ROW_ID = pa.field("row_id", pa.string(), nullable=False)
ITEM_INDEX = pa.field("item_index", pa.int32())
# With generation.candidateCount > 1: which candidate a row is (0..N-1), and why a candidate that
# was not usable has no answer (the row's other candidates were).
CANDIDATE = pa.field("candidate", pa.int32())
CANDIDATE_ERROR = pa.field("candidate_error", pa.string())
THOUGHTS = pa.field("thoughts", pa.string())  # thought summaries, with includeThoughts
ERRORS_SCHEMA = pa.schema(
    [
        ROW_ID,
        pa.field("category", pa.string()),
        pa.field("http_status", pa.int32()),
        pa.field("message", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("raw_text", pa.string()),
        pa.field("request_hash", pa.string()),
        pa.field("failed_at", pa.timestamp("ms", tz="UTC")),
    ]
)
# The usage ledger: one row per API call that returned usage (retries and failed answers too).
USAGE_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("job", pa.string()),
        pa.field("row_id", pa.string()),
        pa.field("attempt", pa.int32()),
        pa.field("model", pa.string()),  # the model asked for (model_version may be more exact)
        pa.field("model_version", pa.string()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("thinking_tokens", pa.int64()),
        pa.field("cached_tokens", pa.int64()),
        pa.field("total_tokens", pa.int64()),
        pa.field("http_status", pa.int32()),
        pa.field("outcome", pa.string()),  # "ok", or the answer's failure category
        pa.field("finish_reason", pa.string()),
        pa.field("at", pa.timestamp("ms", tz="UTC")),
        pa.field("tier", pa.string()),  # the service tier that served the call (older: null)
        # promptTokensDetails and cacheTokensDetails by modality (null: not reported, or a
        # ledger written before batchgen kept them; readers fill the missing columns with null)
        *(pa.field(f"prompt_{m}_tokens", pa.int64()) for m in MODALITIES),
        *(pa.field(f"cached_{m}_tokens", pa.int64()) for m in MODALITIES),
        # a cache_storage entry: the cache's tokens × the hours it lived (version 2; older: null)
        pa.field("cache_token_hours", pa.float64()),
    ],
    metadata={"batchgen.usage_version": "2"},  # 1: before the cache entries (no column)
)
RESERVED = frozenset(
    [ROW_ID.name, ITEM_INDEX.name, CANDIDATE.name, CANDIDATE_ERROR.name, THOUGHTS.name]
    + [f.name for f in META_FIELDS]
)


class OutputLayout:
    """How answers become rows: the result columns derived from the schema.

    A top-level object gives one column per property. A top-level array gives one row per item
    when exploded (with ``item_index``; an object item gives one column per property), else one
    list column ``result``. Any other top-level type gives one column ``result``. Both schema
    dialects go through the answer's Arrow type, so their columns follow the same rule.

    With ``candidates`` > 1 each candidate gives its own rows, told apart by ``candidate``; a
    candidate that was not usable gives one row with no answer and its ``candidate_error``.
    With ``thoughts`` the thought summaries go in ``thoughts``.
    """

    def __init__(
        self,
        schema: Mapping[str, Any] | ResponseSchema,
        explode: bool,
        carry: pa.Schema,
        where: str,
        candidates: int = 1,
        thoughts: bool = False,
    ) -> None:
        answer = resolve_schema(schema).answer_field()
        self.explode = explode and pa.types.is_list(answer.type)
        if explode and not self.explode:
            raise JobError(f"{where}: output.explode needs a top-level ARRAY (array) schema")
        shaped = answer.type.value_field if self.explode else answer
        self._properties: list[str] | None = None
        columns = [pa.field("result", shaped.type)]
        if pa.types.is_struct(shaped.type):
            self._properties = [f.name for f in shaped.type]
            # a null answer or an exploded row with no items leaves every column null
            loose = shaped.nullable or self.explode or candidates > 1
            columns = [f.with_nullable(True) if loose else f for f in shaped.type]
        self.answer_columns = [f.name for f in columns]
        extra = [ITEM_INDEX] if self.explode else []
        extra += [CANDIDATE, CANDIDATE_ERROR] if candidates > 1 else []
        extra += [THOUGHTS] if thoughts else []
        fields = [ROW_ID, *carry, *columns, *extra, *META_FIELDS]
        _check_unique(fields, carry, where)
        self.schema = pa.schema(fields)

    def rows(
        self, ids: Mapping[str, Any], value: Any, meta: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The output rows for one answer; ``ids`` holds the row id and carried values."""
        if not self.explode:
            return [{**ids, **self._columns(value), **meta}]
        if not value:  # an empty list still marks the row as done
            return [{**ids, ITEM_INDEX.name: None, **meta}]
        return [
            {**ids, **self._columns(item), ITEM_INDEX.name: i, **meta}
            for i, item in enumerate(value)
        ]

    def unusable(self, ids: Mapping[str, Any], meta: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The one row of a candidate that was not usable: no answer; meta says why."""
        return [{**ids, **meta}]

    def _columns(self, value: Any) -> dict[str, Any]:
        if self._properties is None:
            return {"result": value}
        if value is None:
            return {}
        return {p: value.get(p) for p in self._properties}


def _check_unique(fields: Sequence[pa.Field], carry: pa.Schema, where: str) -> None:
    seen: set[str] = set()
    for f in fields:
        if f.name in seen:
            origin = "a carried input column" if f.name in carry.names else "batchgen's own"
            raise JobError(
                f"{where}: output column {f.name!r} is both an answer field and {origin} column; "
                "rename the schema property or drop it from input.carry"
            )
        seen.add(f.name)


def error_row(
    row_id: str,
    category: str,
    message: str,
    *,
    status: int | None = None,
    attempts: int = 1,
    text: str | None = None,
    request_hash: str | None = None,
    at: datetime,
) -> dict[str, Any]:
    """One failure record (see ERRORS_SCHEMA)."""
    return {
        "row_id": row_id,
        "category": category,
        "http_status": status,
        "message": message,
        "attempts": attempts,
        "raw_text": text[:RAW_TEXT_LIMIT] if text else None,
        "request_hash": request_hash,
        "failed_at": at,
    }


def result_meta(
    answer: Answer, attempts: int, request_hash: str, at: datetime, latency_ms: float | None = None
) -> dict[str, Any]:
    """batchgen's own columns of a result row (META_FIELDS); a batch answer has no latency."""
    usage = answer.usage
    return {
        "prompt_tokens": usage.prompt,
        "output_tokens": usage.output,
        "thinking_tokens": usage.thinking,
        "cached_tokens": usage.cached,
        "total_tokens": usage.total,
        "model_version": answer.model_version,
        "response_id": answer.response_id,
        "finish_reason": answer.finish_reason,
        "latency_ms": None if latency_ms is None else round(latency_ms, 3),
        "attempts": attempts,
        "completed_at": at,
        "request_hash": request_hash,
    }
