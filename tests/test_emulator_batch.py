"""The emulator's Files API and Batch Mode, over real sockets, with its clock moved by hand."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from batchgen.emulator import Emulator
from tests.helpers.clock import Clock

KEY = "test-key-0123456789"
FLASH = "gemini-2.5-flash"
Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[tuple[Client, Emulator]]]
SCHEMA = {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}, "required": ["n"]}


def request(prompt: str) -> dict[str, Any]:
    config = {"responseMimeType": "application/json", "responseSchema": SCHEMA}
    return {"contents": [{"role": "user", "parts": [{"text": prompt}]}], "generationConfig": config}


def jsonl(keys: list[str]) -> bytes:
    lines = [json.dumps({"key": k, "request": request(f"prompt {k}")}) for k in keys]
    return ("\n".join(lines) + "\n").encode()


async def upload(client: Client, data: bytes, chunk: int = 0, name: str = "in") -> dict[str, Any]:
    """The resumable protocol: start, then chunks of ``chunk`` bytes (0: one), no key on them."""
    start = {
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(len(data)),
        "X-Goog-Upload-Header-Content-Type": "application/jsonl",
        "x-goog-api-key": KEY,
    }
    body = {"file": {"display_name": name, "mime_type": "application/jsonl"}}  # SDK: snake_case
    async with client.post("/upload/v1beta/files", json=body, headers=start) as r:
        assert r.status == 200, await r.text()
        url = URL(r.headers["X-Goog-Upload-URL"])
    assert url.is_absolute() and url.port == client.port  # points at the emulator itself
    step = chunk or max(len(data), 1)
    for offset in range(0, max(len(data), 1), step):
        last = offset + step >= len(data)
        headers = {
            "X-Goog-Upload-Command": "upload, finalize" if last else "upload",
            "X-Goog-Upload-Offset": str(offset),
            "Content-Type": "application/json",  # as python-genai sends it; never parsed
        }
        async with client.post(
            url.path_qs, data=data[offset : offset + step], headers=headers
        ) as r:
            assert r.status == 200, await r.text()
            assert r.headers["X-Goog-Upload-Status"] == ("final" if last else "active")
            if last:
                file: dict[str, Any] = (await r.json())["file"]
                return file
    raise AssertionError("no final chunk")


async def api(client: Client, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"x-goog-api-key": KEY}
    async with client.request(method, path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def create(client: Client, batch: dict[str, Any], model: str = FLASH) -> dict[str, Any]:
    status, op = await api(client, "POST", f"/v1beta/models/{model}:batchGenerateContent", batch)
    assert status == 200, op
    return dict(op)


async def download(client: Client, name: str, prefix: str = "") -> bytes:
    path = f"{prefix}/v1beta/{name}:download?alt=media"
    async with client.get(path, headers={"x-goog-api-key": KEY}) as r:
        assert r.status == 200, await r.text()
        return await r.read()


async def test_chunked_upload_then_get_list_delete(make_client: MakeClient) -> None:
    client, emulator = await make_client()
    data = jsonl([f"r{i}" for i in range(40)])
    file = await upload(client, data, chunk=1000)
    assert emulator.counts["upload_chunk"] == -(-len(data) // 1000)
    assert file["name"].startswith("files/") and len(file["name"]) == len("files/") + 12
    assert file["sizeBytes"] == str(len(data))  # int64 as a string
    assert (file["state"], file["source"], file["displayName"]) == ("ACTIVE", "UPLOADED", "in")
    assert "downloadUri" not in file
    assert emulator.files.lookup(file["name"]).data == data
    status, got = await api(client, "GET", f"/v1beta/{file['name']}")
    assert status == 200 and got == file
    await upload(client, b"{}\n", name="second")
    status, page = await api(client, "GET", "/v1beta/files?pageSize=1")
    assert len(page["files"]) == 1 and page["nextPageToken"]
    status, rest = await api(
        client, "GET", f"/v1beta/files?pageSize=1&pageToken={page['nextPageToken']}"
    )
    assert len(rest["files"]) == 1 and "nextPageToken" not in rest
    status, _ = await api(client, "GET", f"/v1beta/{file['name']}:download?alt=media")
    assert status == 400  # uploaded files cannot be downloaded
    assert await api(client, "DELETE", f"/v1beta/{file['name']}") == (200, {})
    status, gone = await api(client, "GET", f"/v1beta/{file['name']}")
    assert status == 404 and gone["error"]["status"] == "NOT_FOUND"


async def test_upload_refuses_a_wrong_offset_and_a_short_file(make_client: MakeClient) -> None:
    client, _ = await make_client()
    start = {"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
             "X-Goog-Upload-Header-Content-Length": "10", "x-goog-api-key": KEY}  # fmt: skip
    async with client.post("/upload/v1beta/files", headers=start) as r:
        url = URL(r.headers["X-Goog-Upload-URL"]).path_qs
    wrong = {"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "5"}
    async with client.post(url, data=b"abcde", headers=wrong) as r:
        assert r.status == 400 and "Offset" in (await r.json())["error"]["message"]
    short = {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}
    async with client.post(url, data=b"abcde", headers=short) as r:
        assert r.status == 400 and "declared" in (await r.json())["error"]["message"]
    async with client.post("/upload/v1beta/files", headers={**start, "x-goog-api-key": ""}) as r:
        assert r.status == 403  # the start needs a key; the chunks do not


async def test_batch_progresses_on_the_clock_to_shuffled_results(make_client: MakeClient) -> None:
    client, emulator = await make_client(batch_pending_s=10, batch_running_s=100)
    clock = Clock(1000.0)
    emulator.clock = clock
    keys = [f"r{i:02d}" for i in range(30)]
    file = await upload(client, jsonl(keys))
    op = await create(
        client, {"batch": {"display_name": "d", "input_config": {"file_name": file["name"]}}}
    )
    meta = op["metadata"]
    assert op["name"] == meta["name"] and op["name"].startswith("batches/")
    assert len(op["name"]) == len("batches/") + 36
    assert "done" not in op and "response" not in op  # proto3: false is left out
    assert meta["@type"].endswith("v1main.GenerateContentBatch")
    assert meta["state"] == "BATCH_STATE_PENDING" and meta["model"] == f"models/{FLASH}"
    assert meta["inputConfig"] == {"fileName": file["name"]} and meta["displayName"] == "d"
    assert meta["batchStats"] == {"requestCount": "30", "pendingRequestCount": "30"}
    clock.now += 60  # half way through running
    _, op = await api(client, "GET", f"/v1beta/{op['name']}")
    stats = op["metadata"]["batchStats"]
    assert op["metadata"]["state"] == "BATCH_STATE_RUNNING" and "done" not in op
    assert stats["successfulRequestCount"] == stats["pendingRequestCount"] == "15"
    clock.now += 60
    _, op = await api(client, "GET", f"/v1beta/{op['name']}")
    meta = op["metadata"]
    assert op["done"] is True and meta["state"] == "BATCH_STATE_SUCCEEDED" and "endTime" in meta
    assert meta["batchStats"] == {"requestCount": "30", "successfulRequestCount": "30"}
    output = f"files/batch-{op['name'].removeprefix('batches/')}"
    assert meta["output"] == {"responsesFile": output}
    assert op["response"]["responsesFile"] == output  # both places, as the real API does
    data = await download(client, output)
    assert await download(client, output, prefix="/download") == data  # the guide's path
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert sorted(line["key"] for line in lines) == keys
    assert [line["key"] for line in lines] != keys  # shuffled: clients must match by key
    assert list(lines[0]) == ["response", "key"]


async def test_a_prompt_gets_the_same_answer_online_and_in_a_batch(make_client: MakeClient) -> None:
    client, _ = await make_client()
    file = await upload(client, jsonl(["a", "b"]))
    op = await create(client, {"batch": {"inputConfig": {"fileName": file["name"]}}})
    data = await download(client, op["metadata"]["output"]["responsesFile"])
    for line in map(json.loads, data.decode().splitlines()):
        status, online = await api(
            client,
            "POST",
            f"/v1beta/models/{FLASH}:generateContent",
            request(f"prompt {line['key']}"),
        )
        assert status == 200
        assert line["response"]["candidates"] == online["candidates"]
        assert line["response"]["usageMetadata"] == online["usageMetadata"]


async def test_line_errors_are_lines_with_an_error_status(make_client: MakeClient) -> None:
    client, _ = await make_client(batch_line_error_rate=0.3, seed=7)
    bad = json.dumps({"key": "bad", "request": {"contents": []}})  # refused as online would be
    data = jsonl([f"r{i}" for i in range(50)]) + bad.encode() + b"\nnot json\n"
    file = await upload(client, data)
    op = await create(client, {"batch": {"inputConfig": {"fileName": file["name"]}}})
    lines = [
        json.loads(x)
        for x in (await download(client, op["response"]["responsesFile"])).splitlines()
    ]
    errors = {line["key"]: line["error"] for line in lines if "error" in line}
    assert errors["bad"]["code"] == 3 and "contents is not specified" in errors["bad"]["message"]
    assert errors["line 52"]["code"] == 3  # a line that is not JSON fails on its own
    assert 5 < len(errors) - 2 < 30  # about 30% of 50 drawn
    assert all(set(line) in ({"response", "key"}, {"error", "key"}) for line in lines)
    stats = op["metadata"]["batchStats"]
    assert stats["failedRequestCount"] == str(len(errors))
    assert int(stats["successfulRequestCount"]) + len(errors) == 52


async def test_scripted_expiry_and_failure_carry_an_error(make_client: MakeClient) -> None:
    client, _ = await make_client(batch_script=["expire", "fail"])
    file = await upload(client, jsonl(["a"]))
    batch = {"batch": {"inputConfig": {"fileName": file["name"]}}}
    expired, failed, fine = [await create(client, batch) for _ in range(3)]
    assert expired["metadata"]["state"] == "BATCH_STATE_EXPIRED" and expired["done"] is True
    assert expired["error"]["code"] == 4 and "output" not in expired["metadata"]
    assert failed["metadata"]["state"] == "BATCH_STATE_FAILED" and failed["error"]["code"] == 13
    assert fine["metadata"]["state"] == "BATCH_STATE_SUCCEEDED" and "error" not in fine


async def test_cancel_and_delete(make_client: MakeClient) -> None:
    client, emulator = await make_client(batch_pending_s=5)
    emulator.clock = Clock(1000.0)
    file = await upload(client, jsonl(["a", "b"]))
    batch = {"batch": {"inputConfig": {"fileName": file["name"]}}}
    op = await create(client, batch)
    assert await api(client, "POST", f"/v1beta/{op['name']}:cancel") == (200, {})
    _, op = await api(client, "GET", f"/v1beta/{op['name']}")
    assert op["metadata"]["state"] == "BATCH_STATE_CANCELLED" and op["done"] is True
    assert op["error"]["code"] == 1 and "output" not in op["metadata"]
    other = await create(client, batch)
    _, listed = await api(client, "GET", "/v1beta/batches?pageSize=1")
    assert len(listed["operations"]) == 1 and listed["nextPageToken"]
    assert await api(client, "DELETE", f"/v1beta/{op['name']}") == (200, {})
    assert await api(client, "POST", f"/v1beta/{other['name']}:delete") == (200, {})  # 2025 form
    _, listed = await api(client, "GET", "/v1beta/batches")
    assert listed == {}
    status, gone = await api(client, "GET", f"/v1beta/{op['name']}")
    assert status == 404 and gone["error"]["status"] == "NOT_FOUND"


async def test_inline_requests_echo_their_metadata(make_client: MakeClient) -> None:
    client, _ = await make_client()
    items = [{"request": request(f"p{i}"), "metadata": {"key": f"k{i}"}} for i in range(5)]
    op = await create(client, {"batch": {"inputConfig": {"requests": {"requests": items}}}})
    inlined = op["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert op["response"]["inlinedResponses"]["inlinedResponses"] == inlined
    assert sorted(item["metadata"]["key"] for item in inlined) == [f"k{i}" for i in range(5)]
    assert all("candidates" in item["response"] for item in inlined)
    assert "inputConfig" not in op["metadata"]


@pytest.mark.parametrize(
    ("body", "model", "status"),
    [
        ({"batch": {"inputConfig": {}}}, FLASH, 400),  # neither requests nor fileName
        (
            {"batch": {"inputConfig": {"fileName": "files/x", "requests": {"requests": [{}]}}}},
            FLASH,
            400,
        ),
        ({"batch": {"inputConfig": {"fileName": "files/nosuchfile"}}}, FLASH, 404),
        ({"batch": {"inputConfig": {"fileName": "files/nosuchfile"}}}, "gemini-0-nope", 404),
        ({}, FLASH, 400),
    ],
)
async def test_create_refuses_a_bad_batch(
    make_client: MakeClient, body: dict[str, Any], model: str, status: int
) -> None:
    client, emulator = await make_client()
    got, answer = await api(client, "POST", f"/v1beta/models/{model}:batchGenerateContent", body)
    assert got == status and answer["error"]["code"] == status
    assert not emulator.batches.batches


async def test_every_submitted_row_is_counted(make_client: MakeClient) -> None:
    client, emulator = await make_client()
    first = await upload(client, jsonl(["a", "b"]))
    second = await upload(client, jsonl(["b", "c"]))
    for file in (first, second):
        await create(client, {"batch": {"inputConfig": {"fileName": file["name"]}}})
    assert emulator.batches.submissions == {"a": 1, "b": 2, "c": 1}
    assert emulator.counts["batch_rows"] == 4 and emulator.counts["batch_rows_repeated"] == 1


async def test_a_line_naming_a_cache_is_answered_as_online_or_refused_when_told(
    make_client: MakeClient,
) -> None:
    """A batch line with ``cachedContent`` counts the cache as generateContent does; one naming
    a cache that is gone fails on its own; ``batch_cache_refuse`` fails every such line."""
    for refuse in (False, True):
        client, emulator = await make_client(batch_cache_refuse=refuse)
        cache = {
            "model": f"models/{FLASH}",
            "systemInstruction": {"parts": [{"text": "word " * 1000}]},
        }
        status, made = await api(client, "POST", "/v1beta/cachedContents", cache)
        assert status == 200
        lines = [json.dumps({"key": k, "request": {**request(f"prompt {k}"), "cachedContent": n}})
                 for k, n in (("a", made["name"]), ("gone", "cachedContents/nothing"))]  # fmt: skip
        file = await upload(client, ("\n".join(lines) + "\n").encode())
        op = await create(client, {"batch": {"inputConfig": {"fileName": file["name"]}}})
        data = await download(client, op["response"]["responsesFile"])
        got = {line["key"]: line for line in map(json.loads, data.decode().splitlines())}
        if refuse:
            for line in got.values():
                assert line["error"]["code"] == 400
                assert "does not support cached content with batch" in line["error"]["message"]
            continue
        body = {**request("prompt a"), "cachedContent": made["name"]}
        status, online = await api(client, "POST", f"/v1beta/models/{FLASH}:generateContent", body)
        assert status == 200 and online["usageMetadata"]["cachedContentTokenCount"] > 0
        assert got["a"]["response"]["usageMetadata"] == online["usageMetadata"]
        assert got["gone"]["error"]["code"] == 7  # PERMISSION_DENIED: CachedContent not found
        assert emulator.counts["cachedContent:used"] == 2
