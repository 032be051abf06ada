"""Read a GenerateContentResponse: usage, the answer text, and the structured value in it.

Proto3 JSON leaves out zero counts, so every count defaults to 0, and it reads ``null`` as "not
set" (docs/gemini-api.md §3). Reading is total: a 200 body of any other shape (not an object, a
field of the wrong type, a negative or non-numeric count, an error envelope, no response field at
all) is an :class:`AnswerError` ``malformed_response`` for that row, never an exception that
escapes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from batchgen.job.schema import AnswerValidator
from batchgen.records import MODALITIES, Answer, Candidate, Modalities, Usage

MALFORMED = "malformed_response"
EXCERPT_CHARS = 500  # how much of an unreadable body a failure record keeps
_MAX_COUNT = 2**31 - 1  # token counts are int32 in the proto; more would not fit the output
_WELL_UNDER = 0.9  # a cut with less of maxOutputTokens used than this was not the job's limit
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # what an Arrow int64 or float64 column takes
# A body with none of these is not an answer at all (the real API always sends usageMetadata).
_RESPONSE_FIELDS = ("candidates", "promptFeedback", "usageMetadata")
_COUNTS = {
    "prompt": "promptTokenCount",
    "output": "candidatesTokenCount",
    "thinking": "thoughtsTokenCount",
    "cached": "cachedContentTokenCount",
    "total": "totalTokenCount",
}


class _ShapeError(Exception):
    """What is wrong with a body's shape, worded for the user."""


class AnswerError(Exception):
    """The call succeeded but its answer is unusable; ``category`` goes in the failure record."""

    def __init__(self, category: str, message: str, text: str | None = None) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.text = text


def read_usage(meta: object) -> Usage:
    """Read ``usageMetadata``; missing counts are zero; a count that is not one is malformed."""
    try:
        return _usage(meta)
    except _ShapeError as exc:
        raise AnswerError(MALFORMED, f"HTTP 200 body: {exc}") from None


def parse_response(payload: object) -> Answer:
    """Pick out each candidate's answer text (thought parts apart), finish reason, and usage.

    ``payload`` is the decoded JSON of a 200 body, whatever its shape. Raises:
        AnswerError: ``malformed_response``, with the start of the body as its text.
    """
    try:
        return _read(payload)
    except _ShapeError as exc:
        raise AnswerError(
            MALFORMED, f"HTTP 200 body is not a GenerateContentResponse: {exc}", excerpt(payload)
        ) from None


def excerpt(payload: object) -> str:
    """The start of a decoded body as JSON text, for a failure record."""
    try:
        return json.dumps(payload, ensure_ascii=False)[:EXCERPT_CHARS]
    except (TypeError, ValueError, RecursionError):
        return f"({_kind(payload)})"


def _read(payload: object) -> Answer:
    if not isinstance(payload, dict):
        raise _ShapeError(f"the body is {_kind(payload)}, not an object")
    if not any(payload.get(name) is not None for name in _RESPONSE_FIELDS):
        error = payload.get("error")
        if isinstance(error, dict):  # some proxies wrap their errors in a 200
            message = " ".join(str(error.get("message")).split())[:200]
            raise _ShapeError(f"an error envelope: {message}")
        raise _ShapeError("it has none of candidates, promptFeedback, usageMetadata")
    listed = _list(payload.get("candidates"), "candidates")
    candidates = tuple(_candidate(c, i) for i, c in enumerate(listed))
    first = candidates[0] if candidates else Candidate(None, None)
    feedback = _obj(payload.get("promptFeedback"), "promptFeedback")
    return Answer(
        text=first.text,
        finish_reason=first.finish_reason,
        block_reason=_str(feedback.get("blockReason"), "promptFeedback.blockReason"),
        usage=_usage(payload.get("usageMetadata")),
        model_version=_str(payload.get("modelVersion"), "modelVersion"),
        response_id=_str(payload.get("responseId"), "responseId"),
        has_candidate=bool(candidates),
        thoughts=first.thoughts,
        candidates=candidates,
    )


def _candidate(value: object, index: int) -> Candidate:
    """One candidate: its answer text, its finish reason, its thought summaries."""
    where = f"candidates[{index}]"
    candidate = _obj(value, where, nullable=False)
    texts, thoughts = _texts(candidate, where)
    return Candidate(
        text="".join(texts) if texts else None,
        finish_reason=_str(candidate.get("finishReason"), f"{where}.finishReason"),
        thoughts="".join(thoughts) if thoughts else None,
    )


def _texts(candidate: Mapping[str, Any], where: str) -> tuple[list[str], list[str]]:
    """The answer's text parts and its thought parts (``thought: true``) apart; a part without
    text (a function call, inline data) is skipped."""
    content = _obj(candidate.get("content"), f"{where}.content")
    parts = _list(content.get("parts"), f"{where}.content.parts")
    texts: list[str] = []
    thoughts: list[str] = []
    for i, part in enumerate(parts):  # the hot path: a place is worded only when it is wrong
        if not isinstance(part, dict):
            raise _ShapeError(f"{where}.content.parts[{i}] is {_kind(part)}, not an object")
        text, thought = part.get("text"), part.get("thought")
        if text is not None and not isinstance(text, str):
            _str(text, f"{where}.content.parts[{i}].text")
        if thought is not None and not isinstance(thought, bool):
            raise _ShapeError(
                f"{where}.content.parts[{i}].thought is {_kind(thought)}, not true or false"
            )
        if text is not None:
            (thoughts if thought else texts).append(text)
    return texts, thoughts


