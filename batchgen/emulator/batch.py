"""The emulator's Batch Mode: ``batchGenerateContent`` and the ``batches`` resource.

Wire shapes follow docs/gemini-api.md §7 (from https://ai.google.dev/api/batch-api, the Batch API
guide and python-genai ``batches.py``). Every call answers with a long-running ``Operation`` whose
``metadata`` is the ``GenerateContentBatch`` (python-genai reads only ``metadata``); a finished
one also has ``done: true`` and the output in ``response``; a failed, cancelled or expired one a
top-level ``error``. Proto3 JSON throughout: int64 counters as strings, zero counters and
``done: false`` left out, states as ``BATCH_STATE_*``.

A batch is PENDING for ``batch_pending_s`` of the emulator's clock, then RUNNING for
``batch_running_s``, then ends as ``batch_script`` says for successive batches (``ok``,
``fail``, ``expire``; ``ok`` once the script is used up). A share ``batch_line_error_rate`` of
the lines fails on its own. Answers come from :func:`~batchgen.emulator.replies.answer_body`, so
a prompt gets the same answer online and in a batch, and the results are shuffled: clients must
match them by key. A line naming ``cachedContent`` is answered as generateContent answers it (the
cache's text before the prompt, ``cachedContentTokenCount`` in its usage; a cache gone or for
another model fails that line), checked when the batch ends; with ``batch_cache_refuse`` every
such line fails with a 400 "does not support cached content with batch prediction", as some
models answer (forum reports). ``submissions`` counts every key ever submitted, so a test can
assert that no row went in twice.
"""

from __future__ import annotations

import collections
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from batchgen.emulator.caches import CachesApi
from batchgen.emulator.files import FileRecord, FilesApi, field_of, json_response, page, timestamp
from batchgen.emulator.media import Lookup, read_media
from batchgen.emulator.replies import answer_body
from batchgen.emulator.wire import ApiError, parse_json, prompt_text, read_generate_request

__all__ = ["BATCH_OUTCOMES", "BatchApi"]

BATCH_OUTCOMES = ("ok", "fail", "expire")
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."
_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")
# The generic LRO contract: a cancelled operation has error code 1 (CANCELLED). The codes of
# failed and expired batches are not documented (unverified); these are the closest rpc codes.
_ENDINGS = {
    "fail": ("FAILED", 13, "Batch processing failed with an internal error."),
    "expire": ("EXPIRED", 4, "Batch expired: it was pending or running for more than 48 hours."),
}
_CANCELLED = (1, "Batch was cancelled.")
_LINE_ERROR = (429, "Resource has been exhausted (e.g. check quota).")
DEFAULT_PAGE = 50
MAX_PAGE = 1000


class BatchSettings(Protocol):
    """The :class:`~batchgen.emulator.server.EmulatorConfig` fields batches follow."""

    seed: int
    batch_pending_s: float
    batch_running_s: float
    batch_line_error_rate: float
    batch_script: list[str]
    batch_cache_refuse: bool


@dataclass
class _Line:
    """One request of a batch: its key (or inline metadata), and its answer or error."""

    metadata: Any  # the file line's key, or the inline request's metadata (echoed verbatim)
    body: dict[str, Any] | None
    error: tuple[int, str] | None


@dataclass
class _Batch:
    name: str
    model: str
    display_name: str
    file_name: str | None
    lines: list[_Line]
    started: float  # the emulator clock at creation
    created: datetime
    ending: str  # "ok", "fail" or "expire"
    priority: int = 0
    cancelled_at: datetime | None = None
    ended_at: datetime | None = None
    output: dict[str, Any] | None = None
    state: str = "PENDING"
    order: list[int] = field(default_factory=list)


