"""The Batch Mode client: Files API upload and download, and the ``batches`` resource.

Wire facts in docs/gemini-api.md §7. What the server sends is read as proto3 JSON: int64
counters may be strings, zero counters and ``done: false`` are left out, enums may come as
names (``BATCH_STATE_RUNNING``, or the SDK's ``JOB_STATE_RUNNING``) or numbers. Every call goes
through :class:`~batchgen.gemini.transport.Transport` and its errors are classified there, as a
generateContent call's are, except that a 404 on a named batch or file is an
:class:`~batchgen.gemini.transport.ApiError` ``not_found`` (the resource is gone; the rows in it
must be retried), not the fatal "unknown model", and a JSON answer over the body cap is an
``ApiError`` too (there is no row to fail).

The key travels only in ``x-goog-api-key`` and only to the configured host: the upload session
URL the server returns is used as it is when it points there, and otherwise only its path and
query are sent to the configured host. Creating a batch is not idempotent (a retried create makes a
second job), so :meth:`BatchClient.create` is never retried here; a caller that lost the answer
looks its batch up by display name (:meth:`BatchClient.find`). Downloads stream to a file under a
byte cap; nothing holds a whole result file in memory.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import aiohttp

from batchgen.atomic import atomic_file
from batchgen.gemini.answers import AnswerError
from batchgen.gemini.transport import (
    READ_CHUNK,
    ApiError,
    Response,
    Transport,
)
from batchgen.job.spec import DEFAULT_BASE_URL

CHUNK_BYTES = 8 * 1024 * 1024  # what python-genai sends per upload request
MAX_DOWNLOAD_BYTES = 2 * 1000**3  # an output file is at most about the input's 2 GB limit
STATES = ("UNSPECIFIED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")
TERMINAL = frozenset(f"BATCH_STATE_{s}" for s in ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"))
_NAME = re.compile(r"^(batches|files)/[a-z0-9][a-z0-9-]{0,62}$")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class FileInfo:
    """A Files API ``File`` as batchgen uses it."""

    name: str
    display_name: str = ""
    mime_type: str = ""
    size_bytes: int = 0
    state: str = ""
    source: str = ""
    uri: str = field(default="", compare=False)  # where a fileData part names it
    expiration_time: str = field(default="", compare=False)  # RFC 3339; uploads live 48 h

    @classmethod
    def from_json(cls, value: object) -> FileInfo:
        """Read a ``File``; :class:`ApiError` ``bad_response`` when it is not one."""
        fields = _object(value, "File")
        name = fields.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError("bad_response", "the server's File has no name")
        return cls(
            name, _text(fields.get("displayName")), _text(fields.get("mimeType")),
            _int64(fields.get("sizeBytes"), "File.sizeBytes"), _text(fields.get("state")),
            _text(fields.get("source")), _text(fields.get("uri")),
            _text(fields.get("expirationTime")),
        )  # fmt: skip


@dataclass(frozen=True)
class BatchInfo:
    """A batch as its ``Operation`` describes it; counters are 0 when the server leaves them out."""

    name: str
    state: str  # BATCH_STATE_*; an unknown state is kept as the server spelled it
    display_name: str = ""
    model: str = ""
    request_count: int = 0
    successful_count: int = 0
    failed_count: int = 0
    pending_count: int = 0
    responses_file: str | None = None
    inlined: tuple[Any, ...] = ()
    error: str | None = None  # the Operation's error, "code: message"
    done: bool = False

    @property
    def terminal(self) -> bool:
        """Whether the batch will not change any more (done, or in an ending state)."""
        return self.done or self.state in TERMINAL

    @classmethod
    def from_operation(cls, value: object) -> BatchInfo:
        """Read an ``Operation`` wrapping a ``GenerateContentBatch`` (python-genai reads
        ``metadata``; the output is taken from ``metadata.output`` or else ``response``)."""
        operation = _object(value, "Operation")
        meta = _object(operation.get("metadata"), "Operation.metadata")
        name = operation.get("name") or meta.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError("bad_response", "the server's batch Operation has no name")
        stats = _object(meta.get("batchStats"), "batchStats")
        output = _object(meta.get("output") or operation.get("response"), "output")
        inlined = _object(output.get("inlinedResponses"), "output.inlinedResponses")
        return cls(
            name=name,
            state=_state(meta.get("state")),
            display_name=_text(meta.get("displayName")),
            model=_text(meta.get("model")),
            request_count=_int64(stats.get("requestCount"), "requestCount"),
            successful_count=_int64(stats.get("successfulRequestCount"), "successfulRequestCount"),
            failed_count=_int64(stats.get("failedRequestCount"), "failedRequestCount"),
            pending_count=_int64(stats.get("pendingRequestCount"), "pendingRequestCount"),
            responses_file=_text(output.get("responsesFile")) or None,
            inlined=tuple(inlined.get("inlinedResponses") or ()),
            error=_status_text(operation.get("error")),
            done=operation.get("done") is True,
        )


# the upload start's answer lacks the upload headers: whatever sits at model.base_url (an
# aggregator proxy such as LiteLLM) relays generateContent but not the Files API
NOT_RELAYED = "files_not_relayed"
NO_ROUTE = frozenset({404, 405, 501})  # the upload start's path is not served there


class BatchClient:
    """Files and batches of one model's API; the session is the caller's."""

    def __init__(self, http: Transport, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._http = http
        self._model = http.model
        self.chunk_bytes = chunk_bytes
        self._api = f"{self._model.base_url}/{self._model.api_version}"

    # --- files ----------------------------------------------------------------------------

    async def upload(
        self, path: Path | bytes, display_name: str, mime_type: str = "application/jsonl"
    ) -> FileInfo:
        """Upload a file (or bytes in memory) with the resumable protocol, ``chunk_bytes`` at a
        time: a file is read a chunk at a time, never whole."""
        size = len(path) if isinstance(path, bytes) else path.stat().st_size
        session_url = await self._start_upload(size, display_name, mime_type)
        offset = 0
        with io.BytesIO(path) if isinstance(path, bytes) else path.open("rb") as source:
            while True:
                block = source.read(self.chunk_bytes)
                last = offset + len(block) >= size
                command = "upload, finalize" if last else "upload"
                headers = {"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)}
                answer = await self._call("POST", session_url, block, headers)
                _expect_status(answer.headers, "final" if last else "active", offset)
                offset += len(block)
                if last:
                    upload = _object(_decode_json(answer.body), "upload")
                    return FileInfo.from_json(upload.get("file"))

    async def probe_upload(self) -> None:
        """Start an upload of one byte and never send it: whether the Files API is relayed
        (raises ApiError ``files_not_relayed`` if not). No file exists until an upload is
        finalized, so this leaves nothing behind but a session the server drops."""
        await self._start_upload(1, "batchgen-probe", "application/jsonl")

    async def _start_upload(self, size: int, display_name: str, mime_type: str) -> str:
        headers = {
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(size),
            "X-Goog-Upload-Header-Content-Type": mime_type,
        }
        meta = {"file": {"displayName": display_name, "mimeType": mime_type}}
        url = f"{self._model.base_url}/upload/{self._model.api_version}/files"
        try:  # no model in this URL: its 404 says the path is not there, not a model unknown
            answer = await self._call("POST", url, _dumps(meta), headers, named=True)
        except ApiError as exc:
            if exc.status not in NO_ROUTE:
                raise
            raise ApiError(
                NOT_RELAYED,
                f"the Files API upload start got HTTP {exc.status}: {exc.message}",
                exc.status,
            ) from None
        session_url = answer.headers.get("X-Goog-Upload-URL")
        if not session_url:  # a proxy that relays generateContent but not the Files API
            host = self._http.host
            raise ApiError(
                NOT_RELAYED, f"{host}: the Files API upload start came back without its "
                "X-Goog-Upload-URL header",
            )  # fmt: skip
        return self._on_our_host(session_url)

    def _on_our_host(self, url: str) -> str:
        """The session URL, moved onto the configured host if it names another one."""
        ours, theirs = urlsplit(self._model.base_url), urlsplit(url)
        if (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc):
            return url
        query = f"?{theirs.query}" if theirs.query else ""
        return f"{self._model.base_url.rstrip('/')}{theirs.path}{query}"

    async def download(
        self, file_name: str, dest: Path, max_bytes: int = MAX_DOWNLOAD_BYTES
    ) -> int:
        """Stream a generated file to ``dest`` (written whole or not at all); its size."""
        url = f"{self._api}/{_checked(file_name, 'files')}:download?alt=media"
        async with self._http.stream(url, during=f"download of {file_name}", named=True) as resp:
            with atomic_file(dest) as sink:
                return await _stream_to(resp, sink, max_bytes, file_name)

    async def get_file(self, file_name: str) -> FileInfo:
        url = f"{self._api}/{_checked(file_name, 'files')}"
        return FileInfo.from_json(await self._json("GET", url, named=True))

    async def delete_file(self, file_name: str) -> None:
        await self._json("DELETE", f"{self._api}/{_checked(file_name, 'files')}", named=True)

    # --- batches --------------------------------------------------------------------------

    async def create(self, file_name: str, display_name: str) -> BatchInfo:
        """Create a batch from an uploaded JSONL file. Not retried: see the module docstring."""
        body = {"batch": {"displayName": display_name, "inputConfig": {"fileName": file_name}}}
        url = f"{self._api}/models/{self._model.name}:batchGenerateContent"
        return BatchInfo.from_operation(await self._json("POST", url, _dumps(body)))

    async def get(self, name: str) -> BatchInfo:
        url = f"{self._api}/{_checked(name, 'batches')}"
        return BatchInfo.from_operation(await self._json("GET", url, named=True))

    async def cancel(self, name: str) -> None:
        await self._json("POST", f"{self._api}/{_checked(name, 'batches')}:cancel", named=True)

    async def delete(self, name: str) -> None:
        await self._json("DELETE", f"{self._api}/{_checked(name, 'batches')}", named=True)

    async def list_batches(self, page_size: int = 100) -> list[BatchInfo]:
        """Every batch of the project, all pages."""
        found: list[BatchInfo] = []
        token = ""
        while True:
            query = f"?pageSize={page_size}" + (f"&pageToken={quote(token)}" if token else "")
            page = _object(await self._json("GET", f"{self._api}/batches{query}"), "list")
            found += [BatchInfo.from_operation(op) for op in page.get("operations") or ()]
            token = _text(page.get("nextPageToken"))
            if not token:
                return found

    async def find(self, display_name: str) -> BatchInfo | None:
        """The batch with this display name, if one exists (a create whose answer was lost)."""
        for batch in await self.list_batches():
            if batch.display_name == display_name:
                return batch
        return None

    async def wait(
        self,
        name: str,
        on_update: Callable[[BatchInfo], None] | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        initial: float = 5.0,
        maximum: float = 60.0,
        factor: float = 1.5,
    ) -> BatchInfo:
        """Poll until the batch ends, waiting longer between polls; transient errors are polled
        through. ``on_update`` sees every state read (for progress lines)."""
        delay = initial
        while True:
            try:
                batch = await self.get(name)
            except ApiError as exc:
                if not exc.retryable:
                    raise
            else:
                if on_update is not None:
                    on_update(batch)
                if batch.terminal:
                    return batch
            await sleep(delay)
            delay = min(maximum, delay * factor)

    # --- transport ------------------------------------------------------------------------

    async def _json(
        self, method: str, url: str, data: bytes | None = None, *, named: bool = False
    ) -> Any:
        return _decode_json((await self._call(method, url, data, named=named)).body)

    async def _call(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: Mapping[str, str] | None = None,
        *,
        named: bool = False,
    ) -> Response:
        """One call's 200 answer, or raise as the transport does."""
        try:
            return await self._http.request(method, url, data, headers, named=named)
        except AnswerError as exc:  # a JSON answer over limits.max_response_mb
            raise ApiError(exc.category, exc.message) from None


