"""The bodies the emulator answers with: GenerateContentResponse, countTokens, error details.

Pure functions of a checked request (see :mod:`batchgen.emulator.wire`), so the same prompt,
model and schema always get the same answer text. Shapes follow docs/gemini-api.md §3, §4 and §9 and
the captured fixture: proto3 JSON that leaves zero counts out, ``index: 0`` on candidates,
thinking tokens that eat into ``maxOutputTokens``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from batchgen.emulator.fakedata import fake_invalid_value, fake_prose, fake_value
from batchgen.emulator.media import Media, by_modality
from batchgen.emulator.wire import ApiError

__all__ = [
    "answer_body",
    "pretty_json",
    "count_tokens_body",
    "duration",
    "estimate_tokens",
    "quota_error",
    "usage_metadata",
]

# Gemini 2.5 and 3.x think before answering; 2.0 and older do not (docs/gemini-api.md §1, §9).
_encode_str = json.encoder.encode_basestring  # the C implementation when there is one
_NON_THINKING_MODEL = re.compile(r"gemini-(1\.|2\.0)|gemma")
_DYNAMIC_THOUGHTS = (100, 1500)
_LEVEL_THOUGHTS = {"MINIMAL": (0, 64), "LOW": (60, 500), "MEDIUM": (200, 1000)}
_CATEGORIES = (
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
)
_QUOTAS = {  # kind -> (quotaId, quotaMetric)
    "rpm": ("GenerateRequestsPerMinutePerProjectPerModel", "generate_content_paid_tier_requests"),
    "tpm": (
        "GenerateContentInputTokensPerModelPerMinute",
        "generate_content_paid_tier_input_token_count",
    ),
    "rpd": ("GenerateRequestsPerDayPerProjectPerModel", "generate_content_paid_tier_requests"),
}
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
    "To monitor your current usage, head to: https://ai.dev/rate-limit. \n"
    "* Quota exceeded for metric: generativelanguage.googleapis.com/{metric}, limit: {limit}, "
    "model: {model}\nPlease retry in {delay}."
)


def pretty_json(value: Any) -> str:
    """``json.dumps(value, indent=2, ensure_ascii=False)``, the same text at about twice the speed.

    The real API pretty-prints its answers, so the emulator does too, in every reply; the
    standard library's indenting encoder is pure Python and was a third of the emulator's CPU.
    Anything unusual (a type JSON lacks, a cycle) goes to ``json.dumps`` for its exact error.
    """
    out: list[str] = []
    try:
        _pretty(value, out, "\n")
    except (TypeError, RecursionError):
        return json.dumps(value, indent=2, ensure_ascii=False)
    return "".join(out)


def _pretty(value: Any, out: list[str], newline: str) -> None:
    # The checks in json.encoder's order, so subclasses come out as json.dumps writes them.
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_float_text(value))
    elif isinstance(value, list | tuple):
        _pretty_items(value, out, newline)
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = newline + "  "
        sep = "{" + inner
        for key, item in value.items():
            out.append(sep)
            out.append(_encode_str(_key_text(key)))
            out.append(": ")
            _pretty(item, out, inner)
            sep = "," + inner
        out.append(newline + "}")
    else:
        raise TypeError(type(value).__name__)


def _pretty_items(value: list[Any] | tuple[Any, ...], out: list[str], newline: str) -> None:
    if not value:
        out.append("[]")
        return
    inner = newline + "  "
    sep = "[" + inner
    for item in value:
        out.append(sep)
        _pretty(item, out, inner)
        sep = "," + inner
    out.append(newline + "]")


def _float_text(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _key_text(key: Any) -> str:
    """A dict key as json.dumps writes it (before quoting)."""
    if isinstance(key, str):
        return key
    if isinstance(key, float):
        return _float_text(key)
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, int):
        return int.__repr__(key)
    raise TypeError(type(key).__name__)


def estimate_tokens(text: str) -> int:
    """The emulator's tokenizer: about four characters a token, at least one for any text."""
    return max(1, round(len(text) / 4)) if text else 0


