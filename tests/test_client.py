"""Error classification against a real local server that answers like Gemini or a proxy."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batchgen.errors import FatalApiError, QuotaExhaustedError
from batchgen.gemini.answers import AnswerError, parse_response
from batchgen.gemini.client import ApiError, GeminiClient
from batchgen.gemini.transport import Transport
from batchgen.job.spec import ModelSpec

KEY = "sk-secret-value-1"
RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "45.837906927s"}


def envelope(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


def quota(quota_id: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaId": quota_id, "quotaValue": "250"}]}  # fmt: skip


ANSWERS: dict[str, tuple[int, Any, dict[str, str]]] = {
    "ok": (200, {"candidates": []}, {}),
    "rpm": (429, envelope(429, "RESOURCE_EXHAUSTED", "quota", RETRY_INFO), {}),
    "rpd": (
        429,
        envelope(
            429,
            "RESOURCE_EXHAUSTED",
            "quota",
            quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
        ),
        {},
    ),  # fmt: skip
    "proxy503": (503, "<html>Service Unavailable</html>", {"Retry-After": "7"}),
    "badkey": (
        400,
        envelope(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            {"reason": "API_KEY_INVALID"},
        ),
        {},
    ),  # fmt: skip
    "nokey": (403, envelope(403, "PERMISSION_DENIED", f"key {KEY} is not allowed"), {}),
    "nomodel": (
        404,
        envelope(404, "NOT_FOUND", "models/x is not found for API version v1beta"),
        {},
    ),
    "bad": (400, envelope(400, "INVALID_ARGUMENT", "Invalid JSON payload received."), {}),
    "notjson": (200, "this is not json", {}),
    "bigerror": (502, "<html>" + "x" * 1_000_000, {}),
    "echo": (200, json.dumps({"headers": {"x-goog-api-key": KEY}}), {}),
    "moved": (301, "", {"Location": "https://user:pw@elsewhere.example:8443/x?key=abc"}),
}


@pytest.fixture
async def call(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Callable[[str], Awaitable[dict[str, Any]]]:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("x-goog-api-key", ""))
        status, body, headers = ANSWERS[request.match_info["model"].split(":")[0]]
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, headers=headers)

    app = web.Application()
    app.router.add_post("/v1beta/models/{model}", handler)
    server = await aiohttp_server(app)
    session = aiohttp.ClientSession()

    async def call(model: str) -> dict[str, Any]:
        spec = ModelSpec(name=model, base_url=str(server.make_url("")).rstrip("/"))
        payload, _ = await GeminiClient(Transport(session, spec, KEY, timeout=5)).generate(b"{}")
        assert seen[-1] == KEY  # the key travels in the header
        return payload

    yield call
    await session.close()


async def test_ok(call: Callable[[str], Awaitable[dict[str, Any]]]) -> None:
    assert await call("ok") == {"candidates": []}


async def test_429_carries_the_retry_info_delay(call: Any) -> None:
    with pytest.raises(ApiError) as info:
        await call("rpm")
    assert (info.value.category, info.value.retry_delay, info.value.retryable) == (
        "rate_limited", 45.837906927, True)  # fmt: skip


async def test_per_day_quota_stops_the_run(call: Any) -> None:
    with pytest.raises(QuotaExhaustedError, match="PerDay"):
        await call("rpd")


async def test_a_proxy_503_with_retry_after_and_an_html_body(call: Any) -> None:
    with pytest.raises(ApiError) as info:
        await call("proxy503")
    assert info.value.retry_delay == 7 and info.value.retryable
    assert "Service Unavailable" in info.value.message


@pytest.mark.parametrize("model", ["badkey", "nokey", "nomodel"])
async def test_key_and_model_errors_are_fatal_and_never_show_the_key(call: Any, model: str) -> None:
    with pytest.raises(FatalApiError) as info:
        await call(model)
    assert KEY not in str(info.value)
    assert "127.0.0.1" in str(info.value)  # says where


async def test_a_400_fails_the_row_without_retry(call: Any) -> None:
    with pytest.raises(ApiError) as info:
        await call("bad")
    assert not info.value.retryable and info.value.status == 400


async def test_a_200_that_is_not_json_is_a_malformed_answer(call: Any) -> None:
    with pytest.raises(AnswerError, match="not JSON") as info:
        await call("notjson")
    assert info.value.category == "malformed_response"
    assert info.value.text == "this is not json"


async def test_an_error_body_is_read_only_as_far_as_its_message(call: Any) -> None:
    with pytest.raises(ApiError) as info:
        await call("bigerror")
    assert info.value.category == "server" and len(info.value.message) < 250


async def test_a_body_that_repeats_the_key_has_it_replaced(call: Any) -> None:
    payload = await call("echo")
    assert payload == {"headers": {"x-goog-api-key": "***"}}
    with pytest.raises(AnswerError) as info:
        parse_response(payload)
    assert info.value.category == "malformed_response"
    assert KEY not in (info.value.text or "") and "***" in (info.value.text or "")


async def test_a_redirect_is_not_followed_and_names_only_the_host(call: Any) -> None:
    with pytest.raises(ApiError) as info:
        await call("moved")
    error = info.value
    assert (error.category, error.status, error.retryable) == ("redirect", 301, False)
    assert error.message.startswith("HTTP 301 redirect to elsewhere.example:8443 not followed")
    assert "pw" not in error.message and "abc" not in error.message
