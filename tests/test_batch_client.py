"""The Batch Mode client against the emulator (and a small lying server), over real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from batchgen.emulator import EmulatorConfig, EmulatorServer
from batchgen.errors import FatalApiError
from batchgen.gemini.batch_client import BatchClient, BatchInfo, FileInfo
from batchgen.gemini.client import ApiError
from batchgen.gemini.transport import Transport
from batchgen.job.spec import ModelSpec
from tests.helpers.clock import Clock

KEY = "sk-batch-secret-0123456789"
FLASH = "gemini-2.5-flash"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def lines(keys: list[str]) -> str:
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    return "".join(json.dumps({"key": k, "request": body}) + "\n" for k in keys)


def client_for(session: aiohttp.ClientSession, base_url: str, **kwargs: Any) -> BatchClient:
    chunk = {"chunk_bytes": kwargs.pop("chunk_bytes")} if "chunk_bytes" in kwargs else {}
    model = ModelSpec(FLASH, base_url=base_url)
    return BatchClient(Transport(session, model, KEY, 10, **kwargs), **chunk)


async def test_upload_create_wait_download(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    config = EmulatorConfig(batch_pending_s=10, batch_running_s=20, record=True)
    async with EmulatorServer(config) as server:
        clock = Clock()
        server.emulator.clock = clock
        client = client_for(session, server.base_url, chunk_bytes=100)
        source = tmp_path / "chunk.jsonl"
        source.write_text(lines([f"r{i}" for i in range(6)]))
        file = await client.upload(source, "chunk-1")
        size = source.stat().st_size
        assert file == FileInfo(
            file.name, "chunk-1", "application/jsonl", size, "ACTIVE", "UPLOADED"
        )
        assert server.emulator.counts["upload_chunk"] == -(-size // 100)
        batch = await client.create(file.name, "chunk-1")
        assert (batch.state, batch.request_count, batch.pending_count) == (
            "BATCH_STATE_PENDING",
            6,
            6,
        )
        seen: list[str] = []

        async def sleep(seconds: float) -> None:  # the poll's wait moves the emulator's clock
            clock.now += seconds

        done = await client.wait(batch.name, lambda b: seen.append(b.state), sleep=sleep, initial=4)
        assert seen[0] == "BATCH_STATE_PENDING" and "BATCH_STATE_RUNNING" in seen
        assert seen[-1] == "BATCH_STATE_SUCCEEDED" and done.terminal and done.done
        assert done.successful_count == 6 and done.responses_file
        dest = tmp_path / "results.jsonl"
        written = await client.download(done.responses_file, dest)
        assert written == dest.stat().st_size
        assert sorted(json.loads(x)["key"] for x in dest.read_text().splitlines()) == [
            f"r{i}" for i in range(6)
        ]
        assert not list(tmp_path.glob(".*.tmp"))
        assert (await client.get_file(file.name)) == file
        # the create sent the key in its header
        assert [h.get("x-goog-api-key") for h in server.emulator.received_headers] == [KEY]


async def test_download_stops_at_its_cap_and_leaves_nothing(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with EmulatorServer() as server:
        client = client_for(session, server.base_url)
        source = tmp_path / "chunk.jsonl"
        source.write_text(lines(["a", "b", "c"]))
        batch = await client.create((await client.upload(source, "c")).name, "c")
        assert batch.responses_file
        dest = tmp_path / "results.jsonl"
        with pytest.raises(ApiError) as caught:
            await client.download(batch.responses_file, dest, max_bytes=100)
        assert caught.value.category == "response_too_large"
        assert not dest.exists() and not list(tmp_path.glob(".*"))


async def test_a_lost_create_is_found_by_its_display_name(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with EmulatorServer(EmulatorConfig(batch_pending_s=60)) as server:
        client = client_for(session, server.base_url)
        source = tmp_path / "chunk.jsonl"
        source.write_text(lines(["a"]))
        file = await client.upload(source, "x")
        names = [f"batchgen-run-{i}" for i in range(3)]
        created = [await client.create(file.name, name) for name in names]
        assert len(await client.list_batches(page_size=1)) == 3  # every page
        found = await client.find("batchgen-run-1")
        assert found is not None and found.name == created[1].name
        assert await client.find("batchgen-run-9") is None


async def test_cancel_delete_and_gone(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with EmulatorServer(EmulatorConfig(batch_pending_s=60)) as server:
        client = client_for(session, server.base_url)
        source = tmp_path / "chunk.jsonl"
        source.write_text(lines(["a"]))
        file = await client.upload(source, "x")
        batch = await client.create(file.name, "x")
        await client.cancel(batch.name)
        cancelled = await client.get(batch.name)
        assert cancelled.state == "BATCH_STATE_CANCELLED" and cancelled.terminal
        assert cancelled.error is not None and cancelled.error.startswith("1:")
        await client.delete(batch.name)
        with pytest.raises(ApiError) as caught:
            await client.get(batch.name)
        assert (caught.value.category, caught.value.status) == ("not_found", 404)
        assert not caught.value.retryable
        await client.delete_file(file.name)
        with pytest.raises(ApiError, match="bad_name|not a batches"):
            await client.get("batches/../files/x")


async def test_refusals_are_classified_and_never_show_the_key(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    source = tmp_path / "chunk.jsonl"
    source.write_text(lines(["a"]))
    async with EmulatorServer(EmulatorConfig(api_keys=frozenset({"another-key-000000"}))) as server:
        with pytest.raises(FatalApiError) as refused:
            await client_for(session, server.base_url).upload(source, "x")
        assert KEY not in str(refused.value) and "refused the key" in str(refused.value)
    async with EmulatorServer() as server:
        nope = ModelSpec("gemini-0-nope", base_url=server.base_url)
        client = BatchClient(Transport(session, nope, KEY, 10))
        file = await client.upload(source, "x")
        with pytest.raises(FatalApiError, match="404"):
            await client.create(file.name, "x")


async def test_a_session_url_on_another_host_is_sent_to_ours(
    session: aiohttp.ClientSession, aiohttp_server: Any, tmp_path: Path
) -> None:
    """The key and the bytes go only to the configured host, whatever URL the server names."""
    got: list[tuple[str, str | None]] = []

    async def upload(request: web.Request) -> web.Response:
        got.append((request.path_qs, request.headers.get("x-goog-api-key")))
        if request.headers["X-Goog-Upload-Command"] == "start":
            url = "https://elsewhere.example/upload/v1beta/files?upload_id=u1&upload_protocol=resumable"
            return web.Response(
                headers={"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"}
            )
        body = {"file": {"name": "files/abc", "sizeBytes": "4"}}
        return web.json_response(body, headers={"X-Goog-Upload-Status": "final"})

    app = web.Application()
    app.router.add_post("/upload/v1beta/files", upload)
    server = await aiohttp_server(app)
    source = tmp_path / "x.jsonl"
    source.write_bytes(b"{}\n\n")
    file = await client_for(session, str(server.make_url("")).rstrip("/")).upload(source, "x")
    assert file.name == "files/abc" and file.size_bytes == 4
    assert got[1] == ("/upload/v1beta/files?upload_id=u1&upload_protocol=resumable", KEY)


async def test_an_upload_without_a_final_status_fails(
    session: aiohttp.ClientSession, aiohttp_server: Any, tmp_path: Path
) -> None:
    async def upload(request: web.Request) -> web.Response:
        url = str(request.url.with_query({"upload_id": "u"}))
        return web.Response(headers={"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"})

    app = web.Application()
    app.router.add_post("/upload/v1beta/files", upload)
    server = await aiohttp_server(app)
    source = tmp_path / "x.jsonl"
    source.write_bytes(b"{}\n")
    with pytest.raises(ApiError, match="upload status 'active', not 'final'") as caught:
        await client_for(session, str(server.make_url("")).rstrip("/")).upload(source, "x")
    assert caught.value.retryable  # uploading the file again is harmless


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        # proto3 JSON: counters as strings, zeros and done:false left out
        ({"name": "batches/a", "metadata": {"state": "BATCH_STATE_RUNNING",
          "batchStats": {"requestCount": "3", "pendingRequestCount": "1",
                         "successfulRequestCount": "2"}}},
         BatchInfo("batches/a", "BATCH_STATE_RUNNING", request_count=3, successful_count=2,
                   pending_count=1)),
        # the SDK's spelling of a state, numbers as numbers, the output only in response
        ({"name": "batches/b", "done": True,
          "metadata": {"state": "JOB_STATE_SUCCEEDED", "batchStats": {"requestCount": 2}},
          "response": {"responsesFile": "files/batch-b"}},
         BatchInfo("batches/b", "BATCH_STATE_SUCCEEDED", request_count=2,
                   responses_file="files/batch-b", done=True)),
        # an enum number; an error; no batchStats at all
        ({"name": "batches/c", "done": True, "metadata": {"state": 6},
          "error": {"code": 4, "message": "expired"}},
         BatchInfo("batches/c", "BATCH_STATE_EXPIRED", error="4: expired", done=True)),
        # a state this client does not know passes through, and is not an ending
        ({"name": "batches/d", "metadata": {"state": "BATCH_STATE_PAUSED"}},
         BatchInfo("batches/d", "BATCH_STATE_PAUSED")),
    ],
)  # fmt: skip
def test_operations_are_read_as_proto3_json(operation: dict[str, Any], expected: BatchInfo) -> None:
    read = BatchInfo.from_operation(operation)
    assert read == expected
    assert read.terminal == (expected.done or expected.state != "BATCH_STATE_RUNNING"
                             and expected.state != "BATCH_STATE_PAUSED")  # fmt: skip


@pytest.mark.parametrize(
    "operation",
    [
        [],
        {"metadata": {}},
        {"name": "batches/x", "metadata": {"batchStats": {"requestCount": "x"}}},
    ],
)
def test_a_body_that_is_no_operation_is_a_bad_response(operation: Any) -> None:
    with pytest.raises(ApiError) as caught:
        BatchInfo.from_operation(operation)
    assert caught.value.category == "bad_response"