def duration(seconds: float) -> str:
    """A protobuf Duration string as in RetryInfo: ``"12.345s"``, ``"0.2s"``, ``"26s"``."""
    text = f"{max(seconds, 0.0):.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def quota_error(model: str, kind: str, limit: int, delay: float) -> ApiError:
    """A 429 RESOURCE_EXHAUSTED with QuotaFailure, Help and RetryInfo, as the API sends it."""
    quota_id, metric = _QUOTAS[kind]
    wait = duration(delay)
    violation = {
        "quotaMetric": f"generativelanguage.googleapis.com/{metric}",
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": str(limit),  # int64, so a string in proto3 JSON
    }
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": wait},
    ]
    message = _QUOTA_MESSAGE.format(metric=metric, limit=limit, model=model, delay=wait)
    return ApiError(429, "RESOURCE_EXHAUSTED", message, details)


def usage_metadata(
    prompt: int,
    candidates: int = 0,
    thoughts: int = 0,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """usageMetadata in the fixture's key order; zero counts left out as proto3 does.
    ``details``: promptTokensDetails by modality (all TEXT when not given)."""
    usage: dict[str, Any] = {}
    if prompt:
        usage["promptTokenCount"] = prompt
    if candidates:
        usage["candidatesTokenCount"] = candidates
    if prompt + candidates + thoughts:
        usage["totalTokenCount"] = prompt + candidates + thoughts
    if prompt:
        usage["promptTokensDetails"] = details or [{"modality": "TEXT", "tokenCount": prompt}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def count_tokens_body(prompt: str, media: Sequence[Media] = ()) -> dict[str, Any]:
    """countTokens' answer; the same count as promptTokenCount for the same parts."""
    text = estimate_tokens(prompt)
    tokens = text + sum(m.tokens for m in media)
    if not tokens:
        return {}
    return {"totalTokens": tokens, "promptTokensDetails": by_modality(text, list(media))}


def answer_body(
    body: Mapping[str, Any],
    model: str,
    prompt: str,
    fault: str | None,
    media: Sequence[Media] = (),
) -> dict[str, Any]:
    """The GenerateContentResponse for a checked request; ``fault`` shapes a 200 misbehaviour.
    ``media`` are the request's media parts, read: counted in the prompt by modality, and part
    of what the answer is drawn from (the same text with other bytes answers otherwise).

    Faults handled here: truncated, empty, safety, recitation, blocked, invalid, invalid_last
    (the last candidate breaks the schema) and slow (which only delays a normal answer).
    HTTP-level faults never reach this function. ``candidateCount`` candidates come back, each
    its own deterministic draw (candidate 0 is the answer a single-candidate request gets); the
    usage counts the prompt once and every candidate's output.
    """
    config: Mapping[str, Any] = body.get("generationConfig") or {}
    seen = prompt + "".join(f"\n[{m.digest}]" for m in media)
    seed = _seed(model, seen, config)
    text_tokens = estimate_tokens(prompt)
    prompt_tokens = text_tokens + sum(m.tokens for m in media)
    details = by_modality(text_tokens, list(media))
    if fault in ("blocked", "safety", "recitation"):
        rng = random.Random(seed)
        usage = usage_metadata(prompt_tokens, details=details)
        return _envelope(model, _refusal(fault, rng), usage)
    count = max(1, _int(config.get("candidateCount", 1)))
    candidates, output, thinking = [], 0, 0
    for index in range(count):
        rng = random.Random(seed + index)  # index 0: the single-candidate answer
        broken = fault == "invalid" or (fault == "invalid_last" and index == count - 1)
        one, tokens, thoughts = _candidate(model, config, rng, index, broken, fault)
        candidates.append(one)
        output, thinking = output + tokens, thinking + thoughts
    usage = usage_metadata(prompt_tokens, output, thinking, details)
    return _envelope(model, {"candidates": candidates}, usage)


def _candidate(
    model: str,
    config: Mapping[str, Any],
    rng: random.Random,
    index: int,
    invalid: bool,
    fault: str | None,
) -> tuple[dict[str, Any], int, int]:
    """One candidate, its output tokens and its thinking tokens."""
    text = _answer_text(config, rng, invalid=invalid)
    thoughts = _thought_tokens(model, config, rng)
    text, thoughts, finish = _fit_output(text, thoughts, _int(config.get("maxOutputTokens")), fault)
    parts = []
    if thoughts and (config.get("thinkingConfig") or {}).get("includeThoughts"):
        parts.append({"text": _thought_summary(rng), "thought": True})
    if text:
        parts.append({"text": text})
    content: dict[str, Any] = {"parts": parts, "role": "model"} if parts else {"role": "model"}
    candidate = {"content": content, "finishReason": finish, "index": index}
    return candidate, estimate_tokens(text), thoughts


def _refusal(fault: str, rng: random.Random) -> dict[str, Any]:
    """A blocked prompt (no candidates) or a candidate stopped by SAFETY / RECITATION."""
    if fault == "blocked":
        return {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _ratings(rng)}}
    candidate: dict[str, Any] = {"finishReason": fault.upper(), "index": 0}
    if fault == "safety":
        candidate["safetyRatings"] = _ratings(rng)
    return {"candidates": [candidate]}


def _fit_output(text: str, thoughts: int, limit: int, fault: str | None) -> tuple[str, int, str]:
    """Apply the truncated/empty faults and maxOutputTokens: (text, thoughts, finishReason)."""
    if fault == "truncated":
        return _cut(text), thoughts, "MAX_TOKENS"
    if fault == "empty":
        return "", limit or thoughts, "MAX_TOKENS"
    if limit and thoughts + estimate_tokens(text) > limit:
        # Thinking is spent first and comes out of the same budget (docs/gemini-api.md §9.2).
        thoughts = min(thoughts, limit)
        return text[: (limit - thoughts) * 4], thoughts, "MAX_TOKENS"
    return text, thoughts, "STOP"


def _envelope(model: str, payload: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    # responseId is opaque and unique per call in the real API: 17 random bytes, base64url.
    return {**payload, "usageMetadata": usage, "modelVersion": model,
            "responseId": secrets.token_urlsafe(17)}  # fmt: skip


def _seed(model: str, prompt: str, config: Mapping[str, Any]) -> int:
    schema = config.get("responseSchema", config.get("responseJsonSchema"))
    key = json.dumps([model, prompt, schema], sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _answer_text(config: Mapping[str, Any], rng: random.Random, invalid: bool) -> str:
    schema = config.get("responseSchema", config.get("responseJsonSchema"))
    mime = str(config.get("responseMimeType", "text/plain")).lower()
    if mime == "text/x.enum" and isinstance(schema, Mapping):
        # Enum mode answers with the bare value, not JSON.
        return "unexpected" if invalid else str(rng.choice(schema["enum"]))
    if isinstance(schema, Mapping):
        value = fake_invalid_value(schema, rng) if invalid else fake_value(schema, rng)
        return pretty_json(value)
    if mime == "application/json" and not invalid:
        return json.dumps({"answer": fake_prose(rng)}, indent=2)
    return fake_prose(rng)


def _thought_tokens(model: str, config: Mapping[str, Any], rng: random.Random) -> int:
    if _NON_THINKING_MODEL.match(model):
        return 0
    thinking: Mapping[str, Any] = config.get("thinkingConfig") or {}
    budget = _int(thinking.get("thinkingBudget", -1))
    if budget == 0:
        return 0
    level = str(thinking.get("thinkingLevel", "")).upper()
    low, high = _LEVEL_THOUGHTS.get(level, _DYNAMIC_THOUGHTS)
    drawn = rng.randint(low, high)
    return min(drawn, budget) if budget > 0 else drawn


def _thought_summary(rng: random.Random) -> str:
    return f"**Planning the answer**\n\n{fake_prose(rng, 2)}"


def _cut(text: str) -> str:
    """Cut mid-way, and further if the stub still parses, so the JSON is surely unfinished."""
    cut = max(1, len(text) // 2)
    while cut > 0 and _parses(text[:cut]):
        cut -= 1
    return text[:cut]


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _ratings(rng: random.Random) -> list[dict[str, Any]]:
    """Safety ratings with one category HIGH and blocked, the rest NEGLIGIBLE."""
    high = rng.choice(_CATEGORIES)
    return [
        {"category": c, "probability": "HIGH", "blocked": True}
        if c == high
        else {"category": c, "probability": "NEGLIGIBLE"}
        for c in _CATEGORIES
    ]
