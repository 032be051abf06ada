"""Read a GenerateContentResponse: usage, the answer text, and the structured value in it.

Proto3 JSON leaves out zero counts, so every count defaults to 0 (gemini-api.md §3).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchgen.schema import AnswerValidator


@dataclass(frozen=True)
class Usage:
    """Token counts of one call. ``output`` excludes thinking; both are billed as output."""

    prompt: int = 0
    output: int = 0
    thinking: int = 0
    cached: int = 0
    total: int = 0

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any] | None) -> Usage:
        """Read ``usageMetadata``; missing counts are zero."""
        if not meta:
            return cls()
        return cls(
            prompt=int(meta.get("promptTokenCount", 0)),
            output=int(meta.get("candidatesTokenCount", 0)),
            thinking=int(meta.get("thoughtsTokenCount", 0)),
            cached=int(meta.get("cachedContentTokenCount", 0)),
            total=int(meta.get("totalTokenCount", 0)),
        )


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


class AnswerError(Exception):
    """The call succeeded but its answer is unusable; ``category`` goes in the failure record."""

    def __init__(self, category: str, message: str, text: str | None = None) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.text = text


def parse_response(payload: Mapping[str, Any]) -> Answer:
    """Pick out candidate 0's answer text (thought parts left out), finish reason and usage."""
    candidates = payload.get("candidates") or []
    first = candidates[0] if candidates else {}
    parts = (first.get("content") or {}).get("parts") or []
    texts = [p["text"] for p in parts if "text" in p and not p.get("thought")]
    return Answer(
        text="".join(texts) if texts else None,
        finish_reason=first.get("finishReason"),
        block_reason=(payload.get("promptFeedback") or {}).get("blockReason"),
        usage=Usage.from_metadata(payload.get("usageMetadata")),
        model_version=payload.get("modelVersion"),
        response_id=payload.get("responseId"),
        has_candidate=bool(candidates),
    )


def structured_value(answer: Answer, validator: AnswerValidator) -> Any:
    """The answer's JSON value, checked against the schema; :class:`AnswerError` otherwise."""
    if answer.block_reason:
        raise AnswerError("blocked", f"prompt blocked by the API ({answer.block_reason})")
    if not answer.has_candidate:
        raise AnswerError("no_candidates", "the API returned no candidates")
    reason = answer.finish_reason or "STOP"
    if reason == "MAX_TOKENS":
        raise AnswerError(
            "max_tokens",
            f"answer cut at maxOutputTokens ({answer.usage.thinking} thinking + "
            f"{answer.usage.output} output tokens); raise generation.maxOutputTokens",
            answer.text,
        )
    if reason != "STOP":
        raise AnswerError(reason.lower(), f"answer stopped by the API ({reason})", answer.text)
    if not answer.text:
        raise AnswerError("empty", "the answer has no text")
    try:
        value = json.loads(answer.text)
    except ValueError as exc:
        raise AnswerError("invalid_json", f"the answer is not JSON: {exc}", answer.text) from None
    problem = validator.problem(value)
    if problem is not None:
        raise AnswerError("schema", f"the answer breaks the schema: {problem}", answer.text)
    try:
        return validator.shape(value)
    except ValueError as exc:  # conforms, yet cannot take its column type (a date that is not)
        raise AnswerError("schema", f"the answer breaks the schema: {exc}", answer.text) from None
