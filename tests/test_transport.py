"""One transport under every call: a Files or Batches call is refused a redirect, capped and
scrubbed of the key exactly as a generateContent call is."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from batchgen.gemini.batch_client import BatchClient
from batchgen.gemini.client import ApiError, GeminiClient
from batchgen.gemini.connect import client_for
from batchgen.gemini.transport import Transport
from batchgen.job.spec import ModelSpec

KEY = "sk-transport-secret-0123456789"
FLASH = "gemini-2.5-flash"
ELSEWHERE = f"https://user:pw@elsewhere.example:8443/x?key={KEY}"

Call = Callable[[BatchClient, GeminiClient, Path], Awaitable[Any]]


async def _upload(batch: BatchClient, _: GeminiClient, tmp: Path) -> Any:
    (tmp / "in.jsonl").write_bytes(b"{}\n")
    return await batch.upload(tmp / "in.jsonl", "x")


CALLS: dict[str, Call] = {
    "generateContent": lambda _, online, __: online.generate(b"{}"),
    "countTokens": lambda _, online, __: online.count_tokens(b'{"contents":[]}'),
    "upload": _upload,
    "download": lambda batch, _, tmp: batch.download("files/out", tmp / "out.jsonl"),
    "get_file": lambda batch, _, __: batch.get_file("files/abc"),
    "create": lambda batch, _, __: batch.create("files/abc", "job"),
    "get": lambda batch, _, __: batch.get("batches/abc"),
    "cancel": lambda batch, _, __: batch.cancel("batches/abc"),
    "list": lambda batch, _, __: batch.list_batches(),
}


@pytest.fixture
async def server(aiohttp_server: Any) -> AsyncIterator[dict[str, Any]]:
    """A server that answers every path with what ``plan["answer"]`` says; records the keys."""
    plan: dict[str, Any] = {"answer": None, "keys": []}

    async def handler(request: web.Request) -> web.StreamResponse:
        plan["keys"].append(request.headers.get("x-goog-api-key"))
        answer: web.StreamResponse = plan["answer"]()
        return answer

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    running = await aiohttp_server(app)
    plan["base_url"] = str(running.make_url("")).rstrip("/")
    yield plan


async def _fail(server: dict[str, Any], name: str, tmp_path: Path) -> ApiError:
    model = ModelSpec(FLASH, base_url=server["base_url"])
    async with (
        client_for(model, KEY, BatchClient) as batch,
        client_for(model, KEY, GeminiClient) as online,
    ):
        with pytest.raises(ApiError) as caught:
            await CALLS[name](batch, online, tmp_path)
    return caught.value


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_every_call_refuses_a_redirect_and_never_repeats_the_key(
    server: dict[str, Any], name: str, tmp_path: Path
) -> None:
    server["answer"] = lambda: web.Response(status=307, headers={"Location": ELSEWHERE})
    error = await _fail(server, name, tmp_path)
    assert (error.category, error.status, error.retryable) == ("redirect", 307, False)
    assert error.message.startswith("HTTP 307 redirect to elsewhere.example:8443 not followed")
    assert KEY not in error.message and "pw" not in error.message
    assert server["keys"] == [KEY]  # one request, to the configured host only


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_every_call_scrubs_the_key_from_an_error_it_reports(
    server: dict[str, Any], name: str, tmp_path: Path
) -> None:
    echo = {"error": {"code": 400, "message": f"bad request with key {KEY}"}}
    server["answer"] = lambda: web.json_response(echo, status=400)
    error = await _fail(server, name, tmp_path)
    assert (error.category, error.status) == ("http_400", 400)
    assert KEY not in error.message and "***" in error.message


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_every_call_maps_a_refused_connection_alike(name: str, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once this socket is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await _fail({"base_url": f"http://127.0.0.1:{port}"}, name, tmp_path)
    assert (error.category, error.retryable) == ("connection", True)
    assert error.message.startswith(f"127.0.0.1:{port}: ClientConnectorError")


async def test_a_batches_answer_over_the_cap_is_an_api_error(
    server: dict[str, Any], tmp_path: Path
) -> None:
    server["answer"] = lambda: web.json_response({"name": "batches/abc", "pad": "x" * 4096})
    model = ModelSpec(FLASH, base_url=server["base_url"])
    async with aiohttp.ClientSession() as session:
        batch = BatchClient(Transport(session, model, KEY, 10, max_response_bytes=1024))
        with pytest.raises(ApiError) as caught:
            await batch.get("batches/abc")
    assert caught.value.category == "response_too_large"
