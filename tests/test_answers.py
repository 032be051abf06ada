"""Reading answers: the real seed response, and each way an answer can be unusable."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.gemini.answers import AnswerError, parse_response, read_usage, structured_value
from batchgen.job.schema import AnswerValidator, normalize_schema
from batchgen.records import Modalities, Usage
from tests.helpers.paths import SEED_COPY


def validator_for(seed: dict[str, Any]) -> AnswerValidator:
    schema = seed["request"]["generationConfig"]["responseSchema"]
    return AnswerValidator(normalize_schema(schema, "seed"))


SEED = json.loads(SEED_COPY.read_text())  # hypothesis tests take no function-scoped fixtures
SEED_VALIDATOR = validator_for(SEED)


def test_seed_response_usage_and_value(seed: dict[str, Any]) -> None:
    answer = parse_response(seed["response"])
    # the seed's promptTokensDetails: all 15 prompt tokens are text
    text = Modalities(text=15)
    assert answer.usage == Usage(15, 390, 565, 0, 970, prompt_details=text)
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
    assert read_usage({"promptTokenCount": 7, "totalTokenCount": 7}) == Usage(7, 0, 0, 0, 7)
    assert read_usage(None) == Usage()


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
        (candidate("[" * 100_000), "invalid_json"),  # deeper than Python's recursion limit
        (candidate('[{"recipeName": "x", "ingredients": [], "n": 1' + "0" * 30 + "}]"), "schema"),
    ],
)
def test_unusable_answers_get_a_category(
    seed: dict[str, Any], payload: dict[str, Any], category: str
) -> None:
    with pytest.raises(AnswerError) as info:
        structured_value(parse_response(payload), validator_for(seed))
    assert info.value.category == category
    assert "\n" not in info.value.message


# --- any 200 body: parse_response is total ------------------------------------------------

_FIELDS = (
    "candidates content parts text thought finishReason promptFeedback blockReason usageMetadata "
    "promptTokenCount candidatesTokenCount thoughtsTokenCount totalTokenCount modelVersion "
    "responseId error"
).split()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value where another value could go."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*path, i))
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


def _check_total(payload: Any, validator: AnswerValidator) -> None:
    """Either a readable answer whose fields fit the output's columns, or an AnswerError."""
    try:
        answer = parse_response(payload)
    except AnswerError as exc:
        assert exc.category == "malformed_response" and "\n" not in exc.message
        assert exc.text is not None and len(exc.text) <= 500
        return
    usage = answer.usage
    details = [d for d in (usage.prompt_details, usage.cached_details) if d is not None]
    for count in [usage.prompt, usage.output, usage.thinking, usage.cached, usage.total,
                  *(n for d in details for n in d.as_dict().values())]:  # fmt: skip
        assert isinstance(count, int) and 0 <= count < 2**31
    for text in (answer.text, answer.finish_reason, answer.block_reason, answer.model_version,
                 answer.response_id):  # fmt: skip
        assert text is None or isinstance(text, str)
    try:
        structured_value(answer, validator)
    except AnswerError:
        pass


@settings(max_examples=150, deadline=None)
@given(payload=JSON)
def test_any_json_value_is_an_answer_or_an_answer_error(payload: Any) -> None:
    _check_total(payload, SEED_VALIDATOR)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), new=JSON)
def test_any_mutation_of_the_real_response_is_an_answer_or_an_answer_error(
    data: st.DataObject, new: Any
) -> None:
    response = SEED["response"]
    path = data.draw(st.sampled_from(_paths(response)))
    _check_total(_replaced(response, path, new), SEED_VALIDATOR)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (None, "the body is null, not an object"),
        ({"candidates": [None], "usageMetadata": {}}, "candidates[0] is null, not an object"),
        ({"candidates": [{"content": {"parts": {}}}]}, "content.parts is an object, not a list"),
        ({"candidates": [{"content": {"parts": [{"text": 5}]}}]}, "parts[0].text is a number"),
        ({"usageMetadata": {"promptTokenCount": -3}}, "promptTokenCount is -3, not a token count"),
        ({"usageMetadata": {"totalTokenCount": 2**40}}, "not a token count"),
        (
            {"usageMetadata": {"totalTokenCount": True}},
            "totalTokenCount is true, not a token count",
        ),
        ({"candidates": [], "modelVersion": ["x"]}, "modelVersion is a list, not a string"),
        ({"error": {"code": 500, "message": "boom\nagain"}}, "an error envelope: boom again"),
    ],
)
def test_what_is_wrong_is_said_in_one_line(payload: Any, says: str) -> None:
    with pytest.raises(AnswerError) as info:
        parse_response(payload)
    assert info.value.category == "malformed_response"
    assert says in info.value.message and "\n" not in info.value.message


def test_quoted_and_integral_counts_are_read() -> None:
    # proto3 JSON may quote integers, and a float with no fraction is still a whole number
    usage = {"promptTokenCount": "12", "candidatesTokenCount": 3.0, "totalTokenCount": 15}
    assert parse_response({"usageMetadata": usage}).usage == Usage(12, 3, 0, 0, 15)
