"""The offline Gemini emulator, tested over real sockets with real aiohttp clients."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

import aiohttp
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.emulator import (
    FAULTS,
    KNOWN_MODELS,
    STATS_PATH,
    EmulatorConfig,
    EmulatorServer,
    EmulatorThread,
    estimate_tokens,
)
from batchgen.emulator.fakedata import fake_invalid_value, fake_value
from batchgen.emulator.replies import pretty_json
from batchgen.job.schema import to_json_schema
from tests.helpers.emulator_calls import FLASH, KEY, MakeClient, ask, call
from tests.helpers.strategies import GEMINI_SCHEMAS


def text_of(answer: dict[str, Any]) -> str:
    parts = answer["candidates"][0]["content"].get("parts", [])
    return "".join(p["text"] for p in parts if not p.get("thought"))


def check_usage(answer: dict[str, Any], prompt: str) -> dict[str, Any]:
    usage: dict[str, Any] = answer["usageMetadata"]
    counts = [usage.get(k, 0) for k in ("promptTokenCount", "candidatesTokenCount")]
    assert usage["totalTokenCount"] == sum(counts) + usage.get("thoughtsTokenCount", 0)
    assert usage["promptTokenCount"] == estimate_tokens(prompt)
    assert usage["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": counts[0]}]
    assert all(v != 0 for v in usage.values())  # proto3 leaves zero counts out
    return usage


# --- the normal answer ---------------------------------------------------------------------


async def test_seed_request_gets_an_answer_shaped_like_the_real_one(
    make_client: MakeClient, seed: dict[str, Any]
) -> None:
    client, _ = await make_client()
    status, answer = await call(client, seed["request"], model=seed["model"])
    real = seed["response"]
    assert status == 200
    assert list(answer) == list(real)
    candidate, real_candidate = answer["candidates"][0], real["candidates"][0]
    assert list(candidate) == list(real_candidate)
    assert candidate["finishReason"] == "STOP" and candidate["index"] == 0
    assert candidate["content"]["role"] == "model"
    assert [list(p) for p in candidate["content"]["parts"]] == [["text"]]
    # Same keys in the same order, thinking tokens included (2.5 Flash thinks by default).
    assert list(answer["usageMetadata"]) == list(real["usageMetadata"])
    prompt = seed["request"]["contents"][0]["parts"][0]["text"]
    usage = check_usage(answer, prompt)
    assert usage["candidatesTokenCount"] == estimate_tokens(text_of(answer))
    assert answer["modelVersion"] == seed["model"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{23}", answer["responseId"])
    # The text is indented JSON like the fixture's, and it conforms to the schema.
    value = json.loads(text_of(answer))
    assert text_of(answer) == json.dumps(value, indent=2, ensure_ascii=False)
    schema = seed["request"]["generationConfig"]["responseSchema"]
    jsonschema.validate(value, to_json_schema(schema))
    for item in value:
        assert list(item) == [k for k in schema["items"]["propertyOrdering"] if k in item]


async def test_same_prompt_same_answer_other_prompt_other_answer(
    make_client: MakeClient, seed: dict[str, Any]
) -> None:
    client, _ = await make_client()
    _, first = await call(client, seed["request"])
    _, again = await call(client, seed["request"])
    other = json.loads(json.dumps(seed["request"]))
    other["contents"][0]["parts"][0]["text"] += " Vegan ones."
    _, different = await call(client, other)
    assert text_of(first) == text_of(again)
    assert first["usageMetadata"] == again["usageMetadata"]
    assert first["responseId"] != again["responseId"]
    assert text_of(first) != text_of(different)


async def test_plain_text_without_a_schema(make_client: MakeClient) -> None:
    client, _ = await make_client()
    body = ask("Say something nice.")
    body["systemInstruction"] = {"parts": [{"text": "You are kind."}]}
    status, answer = await call(client, body)
    text = text_of(answer)
    assert status == 200 and text.endswith(".") and len(text.split()) > 10
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    check_usage(answer, "You are kind.\nSay something nice.")


NESTED: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "title": {"type": "STRING", "minLength": 5, "maxLength": 12},
        "rating": {"type": "INTEGER", "minimum": 1, "maximum": 5},
        "score": {"type": "NUMBER", "minimum": -1.5, "maximum": 1.5},
        "mood": {"type": "STRING", "enum": ["happy", "sad", "meh"], "nullable": True},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 2, "maxItems": 3},
        "author": {
            "type": "OBJECT",
            "properties": {"name": {"type": "STRING"}, "born": {"type": "STRING",
                                                                "format": "date"}},
            "required": ["name"],
        },
        "reviews": {
            "type": "ARRAY",
            "items": {
                "type": "OBJECT",
                "properties": {"ok": {"type": "BOOLEAN"}, "note": {"type": "STRING",
                                                                   "nullable": True}},
                "required": ["ok", "note"],
            },
        },
    },
    "required": ["title", "rating", "tags", "author"],
    "propertyOrdering": ["rating", "title", "score", "mood", "tags", "author", "reviews"],
}  # fmt: skip
SCHEMAS: dict[str, dict[str, Any]] = {
    "nested": NESTED,
    "lower-case types": {
        "type": "array",
        "items": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    },
    "anyOf": {
        "type": "OBJECT",
        "properties": {
            "value": {"anyOf": [{"type": "INTEGER", "minimum": 0}, {"type": "STRING"}]},
            "nothing": {"type": "NULL"},
            "free": {"type": "OBJECT"},
        },
        "required": ["value", "nothing", "free"],
    },
    "snake_case keys": {
        "type": "Object",
        "properties": {"xs": {"type": "ARRAY", "items": {"type": "NUMBER"}, "min_items": 4,
                              "max_items": 4}, "when": {"type": "STRING", "format": "date-time"}},
        "required": ["xs", "when"],
        "property_ordering": ["when", "xs"],
    },
    "enum at the root": {"type": "STRING", "enum": ["positive", "negative"]},
}  # fmt: skip


@pytest.mark.parametrize("name", list(SCHEMAS))
async def test_structured_answers_conform_to_the_schema(make_client: MakeClient, name: str) -> None:
    client, _ = await make_client()
    schema = SCHEMAS[name]
    validator = jsonschema.Draft202012Validator(to_json_schema(schema))
    seen_null = set()
    for i in range(25):
        status, answer = await call(client, ask(f"Review number {i}", schema))
        assert status == 200
        value = json.loads(text_of(answer))
        assert validator.is_valid(value), (name, value)
        if isinstance(value, dict):
            seen_null |= {k for k, v in value.items() if v is None}
            ordering = schema.get("propertyOrdering") or schema.get("property_ordering")
            if ordering:
                assert list(value) == [k for k in ordering if k in value]
    if name == "nested":
        assert "mood" in seen_null  # nullable does produce null now and then


async def test_response_json_schema_is_an_accepted_alternative(make_client: MakeClient) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": ["string", "null"]},
            "kind": {"enum": ["a", "b"]},
            "child": {"$ref": "#/$defs/node"},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}],
                     "items": False, "minItems": 2, "maxItems": 2},
        },
        "required": ["name", "kind", "pair"],
        "additionalProperties": False,
        "$defs": {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}}},
    }  # fmt: skip
    client, _ = await make_client()
    for i in range(15):
        generation = {"responseMimeType": "application/json", "responseJsonSchema": schema}
        status, answer = await call(client, ask(f"thing {i}", None, **generation))
        assert status == 200
        jsonschema.validate(json.loads(text_of(answer)), schema)


async def test_text_x_enum_answers_with_the_bare_value(make_client: MakeClient) -> None:
    client, _ = await make_client()
    schema = {"type": "STRING", "enum": ["red", "green"]}
    body = ask("Pick", responseMimeType="text/x.enum", responseSchema=schema)
    status, answer = await call(client, body)
    assert status == 200 and text_of(answer) in ("red", "green")


# --- fake data as a property ---------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(schema=GEMINI_SCHEMAS, seed=st.integers(0, 2**32))
def test_fake_value_conforms_to_any_gemini_schema(schema: dict[str, Any], seed: int) -> None:
    validator = jsonschema.Draft202012Validator(to_json_schema(schema))
    value = fake_value(schema, random.Random(seed))
    assert validator.is_valid(value), list(validator.iter_errors(value))[:1]
    assert fake_value(schema, random.Random(seed)) == value  # deterministic per seed
    if "anyOf" not in schema:
        # The "invalid" fault's value breaks the same schema.
        assert not validator.is_valid(fake_invalid_value(schema, random.Random(seed)))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_pretty_json_writes_what_json_dumps_writes(value: Any) -> None:
    assert pretty_json(value) == json.dumps(value, indent=2, ensure_ascii=False)


def test_pretty_json_odd_keys_tuples_and_errors() -> None:
    value = {7: (), 2.5: [float("inf"), -0.0], False: {}, None: "é\n\u2028", "x": (1, [2])}
    assert pretty_json(value) == json.dumps(value, indent=2, ensure_ascii=False)
    with pytest.raises(TypeError):
        pretty_json({"a": object()})


# --- errors, in the real API's envelope ----------------------------------------------------


async def test_no_key_is_403_and_a_wrong_key_is_400_api_key_invalid(
    make_client: MakeClient,
) -> None:
    client, _ = await make_client(api_keys=frozenset({KEY}))
    assert await call(client, ask("hi"), key=None) == (403, {"error": {
        "code": 403,
        "message": "Method doesn't allow unregistered callers (callers without established "
        "identity). Please use API Key or other form of API consumer identity to call this API.",
        "status": "PERMISSION_DENIED",
    }})  # fmt: skip
    assert await call(client, ask("hi"), key="not-the-key") == (400, {"error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }],
    }})  # fmt: skip
    async with client.post(f"/v1beta/models/{FLASH}:generateContent?key={KEY}",
                           json=ask("hi")) as r:  # fmt: skip
        assert r.status == 200  # the ?key= form works too


async def test_any_key_is_valid_without_a_key_list(make_client: MakeClient) -> None:
    client, _ = await make_client()
    assert (await call(client, ask("hi"), key="whatever"))[0] == 200


async def test_the_key_is_never_echoed_or_logged(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "AIzaSECRET-never-shown"
    client, _ = await make_client(api_keys=frozenset({KEY}))
    with caplog.at_level(logging.DEBUG):
        for path in ("gemini-2.5-flash:generateContent", "nope:generateContent", "x"):
            async with client.post(f"/v1beta/models/{path}?key={secret}", json=ask("q")) as r:
                assert secret not in await r.text()
    assert caplog.records and secret not in caplog.text


async def test_unknown_model_is_404(make_client: MakeClient) -> None:
    client, _ = await make_client()
    assert await call(client, ask("hi"), model="gemini-9-ultra") == (404, {"error": {
        "code": 404,
        "message": "models/gemini-9-ultra is not found for API version v1beta, or is not "
        "supported for generateContent. Call ListModels to see the list of available models "
        "and their supported methods.",
        "status": "NOT_FOUND",
    }})  # fmt: skip


def _bad_request(message: str, field: str | None) -> dict[str, Any]:
    violation = {"field": field, "description": message} if field else {"description": message}
    return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT", "details": [
        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
    ]}}  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "message", "field"),
    [
        (
            {"type": "OBJECT", "properties": {"a": {"type": "STRING"}},
             "additionalProperties": False},
            'Invalid JSON payload received. Unknown name "additionalProperties" at '
            "'generation_config.response_schema': Cannot find field.",
            "generation_config.response_schema",
        ),
        (
            {"type": "OBJECT", "properties": {"a": {"type": "STRING"}, "b": {"const": "x"}}},
            'Invalid JSON payload received. Unknown name "const" at '
            "'generation_config.response_schema.properties[1].value': Cannot find field.",
            "generation_config.response_schema.properties[1].value",
        ),
        (
            {"type": "ARRAY", "items": {"type": ["string", "null"]}},
            'Invalid JSON payload received. Unknown name "type" at '
            "'generation_config.response_schema.items': Proto field is not repeating, "
            "cannot start list.",
            "generation_config.response_schema.items",
        ),
        (
            {"type": "TEXT"},
            "Invalid value at 'generation_config.response_schema.type' "
            '(type.googleapis.com/google.ai.generativelanguage.v1beta.Type), "TEXT"',
            "generation_config.response_schema.type",
        ),
    ],
)  # fmt: skip
async def test_schema_errors_name_the_field_and_come_before_the_key_check(
    make_client: MakeClient, schema: dict[str, Any], message: str, field: str
) -> None:
    client, _ = await make_client(api_keys=frozenset({KEY}))
    expected = _bad_request(message, field)
    assert await call(client, ask("hi", schema), key=None) == (400, expected)


async def test_a_config_seen_before_gets_the_same_answers(make_client: MakeClient) -> None:
    """The emulator memoizes reading a generationConfig; errors must come back every time."""
    client, _ = await make_client()
    bad = {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "additionalProperties": 1}
    untyped = {"type": "OBJECT", "properties": {"a": {"description": "no type"}}}
    for _ in range(2):
        status, answer = await call(client, ask("hi", bad))
        assert status == 400 and "additionalProperties" in answer["error"]["message"]
        status, answer = await call(client, ask("hi", untyped))
        assert status == 400 and "properties[a].type: must be specified" in str(answer)
        count = {"generateContentRequest": ask("hi", untyped)}
        status, answer = await call(client, count, method="countTokens")
        assert status == 400 and "generate_content_request.generation_config" in str(answer)
        status, _ = await call(client, ask("hi", responseSchema={"type": "STRING"}))
        assert status == 400  # a schema without a JSON MIME type
    good = ask("hi", {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}})
    first, second = await call(client, good), await call(client, good)
    assert first[0] == second[0] == 200 and text_of(first[1]) == text_of(second[1])


async def test_other_bad_bodies(make_client: MakeClient) -> None:
    client, _ = await make_client()
    unknown = 'Invalid JSON payload received. Unknown name "prompt": Cannot find field.'
    assert await call(client, {"prompt": "hi", **ask("hi")}) == (400, _bad_request(unknown, None))
    status, answer = await call(client, b'{"contents": [}')
    assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert answer["error"]["message"].startswith("Invalid JSON payload received. Unexpected")
    empty: list[dict[str, Any]] = [{}, {"contents": []}]
    for body in empty:
        assert await call(client, body) == (400, {"error": {
            "code": 400, "status": "INVALID_ARGUMENT",
            "message": "* GenerateContentRequest.contents: contents is not specified\n",
        }})  # fmt: skip
    status, answer = await call(client, ask("hi", responseSchema={"type": "STRING"}))
    assert status == 400 and "response_mime_type" in answer["error"]["message"]
    status, answer = await call(client, ask("hi", maxOutputTokens="many"))
    assert status == 400 and "(TYPE_INT32)" in answer["error"]["message"]


async def test_snake_case_and_enum_numbers_are_accepted(make_client: MakeClient) -> None:
    client, _ = await make_client()
    body = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "system_instruction": {"parts": [{"text": "be brief"}]},
        "generation_config": {"response_mime_type": "application/json",
                              "response_schema": {"type": 6, "properties": {"n": {"type": 3}}},
                              "thinking_config": {"thinking_budget": 0}},
        "safety_settings": [{"category": 7, "threshold": "BLOCK_NONE"}],
    }  # fmt: skip
    status, answer = await call(client, body)
    assert status == 200
    assert set(json.loads(text_of(answer))) <= {"n"}
    assert "thoughtsTokenCount" not in answer["usageMetadata"]


async def test_unknown_routes_and_methods_are_404_envelopes(make_client: MakeClient) -> None:
    client, emulator = await make_client()
    for method, path in [("GET", "/v1beta/models"), ("GET", f"/v1beta/models/{FLASH}:generate"
                         "Content"), ("POST", f"/v1beta/models/{FLASH}:embedContent")]:  # fmt: skip
        async with client.request(method, path) as r:
            body = await r.json()
            assert r.status == 404 and body["error"]["status"] == "NOT_FOUND"
    assert emulator.counts["status:404"] == 3


async def test_stats_route_returns_the_counts_and_is_not_counted(
    make_client: MakeClient,
) -> None:
    client, emulator = await make_client()
    await call(client, ask("hello"))
    await call(client, ask("hello"), key=None)
    for _ in range(2):
        async with client.get(STATS_PATH) as r:
            assert r.status == 200 and r.content_type == "application/json"
            stats = await r.json()
    assert stats == dict(emulator.counts)
    assert stats == {"generateContent": 2, "status:200": 1, "status:403": 1, "tier:standard": 1}
    async with client.post(STATS_PATH) as r:  # only GET; and a wrong method is not counted
        assert r.status == 404
    assert emulator.counts == stats


# --- thinking and maxOutputTokens ----------------------------------------------------------


async def test_thinking_tokens_by_model_and_budget(make_client: MakeClient) -> None:
    client, _ = await make_client()
    _, old = await call(client, ask("hello there"), model="gemini-2.0-flash")
    assert "thoughtsTokenCount" not in old["usageMetadata"]
    _, pro = await call(client, ask("hello there"), model="gemini-3-pro-preview")
    assert 100 <= pro["usageMetadata"]["thoughtsTokenCount"] <= 1500
    _, capped = await call(client, ask("hello there", thinkingConfig={"thinkingBudget": 150}))
    assert 0 < capped["usageMetadata"]["thoughtsTokenCount"] <= 150
    _, off = await call(client, ask("hello there", thinkingConfig={"thinkingBudget": 0}))
    assert "thoughtsTokenCount" not in off["usageMetadata"]
    body = ask("hello there", thinkingConfig={"includeThoughts": True})
    _, shown = await call(client, body)
    parts = shown["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and "thought" not in parts[1]
    check_usage(shown, "hello there")


async def test_thinking_eats_max_output_tokens(make_client: MakeClient) -> None:
    client, _ = await make_client()
    budget = {"thinkingBudget": 300}
    _, cut = await call(client, ask("essay", NESTED, maxOutputTokens=320, thinkingConfig=budget))
    usage = check_usage(cut, "essay")
    assert cut["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert usage["thoughtsTokenCount"] + usage.get("candidatesTokenCount", 0) <= 320
    _, none = await call(client, ask("essay", NESTED, maxOutputTokens=50, thinkingConfig=budget))
    assert none["candidates"][0] == {"content": {"role": "model"}, "finishReason": "MAX_TOKENS",
                                     "index": 0}  # fmt: skip
    assert "candidatesTokenCount" not in none["usageMetadata"]
    assert none["usageMetadata"]["thoughtsTokenCount"] == 50


# --- rate limits on an injected clock ------------------------------------------------------


def _quota(answer: dict[str, Any]) -> tuple[str, str, str]:
    details = {d["@type"].rsplit(".", 1)[1]: d for d in answer["error"]["details"]}
    assert set(details) == {"QuotaFailure", "Help", "RetryInfo"}
    violation = details["QuotaFailure"]["violations"][0]
    assert violation["quotaDimensions"] == {"location": "global", "model": FLASH}
    delay = details["RetryInfo"]["retryDelay"]
    assert answer["error"]["message"].endswith(f"Please retry in {delay}.")
    return violation["quotaId"], violation["quotaValue"], delay


async def test_rpm_limit_answers_429_with_retry_info(make_client: MakeClient) -> None:
    client, emulator = await make_client(rpm_limit=2)
    now = [1000.0]
    emulator.clock = lambda: now[0]
    assert (await call(client, ask("a")))[0] == 200
    now[0] = 1010.0
    assert (await call(client, ask("b")))[0] == 200
    now[0] = 1012.655
    status, answer = await call(client, ask("c"))
    assert (status, answer["error"]["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert answer["error"]["message"].startswith("You exceeded your current quota")
    quota_id = "GenerateRequestsPerMinutePerProjectPerModel"
    assert _quota(answer) == (quota_id, "2", "47.345s")
    now[0] = 1060.0  # the first request has left the window; the refused one never entered
    assert (await call(client, ask("d")))[0] == 200
    assert (await call(client, ask("e")))[0] == 429
    assert emulator.counts["status:429"] == 2 and emulator.counts["status:200"] == 3
    emulator.config.rpm_limit = None  # limits are read per call, so they can change live
    assert (await call(client, ask("f")))[0] == 200


async def test_tpm_and_rpd_limits(make_client: MakeClient) -> None:
    client, emulator = await make_client(tpm_limit=60, rpd_limit=3)
    now = [0.0]
    emulator.clock = lambda: now[0]
    long_prompt = "x" * 100  # 25 tokens
    assert (await call(client, ask(long_prompt)))[0] == 200
    now[0] = 30.0
    assert (await call(client, ask(long_prompt)))[0] == 200
    now[0] = 45.5
    status, answer = await call(client, ask(long_prompt))
    quota_id = "GenerateContentInputTokensPerModelPerMinute"
    assert (status, _quota(answer)) == (429, (quota_id, "60", "14.5s"))
    now[0] = 61.0
    assert (await call(client, ask(long_prompt)))[0] == 200
    now[0] = 200.0
    status, answer = await call(client, ask("short"))
    day_id = "GenerateRequestsPerDayPerProjectPerModel"
    assert (status, _quota(answer)) == (429, (day_id, "3", "86200s"))


# --- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "message"),
    [
        ("500", "INTERNAL", "An internal error has occurred. Please retry or report in "
                            "https://developers.generativeai.google/guide/troubleshooting"),
        ("503", "UNAVAILABLE", "The model is overloaded. Please try again later."),
        ("504", "DEADLINE_EXCEEDED",
         "The service is unable to finish processing within the deadline."),
    ],
)  # fmt: skip
async def test_server_error_faults(
    make_client: MakeClient, fault: str, status: str, message: str
) -> None:
    client, emulator = await make_client(script={"row-1": [fault]})
    expected = {"error": {"code": int(fault), "message": message, "status": status}}
    assert await call(client, ask("row-1")) == (int(fault), expected)
    assert emulator.counts[f"fault:{fault}"] == 1


async def test_injected_429_has_a_short_retry_delay(make_client: MakeClient) -> None:
    client, _ = await make_client(script={"row-1": ["429"]})
    status, answer = await call(client, ask("row-1"))
    assert status == 429 and _quota(answer)[2] == "0.2s"


async def test_answer_faults(make_client: MakeClient) -> None:
    faults = ["truncated", "empty", "safety", "recitation", "blocked", "invalid"]
    client, _ = await make_client(script={"row": faults})
    answers = {}
    for fault in faults:
        status, answers[fault] = await call(client, ask("row 7", NESTED))
        assert status == 200
    cut = answers["truncated"]["candidates"][0]
    assert cut["finishReason"] == "MAX_TOKENS"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of(answers["truncated"]))
    assert answers["empty"]["candidates"] == [
        {"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}
    ]
    safety = answers["safety"]["candidates"][0]
    assert safety["finishReason"] == "SAFETY" and "content" not in safety
    assert [r for r in safety["safetyRatings"] if r["probability"] == "HIGH"][0]["blocked"]
    assert answers["recitation"]["candidates"] == [{"finishReason": "RECITATION", "index": 0}]
    blocked = answers["blocked"]
    assert "candidates" not in blocked and blocked["promptFeedback"]["blockReason"] == "SAFETY"
    assert set(blocked["usageMetadata"]) == {"promptTokenCount", "totalTokenCount",
                                             "promptTokensDetails"}  # fmt: skip
    invalid = answers["invalid"]
    assert invalid["candidates"][0]["finishReason"] == "STOP"
    validator = jsonschema.Draft202012Validator(to_json_schema(NESTED))
    assert not validator.is_valid(json.loads(text_of(invalid)))
    # The script is used up: normal answers again.
    _, normal = await call(client, ask("row 7", NESTED))
    assert validator.is_valid(json.loads(text_of(normal)))


async def test_drop_closes_the_connection_without_a_response(make_client: MakeClient) -> None:
    client, emulator = await make_client(script={"row-1": ["drop", "ok"]})
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await call(client, ask("row-1"))
    assert (await call(client, ask("row-1")))[0] == 200
    assert emulator.counts["fault:drop"] == 1 and emulator.counts["status:200"] == 1


async def test_slow_answers_late(make_client: MakeClient) -> None:
    client, _ = await make_client(script={"row-1": ["slow", "slow"]}, slow_seconds=0.3)
    assert EmulatorConfig().slow_seconds == 2.0
    path = f"/v1beta/models/{FLASH}:generateContent"
    timeout = aiohttp.ClientTimeout(total=0.1)
    with pytest.raises(asyncio.TimeoutError):
        async with client.post(path, json=ask("row-1"), headers={"x-goog-api-key": KEY},
                               timeout=timeout) as r:  # fmt: skip
            await r.read()
    started = time.monotonic()
    assert (await call(client, ask("row-1")))[0] == 200
    assert time.monotonic() - started >= 0.3


async def test_script_first_matching_key_decides(make_client: MakeClient) -> None:
    client, _ = await make_client(script={"row-1": ["503"], "row": ["500", "500"]})
    assert (await call(client, ask("row-12")))[0] == 503  # "row-1" comes first
    assert (await call(client, ask("row-12")))[0] == 200  # its list is used up
    assert (await call(client, ask("row-2")))[0] == 500


async def test_fault_rates_are_seeded_dice(make_client: MakeClient) -> None:
    async def statuses(seed: int) -> list[int]:
        client, _ = await make_client(fault_rates={"503": 0.3, "500": 0.2}, seed=seed)
        return [(await call(client, ask(f"row {i}")))[0] for i in range(30)]

    first = await statuses(7)
    assert first == await statuses(7)
    assert {200, 500, 503} == set(first)
    assert first != await statuses(8)


def test_config_rejects_unknown_faults_and_rates() -> None:
    assert "ok" not in FAULTS and len(FAULTS) == 14
    with pytest.raises(ValueError, match="unknown fault"):
        EmulatorConfig(fault_rates={"timeout": 0.1})
    with pytest.raises(ValueError, match="more than 1"):
        EmulatorConfig(fault_rates={"500": 0.7, "503": 0.7})
    with pytest.raises(ValueError, match="unknown fault"):
        EmulatorConfig(script={"row": ["ok", "crash"]})


# --- countTokens, recording, latency -------------------------------------------------------


async def test_count_tokens_agrees_with_prompt_token_count(make_client: MakeClient) -> None:
    client, _ = await make_client()
    body = ask("How many tokens is this sentence, roughly speaking?")
    body["systemInstruction"] = {"parts": [{"text": "Answer in French."}]}
    _, answer = await call(client, body)
    prompt_tokens = answer["usageMetadata"]["promptTokenCount"]
    status, counted = await call(client, {"generateContentRequest": body}, method="countTokens")
    assert status == 200
    assert counted == {
        "totalTokens": prompt_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
    }
    _, plain = await call(client, {"contents": body["contents"]}, method="countTokens")
    assert plain["totalTokens"] == estimate_tokens(body["contents"][0]["parts"][0]["text"])
    status, missing = await call(client, {"contents": body["contents"]}, method="countTokens",
                                 model="gemini-0")  # fmt: skip
    assert status == 404 and "not supported for countTokens" in missing["error"]["message"]
    assert (await call(client, {"contents": []}, method="countTokens", key=None))[0] == 400
    assert (await call(client, {"contents": body["contents"]}, "gemini-2.0-flash", "countTokens",
                       key=None))[0] == 403  # fmt: skip


def test_estimate_tokens() -> None:
    assert [estimate_tokens(t) for t in ("", "a", "abcdef", "x" * 400)] == [0, 1, 2, 100]


async def test_record_keeps_bodies_and_counts_calls(make_client: MakeClient) -> None:
    client, emulator = await make_client(record=True, latency_ms=30)
    started = time.monotonic()
    await call(client, ask("first"))
    assert time.monotonic() - started >= 0.03
    await call(client, ask("second"), key=None)
    assert [b["contents"][0]["parts"][0]["text"] for b in emulator.received] == ["first", "second"]
    assert emulator.counts["generateContent"] == 2
    assert emulator.counts["status:200"] == 1 and emulator.counts["status:403"] == 1
    assert {"gemini-2.5-pro", "gemini-2.0-flash", "gemini-3-flash-preview"} <= KNOWN_MODELS


# --- the ways to run it --------------------------------------------------------------------


async def test_emulator_server_in_the_current_loop(seed: dict[str, Any]) -> None:
    async with EmulatorServer(EmulatorConfig(record=True)) as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.base_url)
        url = f"{server.base_url}/v1beta/models/{FLASH}:generateContent"
        async with aiohttp.ClientSession() as session:
            async with session.post(
                url, json=seed["request"], headers={"x-goog-api-key": KEY}
            ) as r:
                assert r.status == 200
        assert len(server.emulator.received) == 1


def test_emulator_thread_serves_synchronous_callers() -> None:
    with EmulatorThread(EmulatorConfig(api_keys=frozenset({KEY}))) as server:
        request = urllib.request.Request(
            f"{server.base_url}/v1beta/models/{FLASH}:generateContent",
            data=json.dumps(ask("hello")).encode(),
            headers={"x-goog-api-key": KEY, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)["candidates"][0]["finishReason"] == "STOP"
        assert server.emulator.counts["status:200"] == 1
        taken = int(server.base_url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            EmulatorThread(port=taken).start()


def test_serve_prints_its_url_and_answers() -> None:
    code = "from batchgen.emulator import EmulatorConfig, serve; serve(EmulatorConfig(), port=0)"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            assert match, line
            url = f"{match.group(0)}/v1beta/models/{FLASH}:countTokens?key={KEY}"
            request = urllib.request.Request(url, data=json.dumps(ask("abcd")).encode())
            with urllib.request.urlopen(request, timeout=5) as response:
                assert json.load(response)["totalTokens"] == 1
        finally:
            proc.terminate()
            proc.wait(timeout=5)


async def test_large_prompts_are_accepted(make_client: MakeClient) -> None:
    client, _ = await make_client()
    prompt = "word " * 400_000  # 2 MB, past aiohttp's default body limit of 1 MiB
    status, answer = await call(client, ask(prompt))
    assert status == 200 and answer["usageMetadata"]["promptTokenCount"] == 500_000