def not_relayed(where: str, message: str) -> str:
    """Why Batch Mode cannot run at ``where`` (a proxy that does not relay the Files API)."""
    return (
        f"model.base_url {where} does not relay the Files API that Batch Mode uploads its "
        f"requests with ({message}), as aggregator proxies such as LiteLLM do not; rerunning "
        "as is cannot help: run with --tier flex (online, also half price), or set "
        f"model.base_url to the API's own URL ({DEFAULT_BASE_URL}) for --tier batch"
    )


async def _stream_to(resp: aiohttp.ClientResponse, sink: BinaryIO, cap: int, name: str) -> int:
    """Write the body to ``sink`` under ``cap`` bytes; its size."""
    size = 0
    async for block in resp.content.iter_chunked(READ_CHUNK):
        size += len(block)
        if size > cap:
            resp.close()
            raise ApiError("response_too_large", f"{name} is over {cap} bytes; not kept")
        sink.write(block)
    return size


def _expect_status(headers: Mapping[str, str], wanted: str, offset: int) -> None:
    got = headers.get("X-Goog-Upload-Status", "").lower()
    if got != wanted:
        raise ApiError(
            "upload",
            f"upload at byte {offset}: the server said upload status {got or 'nothing'!r}, "
            f"not {wanted!r}; the file will be uploaded again",
        )


