"""The emulator's Files API: resumable upload, get, list, delete, and download of generated files.

Wire shapes follow docs/gemini-api.md §7 (from https://ai.google.dev/api/files and python-genai
``files.py``): the upload starts with ``X-Goog-Upload-Protocol: resumable`` and
``X-Goog-Upload-Command: start`` and is answered with an absolute session URL in
``X-Goog-Upload-URL``; chunks go there with ``X-Goog-Upload-Offset`` and the command ``upload``
(the last one ``upload, finalize``), and every chunk answer says ``X-Goog-Upload-Status``
(``active`` or ``final``). Chunks are accepted with or without a key (python-genai sends none:
the session URL is the authorisation) and their bodies are never read as JSON. Resources are
proto3 JSON: ``sizeBytes`` is a string. Only generated files (batch results) can be downloaded,
on both ``/v1beta/files/{id}:download`` and ``/download/v1beta/files/{id}:download``.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from batchgen.emulator.replies import pretty_json
from batchgen.emulator.wire import ApiError, parse_json

__all__ = ["FileRecord", "FilesApi", "field_of", "json_response", "page", "timestamp"]

UPLOAD_PATH = "/upload/v1beta/files"
FILE_LIFETIME = timedelta(hours=48)  # uploads are deleted after 48 h (the Files guide)
DEFAULT_PAGE = 10  # the Files reference: default page size 10, at most 100
MAX_PAGE = 100
_ID_CHARS = string.ascii_lowercase + string.digits


def timestamp(when: datetime) -> str:
    """RFC 3339 UTC with nanosecond digits, as the API writes Timestamps."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def field_of(body: Mapping[str, Any], camel: str) -> Any:
    """A request field in either spelling (the SDK sends some bodies in snake_case)."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return body.get(camel, body.get(snake))


def page(items: list[Any], request: web.Request, default: int, most: int) -> tuple[list[Any], str]:
    """One page of ``items`` by ``pageSize`` and ``pageToken`` (an opaque offset)."""
    try:
        size = int(request.query.get("pageSize") or request.query.get("page_size") or default)
        token = request.query.get("pageToken") or request.query.get("page_token") or ""
        start = int(base64.urlsafe_b64decode(token.encode()).decode() or 0) if token else 0
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", "Invalid page size or page token.") from None
    size = min(max(size, 1), most)
    end = start + size
    following = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else ""
    return items[start:end], following


@dataclass
class FileRecord:
    """One stored file and its bytes."""

    name: str
    display_name: str
    mime_type: str
    data: bytes
    created: datetime
    source: str = "UPLOADED"  # or GENERATED (a batch's results)

    def resource(self, origin: str) -> dict[str, Any]:
        """The File resource in proto3 JSON (int64 as a string, empty fields left out)."""
        file_id = self.name.removeprefix("files/")
        out: dict[str, Any] = {"name": self.name}
        if self.display_name:
            out["displayName"] = self.display_name
        out["mimeType"] = self.mime_type
        if self.data:
            out["sizeBytes"] = str(len(self.data))
        out["createTime"] = out["updateTime"] = timestamp(self.created)
        out["expirationTime"] = timestamp(self.created + FILE_LIFETIME)
        out["sha256Hash"] = base64.b64encode(hashlib.sha256(self.data).digest()).decode()
        out["uri"] = f"{origin}/v1beta/files/{file_id}"
        if self.source == "GENERATED":
            out["downloadUri"] = f"{origin}/v1beta/files/{file_id}:download?alt=media"
        out["state"] = "ACTIVE"
        out["source"] = self.source
        return out


@dataclass
class _Session:
    """An upload in progress: what the start request declared and the bytes so far."""

    display_name: str
    mime_type: str
    declared: int | None
    name: str | None
    data: bytearray = field(default_factory=bytearray)


class FilesApi:
    """The Files endpoints; ``check_key`` raises the API's error for a missing or wrong key."""

    def __init__(
        self,
        check_key: Callable[[web.Request], None],
        counts: collections.Counter[str],
        seed: int,
        max_file_bytes: int,
    ) -> None:
        self.files: dict[str, FileRecord] = {}
        self._sessions: dict[str, _Session] = {}
        self._check_key = check_key
        self._counts = counts
        self._ids = random.Random(f"files-{seed}")
        self._max_bytes = max_file_bytes

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(UPLOAD_PATH, self._upload)
        router.add_get("/v1beta/files", self._list)
        router.add_get("/v1beta/files/{name}", self._get)
        router.add_get("/download/v1beta/files/{name}", self._download_only)
        router.add_delete("/v1beta/files/{name}", self._delete)

    def new_id(self, length: int = 12) -> str:
        """A fresh id of lowercase letters and digits (observed ids are 12 long)."""
        while True:
            new = "".join(self._ids.choice(_ID_CHARS) for _ in range(length))
            if f"files/{new}" not in self.files and new not in self._sessions:
                return new

    def store(self, record: FileRecord) -> None:
        self.files[record.name] = record

    def media(self, name: str) -> tuple[str, bytes, datetime]:
        """(MIME type, bytes, expiry) of a stored file, for a ``fileData`` part."""
        record = self.lookup(name)
        self._counts["files:read"] += 1
        return record.mime_type, record.data, record.created + FILE_LIFETIME

    def lookup(self, name: str) -> FileRecord:
        """The file ``files/<id>`` (or a bare id); 404 when there is none."""
        full = name if name.startswith("files/") else f"files/{name}"
        record = self.files.get(full)
        if record is None:
            message = f"File {full} not found or permission denied."
            raise ApiError(404, "NOT_FOUND", message)
        return record

    # --- upload ---------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        upload_id = request.query.get("upload_id")
        if upload_id is None:
            return await self._start(request)
        session = self._sessions.get(upload_id)
        if session is None:
            raise ApiError(404, "NOT_FOUND", "No active upload session with this id.")
        command = {
            c.strip().lower() for c in request.headers.get("X-Goog-Upload-Command", "").split(",")
        }
        if "query" in command:
            return _status("active", {"X-Goog-Upload-Size-Received": str(len(session.data))})
        if "upload" not in command and "finalize" not in command:
            raise ApiError(
                400, "INVALID_ARGUMENT", "X-Goog-Upload-Command must be upload, finalize or query."
            )
        await self._chunk(request, session)
        if "finalize" not in command:
            return _status("active")
        del self._sessions[upload_id]
        return self._finalize(request, session)

    async def _start(self, request: web.Request) -> web.StreamResponse:
        protocol = request.headers.get("X-Goog-Upload-Protocol", "").lower()
        command = request.headers.get("X-Goog-Upload-Command", "").lower()
        if protocol != "resumable" or command != "start":
            raise ApiError(
                400, "INVALID_ARGUMENT", "Only the resumable upload protocol is supported here."
            )
        raw = await request.read()
        body = parse_json(raw) if raw.strip() else {}
        meta = field_of(body, "file") if isinstance(body, Mapping) else None
        meta = meta if isinstance(meta, Mapping) else {}
        self._check_key(request)
        declared = request.headers.get("X-Goog-Upload-Header-Content-Length") or field_of(
            meta, "sizeBytes"
        )
        size = _int(declared, "X-Goog-Upload-Header-Content-Length")
        if size is not None and size > self._max_bytes:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"File size {size} exceeds the limit of {self._max_bytes} bytes.",
            )
        mime = field_of(meta, "mimeType") or request.headers.get(
            "X-Goog-Upload-Header-Content-Type"
        )
        name = field_of(meta, "name")
        upload_id = self.new_id(24)
        self._sessions[upload_id] = _Session(
            str(field_of(meta, "displayName") or ""), str(mime or "application/octet-stream"),
            size, str(name) if name else None,
        )  # fmt: skip
        self._counts["upload_start"] += 1
        url = f"{_origin(request)}{UPLOAD_PATH}?upload_id={upload_id}&upload_protocol=resumable"
        return _status(
            "active", {"X-Goog-Upload-URL": url, "X-Goog-Upload-Chunk-Granularity": "262144"}
        )

    async def _chunk(self, request: web.Request, session: _Session) -> None:
        offset = _int(request.headers.get("X-Goog-Upload-Offset"), "X-Goog-Upload-Offset")
        if offset is not None and offset != len(session.data):
            raise ApiError(
                400, "INVALID_ARGUMENT",
                f"X-Goog-Upload-Offset {offset} does not match the {len(session.data)} bytes "
                "received.",
            )  # fmt: skip
        async for block in request.content.iter_chunked(1 << 20):
            session.data += block
            if len(session.data) > self._max_bytes:
                raise ApiError(
                    400, "INVALID_ARGUMENT", f"File exceeds the limit of {self._max_bytes} bytes."
                )
        self._counts["upload_chunk"] += 1

    def _finalize(self, request: web.Request, session: _Session) -> web.StreamResponse:
        if session.declared is not None and session.declared != len(session.data):
            raise ApiError(
                400, "INVALID_ARGUMENT",
                f"Upload finalized with {len(session.data)} bytes; {session.declared} were "
                "declared.",
            )  # fmt: skip
        name = session.name if session.name else f"files/{self.new_id()}"
        name = name if name.startswith("files/") else f"files/{name}"
        if name in self.files:
            raise ApiError(409, "ALREADY_EXISTS", f"File {name} already exists.")
        record = FileRecord(
            name, session.display_name, session.mime_type, bytes(session.data), datetime.now(UTC)
        )
        self.store(record)
        self._counts["upload_finalize"] += 1
        return _status("final", body={"file": record.resource(_origin(request))})

    # --- get, list, delete, download --------------------------------------------------------

    async def _get(self, request: web.Request) -> web.StreamResponse:
        file_id, _, method = request.match_info["name"].partition(":")
        if method == "download":
            return self._download(request, file_id)
        if method:
            raise web.HTTPNotFound()
        self._check_key(request)
        return json_response(self.lookup(file_id).resource(_origin(request)))

    async def _download_only(self, request: web.Request) -> web.StreamResponse:
        file_id, _, method = request.match_info["name"].partition(":")
        if method != "download":
            raise web.HTTPNotFound()
        return self._download(request, file_id)

    def _download(self, request: web.Request, file_id: str) -> web.StreamResponse:
        self._check_key(request)
        record = self.lookup(file_id)
        if record.source != "GENERATED":
            raise ApiError(400, "INVALID_ARGUMENT", "Only generated files can be downloaded.")
        self._counts["download"] += 1
        if request.query.get("alt") != "media":
            return json_response(record.resource(_origin(request)))
        return web.Response(body=record.data, content_type=record.mime_type.split(";")[0])

    async def _list(self, request: web.Request) -> web.StreamResponse:
        self._check_key(request)
        items, following = page(list(self.files.values()), request, DEFAULT_PAGE, MAX_PAGE)
        out: dict[str, Any] = {}
        if items:
            out["files"] = [f.resource(_origin(request)) for f in items]
        if following:
            out["nextPageToken"] = following
        return json_response(out)

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        self._check_key(request)
        file_id, _, method = request.match_info["name"].partition(":")
        if method:
            raise web.HTTPNotFound()
        del self.files[self.lookup(file_id).name]
        return json_response({})


def _origin(request: web.Request) -> str:
    """The scheme and host the client called, so session URLs are absolute and point here."""
    return str(request.url.origin())


def _int(value: Any, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid value for {what}: {value!r}") from None
    if number < 0:
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid value for {what}: {value!r}")
    return number


def json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=pretty_json(body), status=status, content_type="application/json")


def _status(
    state: str, headers: Mapping[str, str] | None = None, body: dict[str, Any] | None = None
) -> web.Response:
    """An upload answer: every one carries ``X-Goog-Upload-Status``."""
    response = json_response(body) if body is not None else web.Response(body=b"")
    response.headers["X-Goog-Upload-Status"] = state
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