class BatchApi:
    """The batch endpoints, served next to generateContent by the same Emulator."""

    def __init__(
        self,
        files: FilesApi,
        check_key: Callable[[web.Request], None],
        check_model: Callable[[str, str], None],
        clock: Callable[[], float],
        counts: collections.Counter[str],
        config: BatchSettings,
        caches: CachesApi,
    ) -> None:
        self.batches: dict[str, _Batch] = {}
        self.submissions: collections.Counter[str] = collections.Counter()
        self._files = files
        self._check_key = check_key
        self._check_model = check_model
        self._clock = clock
        self._counts = counts
        self._config = config
        self._caches = caches
        self._dice = random.Random(f"batch-{config.seed}")
        self._created = 0

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1beta/batches", self._list)
        router.add_get("/v1beta/batches/{name}", self._get)
        router.add_post("/v1beta/batches/{name}", self._post)
        router.add_delete("/v1beta/batches/{name}", self._delete)

    # --- create ---------------------------------------------------------------------------

    async def create(self, request: web.Request, model: str) -> web.StreamResponse:
        """``POST /v1beta/models/{model}:batchGenerateContent``."""
        self._counts["batchGenerateContent"] += 1
        raw = parse_json(await request.read())
        batch = field_of(raw, "batch") if isinstance(raw, Mapping) else None
        if not isinstance(batch, Mapping):
            raise ApiError(400, "INVALID_ARGUMENT", "* GenerateContentBatch: batch is required\n")
        self._check_key(request)
        self._check_model(model, "batchGenerateContent")
        file_name, lines = self._read_input(field_of(batch, "inputConfig"))
        created = self._new(model, batch, file_name, lines)
        return json_response(self._operation(created, request))

    def _read_input(self, config: Any) -> tuple[str | None, list[_Line]]:
        """Exactly one of ``requests.requests[]`` and ``fileName``, read into lines."""
        config = config if isinstance(config, Mapping) else {}
        inline, file_name = field_of(config, "requests"), field_of(config, "fileName")
        if (inline is None) == (file_name is None):
            raise ApiError(
                400, "INVALID_ARGUMENT",
                "* GenerateContentBatch.input_config: set exactly one of requests and file_name\n",
            )  # fmt: skip
        if file_name is not None:
            record = self._files.lookup(str(file_name))
            return record.name, [_file_line(text, i) for i, text in _jsonl(record.data)]
        items = field_of(inline, "requests") if isinstance(inline, Mapping) else None
        if not isinstance(items, list) or not items:
            raise ApiError(400, "INVALID_ARGUMENT", "* InlinedRequests.requests: no requests\n")
        return None, [_inline_line(item) for item in items]

    def _new(
        self, model: str, batch: Mapping[str, Any], file_name: str | None, lines: list[_Line]
    ) -> _Batch:
        script = self._config.batch_script
        ending = script[self._created] if self._created < len(script) else "ok"
        self._created += 1
        rate = self._config.batch_line_error_rate
        for line in lines:
            if line.error is None and rate and self._dice.random() < rate:
                line.error = _LINE_ERROR
            key = line.metadata if isinstance(line.metadata, str) else json.dumps(line.metadata)
            if self.submissions[key]:
                self._counts["batch_rows_repeated"] += 1
            self.submissions[key] += 1
        self._counts["batch_rows"] += len(lines)
        name = f"batches/{self._files.new_id(36)}"
        order = list(range(len(lines)))
        self._dice.shuffle(order)  # results come back in no particular order
        created = _Batch(
            name, f"models/{model}", str(field_of(batch, "displayName") or ""), file_name, lines,
            self._clock(), datetime.now(UTC), ending, int(field_of(batch, "priority") or 0),
            order=order,
        )  # fmt: skip
        self.batches[name] = created
        return created

    # --- get, list, cancel, delete ----------------------------------------------------------

    def _lookup(self, request: web.Request) -> tuple[_Batch, str]:
        batch_id, _, method = request.match_info["name"].partition(":")
        self._check_key(request)
        found = self.batches.get(f"batches/{batch_id}")
        if found is None:
            raise ApiError(404, "NOT_FOUND", f"Batch batches/{batch_id} not found.")
        return found, method

    async def _get(self, request: web.Request) -> web.StreamResponse:
        batch, method = self._lookup(request)
        if method:
            raise web.HTTPNotFound()
        return json_response(self._operation(batch, request))

    async def _post(self, request: web.Request) -> web.StreamResponse:
        batch, method = self._lookup(request)
        if method == "cancel":
            self._advance(batch)
            if batch.state not in _TERMINAL:
                batch.state, batch.cancelled_at = "CANCELLED", datetime.now(UTC)
                batch.ended_at = batch.cancelled_at
            self._counts["batch_cancel"] += 1
            return json_response({})
        if method == "delete":  # the 2025-07 guide's form of delete
            del self.batches[batch.name]
            return json_response({})
        raise web.HTTPNotFound()

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        batch, method = self._lookup(request)
        if method:
            raise web.HTTPNotFound()
        del self.batches[batch.name]
        return json_response({})

    async def _list(self, request: web.Request) -> web.StreamResponse:
        self._check_key(request)
        items, following = page(list(self.batches.values()), request, DEFAULT_PAGE, MAX_PAGE)
        out: dict[str, Any] = {}
        if items:
            out["operations"] = [self._operation(b, request) for b in items]
        if following:
            out["nextPageToken"] = following
        return json_response(out)

    # --- progress and output ----------------------------------------------------------------

    def _advance(self, batch: _Batch) -> None:
        """Move a batch along the emulator's clock; build its output when it succeeds."""
        if batch.state in _TERMINAL:
            return
        elapsed = self._clock() - batch.started
        pending, running = self._config.batch_pending_s, self._config.batch_running_s
        if elapsed < pending:
            return
        if elapsed < pending + running:
            batch.state = "RUNNING"
            return
        batch.ended_at = datetime.now(UTC)
        if batch.ending in _ENDINGS:
            batch.state = _ENDINGS[batch.ending][0]
            return
        batch.state = "SUCCEEDED"
        batch.output = self._output(batch)

    def _done_share(self, batch: _Batch) -> float:
        if batch.state == "SUCCEEDED":
            return 1.0
        if batch.state != "RUNNING" or not self._config.batch_running_s:
            return 0.0
        elapsed = self._clock() - batch.started - self._config.batch_pending_s
        return min(1.0, max(0.0, elapsed / self._config.batch_running_s))

    def _output(self, batch: _Batch) -> dict[str, Any]:
        model = batch.model.removeprefix("models/")
        answers = [self._answer(batch.lines[i], model) for i in batch.order]
        if batch.file_name is None:
            return {"inlinedResponses": {"inlinedResponses": answers}}
        text = "".join(_file_result(a) for a in answers)
        record = FileRecord(
            f"files/batch-{batch.name.removeprefix('batches/')}", "", "application/jsonl",
            text.encode(), datetime.now(UTC), source="GENERATED",
        )  # fmt: skip
        self._files.store(record)
        return {"responsesFile": record.name}

    def _answer(self, line: _Line, model: str) -> dict[str, Any]:
        """An output item, the line's cache (if it names one) looked up as the batch ends."""
        if line.body is None or line.error is not None or not line.body.get("cachedContent"):
            return _answer(line, model, self._files.media)
        if self._config.batch_cache_refuse:
            self._counts["batch_cache_refused"] += 1
            message = f"Model {model} does not support cached content with batch prediction."
            return {"error": {"code": 400, "message": message}, "metadata": line.metadata}
        try:
            cache = self._caches.use(line.body, model)
        except ApiError as exc:
            code = 7 if exc.code == 403 else 3  # PERMISSION_DENIED, INVALID_ARGUMENT
            return {"error": {"code": code, "message": exc.message}, "metadata": line.metadata}
        return _answer(line, model, self._files.media, (cache.text, cache.tokens))

    def _stats(self, batch: _Batch) -> dict[str, str]:
        total = len(batch.lines)
        done = [batch.lines[i] for i in batch.order[: round(total * self._done_share(batch))]]
        failed = sum(1 for line in done if line.error is not None)
        counts = {
            "requestCount": total,
            "successfulRequestCount": len(done) - failed,
            "failedRequestCount": failed,
            "pendingRequestCount": 0 if batch.state in _TERMINAL else total - len(done),
        }
        return {k: str(v) for k, v in counts.items() if v}  # int64 as strings, zeros left out

    def _operation(self, batch: _Batch, request: web.Request) -> dict[str, Any]:
        self._advance(batch)
        meta: dict[str, Any] = {"@type": _TYPE + "GenerateContentBatch", "model": batch.model}
        if batch.display_name:
            meta["displayName"] = batch.display_name
        if batch.file_name:
            meta["inputConfig"] = {"fileName": batch.file_name}
        if batch.output is not None:
            meta["output"] = batch.output
        meta["createTime"] = timestamp(batch.created)
        if batch.ended_at is not None:
            meta["endTime"] = timestamp(batch.ended_at)
        meta["updateTime"] = timestamp(batch.ended_at or batch.created)
        meta["batchStats"] = self._stats(batch)
        meta["state"] = f"BATCH_STATE_{batch.state}"
        if batch.priority:
            meta["priority"] = str(batch.priority)
        meta["name"] = batch.name
        operation: dict[str, Any] = {"name": batch.name, "metadata": meta}
        if batch.state not in _TERMINAL:
            return operation  # no "done": false in proto3 JSON
        operation["done"] = True
        if batch.output is not None:
            operation["response"] = {"@type": _TYPE + "GenerateContentBatchOutput", **batch.output}
        else:
            code, message = _CANCELLED if batch.state == "CANCELLED" else _ENDINGS[batch.ending][1:]
            operation["error"] = {"code": code, "message": message}
        return operation