def _checked(name: str, kind: str) -> str:
    """A resource name as the API forms them; anything else never reaches a URL."""
    if not _NAME.match(name) or not name.startswith(f"{kind}/"):
        raise ApiError("bad_name", f"{name!r} is not a {kind}/<id> name", 400)
    return name


def _state(value: object) -> str:
    """``BATCH_STATE_*`` from a name in either spelling or an enum number."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(STATES):
        return f"BATCH_STATE_{STATES[value]}"
    if not isinstance(value, str) or not value:
        return "BATCH_STATE_UNSPECIFIED"
    bare = value.upper().removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
    return f"BATCH_STATE_{bare}" if bare in STATES else value


def _status_text(value: object) -> str | None:
    if not isinstance(value, dict):
        return None
    code, message = value.get("code"), value.get("message")
    return f"{code}: {message}" if message else f"code {code}"


def _int64(value: object, where: str) -> int:
    """An int64 field: a string or a number in proto3 JSON, 0 when left out."""
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    raise ApiError("bad_response", f"the server's {where} is {json.dumps(value)[:40]}, not a count")


def _object(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError("bad_response", f"the server's {where} is not a JSON object")
    return value


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _decode_json(raw: bytes | bytearray) -> Any:
    value = _decode_json_or_none(raw)
    if value is None:
        raise ApiError("bad_response", f"HTTP 200 body is not JSON: {bytes(raw[:80])!r}")
    return value


def _decode_json_or_none(raw: bytes | bytearray) -> Any:
    try:
        return json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        return None
