"""Reading answers: the real seed response, and each way an answer can be unusable."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchgen.answers import AnswerError, Usage, parse_response, structured_value
from batchgen.schema import AnswerValidator, normalize_schema


def validator_for(seed: dict[str, Any]) -> AnswerValidator:
    schema = seed["request"]["generationConfig"]["responseSchema"]
    return AnswerValidator(normalize_schema(schema, "seed"))


def test_seed_response_usage_and_value(seed: dict[str, Any]) -> None:
    answer = parse_response(seed["response"])
    assert answer.usage == Usage(prompt=15, output=390, thinking=565, cached=0, total=970)
    assert answer.finish_reason == "STOP"
    assert answer.model_version == "gemini-2.5-flash"
    assert answer.response_id == "1OG6aKq3NMKzqtsP5Omk-Q0"
    value = structured_value(answer, validator_for(seed))
    assert [r["recipeName"] for r in value] == [
        "Classic Chocolate Chip Cookies",
        "Hearty Oatmeal Raisin Cookies",
        "Classic Peanut Butter Cookies",
    ]
    assert value[0]["ingredients"][0] == "2 1/4 cups all-purpose flour"


def test_thought_parts_are_not_the_answer(seed: dict[str, Any]) -> None:
    response = json.loads(json.dumps(seed["response"]))
    parts = response["candidates"][0]["content"]["parts"]
    parts.insert(0, {"text": "Let me think about cookies...", "thought": True})
    assert parse_response(response).text == parts[1]["text"]


def test_missing_counts_are_zero() -> None:
    assert Usage.from_metadata({"promptTokenCount": 7, "totalTokenCount": 7}) == Usage(
        7, 0, 0, 0, 7
    )
    assert Usage.from_metadata(None) == Usage()


def candidate(text: str | None, reason: str = "STOP") -> dict[str, Any]:
    content: dict[str, Any] = {"role": "model"}
    if text is not None:
        content["parts"] = [{"text": text}]
    return {"candidates": [{"content": content, "finishReason": reason, "index": 0}]}


@pytest.mark.parametrize(
    ("payload", "category"),
    [
        ({"promptFeedback": {"blockReason": "SAFETY"}}, "blocked"),
        ({"candidates": [], "usageMetadata": {"promptTokenCount": 5}}, "no_candidates"),
        ({"candidates": None, "usageMetadata": {"promptTokenCount": 5}}, "no_candidates"),
        ({"candidates": [{"finishReason": "SAFETY", "index": 0}]}, "safety"),
        ({"candidates": [{"finishReason": "RECITATION", "index": 0}]}, "recitation"),
        (candidate('[{"recipeName": "Choc', "MAX_TOKENS"), "max_tokens"),
        (candidate(None, "MAX_TOKENS"), "max_tokens"),
        (candidate(""), "empty"),
        (candidate(None), "empty"),
        (candidate("Here are some cookies!"), "invalid_json"),
        (candidate('[{"recipeName": 3}]'), "schema"),
        (candidate('{"recipeName": "x"}'), "schema"),
    ],
)
def test_unusable_answers_get_a_category(
    seed: dict[str, Any], payload: dict[str, Any], category: str
) -> None:
    with pytest.raises(AnswerError) as info:
        structured_value(parse_response(payload), validator_for(seed))
    assert info.value.category == category
    assert "\n" not in info.value.message