def _usage(meta: object) -> Usage:
    fields = _obj(meta, "usageMetadata")
    counts = {name: _count(fields.get(key), key) for name, key in _COUNTS.items()}
    return Usage(
        **counts,
        prompt_details=modality_details(fields.get("promptTokensDetails")),
        cached_details=modality_details(fields.get("cacheTokensDetails")),
    )


def modality_details(entries: object) -> Modalities | None:
    """``[{modality, tokenCount}, ...]`` summed by modality; None when absent or unreadable.

    Lenient on purpose: the details only split a prompt already counted, so a list a proxy
    mangled costs the split (the prompt is then priced at the input rate), never the answer.
    A modality this version does not know (MODALITY_UNSPECIFIED, a new one) counts as text.
    """
    if not isinstance(entries, list) or not entries:
        return None
    sums = dict.fromkeys(MODALITIES, 0)
    for entry in entries:
        if not isinstance(entry, dict):
            return None
        try:
            count = _count(entry.get("tokenCount"), "tokenCount")
        except _ShapeError:
            return None
        modality = str(entry.get("modality", "")).lower()
        sums[modality if modality in sums else "text"] += count
    return Modalities(**sums)


def _count(value: object, key: str) -> int:
    """A token count: a whole number from 0 to 2**31-1 (proto3 JSON may also quote it)."""
    if value is None:
        return 0
    number: object = value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if isinstance(number, int) and not isinstance(number, bool) and 0 <= number <= _MAX_COUNT:
        return number
    shown = json.dumps(value)[:40] if isinstance(value, str | int | float) else _kind(value)
    raise _ShapeError(f"usageMetadata.{key} is {shown}, not a token count")


def _obj(value: object, where: str, nullable: bool = True) -> Mapping[str, Any]:
    if value is None and nullable:  # proto3 JSON: null is "not set"
        return {}
    if not isinstance(value, dict):
        raise _ShapeError(f"{where} is {_kind(value)}, not an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _ShapeError(f"{where} is {_kind(value)}, not a list")
    return value


def _str(value: object, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _ShapeError(f"{where} is {_kind(value)}, not a string")


def _kind(value: object) -> str:
    """A JSON value's type, as a user would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    names = {str: "a string", list: "a list", dict: "an object"}
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)


def structured_value(
    answer: Answer, validator: AnswerValidator, max_output: int | None = None
) -> Any:
    """The answer's JSON value, checked against the schema; :class:`AnswerError` otherwise.
    ``max_output`` is the job's ``generation.maxOutputTokens`` (None: not set), for the advice
    when the answer is cut."""
    if answer.block_reason:
        raise AnswerError("blocked", f"prompt blocked by the API ({answer.block_reason})")
    if not answer.has_candidate:
        raise AnswerError("no_candidates", "the API returned no candidates")
    reason = answer.finish_reason or "STOP"
    if reason == "MAX_TOKENS":
        raise AnswerError("max_tokens", cut_advice(answer, max_output), answer.text)
    if reason != "STOP":
        raise AnswerError(reason.lower(), f"answer stopped by the API ({reason})", answer.text)
    if not answer.text:
        raise AnswerError("empty", "the answer has no text")
    try:
        value = json.loads(answer.text)
    except ValueError as exc:
        raise AnswerError("invalid_json", f"the answer is not JSON: {exc}", answer.text) from None
    except RecursionError:
        raise AnswerError("invalid_json", "the answer is nested too deeply", answer.text) from None
    try:
        problem = validator.problem(value)
        shaped = None if problem else validator.shape(value)
    except RecursionError:
        problem = "nested too deeply to check"
    except ValueError as exc:  # conforms, yet cannot take its column type (a date that is not)
        problem = str(exc)
    if problem is None and _beyond_64_bits(shaped):  # JSON Schema's integers have no bounds
        problem = "a whole number beyond 64 bits, which no output column can hold"
    if problem is not None:
        raise AnswerError("schema", f"the answer breaks the schema: {problem}", answer.text)
    return shaped


def cut_advice(answer: Answer, max_output: int | None) -> str:
    """Why an answer stopped at MAX_TOKENS, and the advice that fits what it used: thinking
    counts against maxOutputTokens; well under the limit, raising it would not help."""
    thinking, output = answer.usage.thinking, answer.usage.output
    used = f"{thinking:,} thinking + {output:,} output tokens"
    if max_output is not None and thinking + output < _WELL_UNDER * max_output:
        return (
            f"the API stopped the answer at MAX_TOKENS after {used}, well under "
            f"generation.maxOutputTokens ({max_output:,}): not the job's limit, so raising it "
            "will not help; a proxy at model.base_url may cap answers, else retry the row later"
        )
    limit = "maxOutputTokens" if max_output is None else f"maxOutputTokens ({max_output:,})"
    if thinking > output:
        return (
            f"answer cut at {limit}: thinking took most of it ({used}); lower "
            "generation.thinkingConfig (thinkingBudget or thinkingLevel) or raise "
            "generation.maxOutputTokens"
        )
    if max_output is None:
        return f"answer cut at the model's default {limit} ({used}); set generation.maxOutputTokens"
    return f"answer cut at {limit} ({used}); raise generation.maxOutputTokens"


def _beyond_64_bits(value: Any) -> bool:
    """Whether a whole number anywhere in ``value`` is outside the int64 range (no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if not _INT64_MIN <= item <= _INT64_MAX:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