def _jsonl(data: bytes) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line of an input file."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ApiError(400, "INVALID_ARGUMENT", "The input file is not UTF-8 text.") from None
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def _file_line(text: str, number: int) -> _Line:
    """A ``{"key", "request"}`` line; a line that is not one fails on its own."""
    try:
        item = json.loads(text)
    except ValueError:
        return _Line(f"line {number}", None, (3, f"Line {number} is not valid JSON."))
    if not isinstance(item, Mapping) or "request" not in item:
        return _Line(f"line {number}", None, (3, f"Line {number} has no request."))
    key = item.get("key")
    key = key if isinstance(key, str) else f"line {number}"
    return _checked(key, item["request"])


def _inline_line(item: Any) -> _Line:
    item = item if isinstance(item, Mapping) else {}
    metadata = item.get("metadata")
    return _checked(metadata, item.get("request"))


def _checked(metadata: Any, request: Any) -> _Line:
    """A request read as generateContent reads it; what it would refuse is this line's error."""
    try:
        return _Line(metadata, read_generate_request(request), None)
    except ApiError as exc:
        return _Line(metadata, None, (3, exc.message))


def _file_result(item: dict[str, Any]) -> str:
    """An output file line: the response or error, then ``key`` (the order of a real file)."""
    out = {k: v for k, v in item.items() if k != "metadata"}
    return json.dumps({**out, "key": item["metadata"]}, ensure_ascii=False) + "\n"


def _answer(
    line: _Line, model: str, lookup: Lookup, cached: tuple[str, int] | None = None
) -> dict[str, Any]:
    """An output item: ``response`` or ``error``, with the line's metadata (a line naming a
    file the Files API does not hold fails on its own, with the 403's code and message);
    ``cached``: the text and tokens of the cache the line names."""
    if line.error is not None or line.body is None:
        code, message = line.error or (3, "Invalid request.")
        return {"error": {"code": code, "message": message}, "metadata": line.metadata}
    try:
        media = read_media(line.body, lookup)
    except ApiError as exc:
        code = 7 if exc.code == 403 else 3  # PERMISSION_DENIED, INVALID_ARGUMENT
        return {"error": {"code": code, "message": exc.message}, "metadata": line.metadata}
    prompt = prompt_text(line.body)
    if cached is not None:  # the cached prefix comes first, as generateContent has it
        prompt = f"{cached[0]}\n{prompt}"
    response = answer_body(line.body, model, prompt, None, media)
    if cached is not None:  # promptTokenCount includes the cached part
        response["usageMetadata"]["cachedContentTokenCount"] = cached[1]
    return {"response": response, "metadata": line.metadata}
