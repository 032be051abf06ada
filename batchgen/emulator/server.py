"""An offline Gemini API (v1beta) for tests, benchmarks and dry runs: an ``aiohttp.web`` app.

It speaks the real wire format (docs/gemini-api.md §0-4, §8-10) for two methods::

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:countTokens

plus ``GET /_emulator/stats`` (its own: :attr:`Emulator.counts` as JSON, for tools that run it
in another process). It checks a request in the order the real API does: JSON, body fields,
key, model, rate limits, then faults, then the answer. Answers are deterministic per (model,
prompt, schema); structured answers conform to the response schema. Faults are drawn per call
with seeded dice (``fault_rates``) or scripted per prompt substring (``script``).

Batch Mode and the Files API (``:batchGenerateContent``, ``batches/*``, resumable upload and
download) are served from :mod:`batchgen.emulator.batch` and :mod:`batchgen.emulator.files`.

Three ways to run it: :func:`create_app` (for pytest-aiohttp), :class:`EmulatorServer` (in the
current event loop), :class:`EmulatorThread` (own loop in a daemon thread, for sync code), and
:func:`serve` for the ``batchgen emulator`` command. The API key is never logged or echoed.

Module map: :mod:`batchgen.emulator.wire` reads request bodies, :mod:`batchgen.emulator.replies`
builds response bodies, :mod:`batchgen.emulator.fakedata` makes schema-conforming values.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_exceptions import NotAppKeyWarning

from batchgen.emulator.batch import BATCH_OUTCOMES, BatchApi
from batchgen.emulator.caches import CachesApi
from batchgen.emulator.files import FilesApi
from batchgen.emulator.hostile import HOSTILE_FAULTS, HostileConfig, hostile_reply
from batchgen.emulator.latency import LatencyModel
from batchgen.emulator.media import read_media
from batchgen.emulator.quota import QuotaWindows
from batchgen.emulator.replies import (
    answer_body,
    count_tokens_body,
    estimate_tokens,
    pretty_json,
    quota_error,
)
from batchgen.emulator.wire import (
    ApiError,
    error_body,
    parse_json,
    prompt_text,
    read_count_request,
    read_generate_request,
)

__all__ = [
    "APP_KEY",
    "FAULTS",
    "KNOWN_MODELS",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorThread",
    "STATS_PATH",
    "RedactingAccessLogger",
    "create_app",
    "estimate_tokens",
    "serve",
]

KNOWN_MODELS: frozenset[str] = frozenset(
    {
        "gemini-2.0-flash",
        "gemini-2.0-flash-lite",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-3-pro-preview",
        "gemini-3.1-pro-preview",
        "gemini-3-flash-preview",
        "gemini-3.1-flash-lite",
        "gemini-3.5-flash-lite",
        "gemini-3.5-flash",
        "gemini-3.6-flash",
        "gemini-3.7-flash",
        "gemini-3.8-flash",
        "gemini-4-argon",
        "gemini-flash-latest",
        "gemini-flash-lite-latest",
        "gemini-pro-latest",
    }
)
FAULTS: tuple[str, ...] = (
    "429",  # RESOURCE_EXHAUSTED with RetryInfo 0.2s
    "500",  # INTERNAL
    "503",  # UNAVAILABLE, "The model is overloaded"
    "504",  # DEADLINE_EXCEEDED
    "truncated",  # 200, JSON cut mid-way, MAX_TOKENS
    "empty",  # 200, content without parts, MAX_TOKENS (thinking ate the budget)
    "safety",  # 200, finishReason SAFETY, no content
    "recitation",  # 200, finishReason RECITATION, no content
    "blocked",  # 200, no candidates, promptFeedback.blockReason SAFETY
    "invalid",  # 200, STOP, JSON that breaks the schema
    "invalid_last",  # 200, STOP, the last candidate's JSON breaks the schema (candidateCount)
    "drop",  # connection closed without an HTTP response
    "slow",  # a normal answer after an extra slow_seconds
    "capacity",  # Flex only: 503 UNAVAILABLE, no capacity (a standard request is answered)
)
_HTTP_FAULTS = {
    "500": (500, "INTERNAL", "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting"),
    "503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "504": (504, "DEADLINE_EXCEEDED",
            "The service is unable to finish processing within the deadline."),
    # The emulator's own wording: the Flex guide says only "503 (at capacity)" or 429.
    "capacity": (503, "UNAVAILABLE",
                 "The service is currently at capacity for the flex tier. Please try again later."),
}  # fmt: skip
TIER_HEADER = "x-gemini-service-tier"
STATS_PATH = "/_emulator/stats"
# The API takes request bodies up to 100 MB, inline data included (raised from 20 MB in 2026,
# docs/media.md); aiohttp's default is 1 MiB.
MAX_BODY_BYTES = 100 * 1000 * 1000
INJECTED_429_DELAY = 0.2  # short, so client retry tests stay fast
_UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_KEY_INVALID_DETAILS = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }
]


@dataclass
class EmulatorConfig:
    """How the emulator behaves. Every field has a default that answers everything at once.

    Attributes:
        api_keys: accepted keys; None accepts any non-empty key.
        models: model names that exist; others get 404.
        latency_ms: added to every generateContent answer.
        latency_jitter_ms: uniform +- jitter on top of ``latency_ms``.
        latency_median_ms: the median of a lognormal delay added on top (0: none).
        latency_sigma: that lognormal's spread (standard deviation of the log; 0: always the
            median).
        model_latency: model -> (median ms, sigma), overriding the two above for that model.
        outage_after_s: an outage starts this many seconds after the first generateContent
            call: every call answers 503 UNAVAILABLE at once for ``outage_seconds``.
        outage_seconds: how long that outage lasts.
        rpm_limit: requests per minute per model (sliding 60 s window), then 429.
        tpm_limit: input tokens per minute per model (sliding 60 s window), then 429.
        rpd_limit: requests per day per model (sliding 24 h window), then 429.
        fault_rates: fault name -> probability per generateContent call (sum at most 1).
        seed: seeds the fault dice and the jitter; answers depend only on the request.
        script: prompt substring -> faults ("ok" for a normal answer) for successive calls
            whose prompt contains it; the first matching key in dict order decides, and once
            its list is used up those calls are answered normally.
        record: keep the parsed body of every generateContent call in ``Emulator.received``,
            and the headers of every API call in ``Emulator.received_headers``.
        slow_seconds: the extra delay of the "slow" fault.
        hostile: sizes, delays and the redirect target of the hostile faults
            (:data:`batchgen.emulator.hostile.HOSTILE_FAULTS`: a proxy's misbehaviour).
        flex_standard_share: the share of answered Flex requests served (and so billed) at
            the standard tier, as the ``x-gemini-service-tier`` header says; seeded dice.
        batch_pending_s: how long (on the emulator's clock) a new batch stays PENDING.
        batch_running_s: how long it is RUNNING after that; its counters progress evenly.
        batch_line_error_rate: the share of batch lines that fail on their own (seeded dice).
        batch_script: how successive batches end: "ok", "fail" (FAILED) or "expire"
            (EXPIRED); batches after the script's end succeed.
        max_file_bytes: the Files API's size limit per file (2 GB).
        cache_min_tokens: model -> the least tokens a cachedContents entry may hold (400 below
            it); models not named: 1024.
        cache_refuse: every cachedContents create is refused with a 400 (a model without
            explicit caching).
        batch_cache_refuse: every batch line naming a cachedContent fails with a 400 "does
            not support cached content with batch prediction" (a model without caches in
            Batch Mode).
    """

    api_keys: frozenset[str] | None = None
    models: frozenset[str] = KNOWN_MODELS
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    latency_median_ms: float = 0.0
    latency_sigma: float = 0.0
    model_latency: dict[str, tuple[float, float]] = field(default_factory=dict)
    outage_after_s: float | None = None
    outage_seconds: float = 0.0
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    rpd_limit: int | None = None
    fault_rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    script: dict[str, list[str]] = field(default_factory=dict)
    record: bool = False
    slow_seconds: float = 2.0
    hostile: HostileConfig = field(default_factory=HostileConfig)
    flex_standard_share: float = 0.0
    batch_pending_s: float = 0.0
    batch_running_s: float = 0.0
    batch_line_error_rate: float = 0.0
    batch_script: list[str] = field(default_factory=list)
    max_file_bytes: int = 2 * 1000**3
    cache_min_tokens: dict[str, int] = field(default_factory=dict)
    cache_refuse: bool = False
    batch_cache_refuse: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.flex_standard_share <= 1.0:
            raise ValueError(
                f"flex_standard_share must be within 0..1, not {self.flex_standard_share}"
            )
        known = FAULTS + HOSTILE_FAULTS
        spreads = [(self.latency_median_ms, self.latency_sigma), *self.model_latency.values()]
        if any(median < 0 or sigma < 0 for median, sigma in spreads):
            raise ValueError("latency medians and sigmas must be >= 0")
        for name, rate in self.fault_rates.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r} (one of {', '.join(known)})")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {name!r} must be within 0..1, not {rate}")
        if sum(self.fault_rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        for key, plan in self.script.items():
            for entry in plan:
                if entry != "ok" and entry not in known:
                    raise ValueError(f"script[{key!r}]: unknown fault {entry!r}")
        for ending in self.batch_script:
            if ending not in BATCH_OUTCOMES:
                raise ValueError(f"batch_script: unknown ending {ending!r} (ok, fail, expire)")
        if not 0.0 <= self.batch_line_error_rate <= 1.0:
            raise ValueError("batch_line_error_rate must be within 0..1")


class RedactingAccessLogger(AbstractAccessLogger):
    """Access log without the query string, where ``?key=`` would leak the API key."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.3fs", request.method, request.path, response.status, time)


class Emulator:
    """The emulator's state and handlers; ``app`` is the aiohttp application serving them."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.received: list[dict[str, Any]] = []
        self.received_headers: list[dict[str, str]] = []  # with record: every call's headers
        self.counts: collections.Counter[str] = collections.Counter()
        self.clock: Callable[[], float] = time.monotonic
        self._dice = random.Random(self.config.seed)
        self._tier_dice = random.Random(self.config.seed + 1)  # apart: faults roll as before
        self._latency = LatencyModel(self.config)
        self._first_call: float | None = None  # when the first generateContent arrived
        self._script_used: collections.Counter[str] = collections.Counter()
        self._quota = QuotaWindows(self.config)
        self.app = web.Application(
            middlewares=[_envelope_middleware], client_max_size=MAX_BODY_BYTES
        )
        self.app[APP_KEY] = self
        with warnings.catch_warnings():
            # The documented str key, kept for callers that know it; APP_KEY is the typed one.
            warnings.simplefilter("ignore", NotAppKeyWarning)
            self.app["emulator"] = self
        self.app.router.add_post("/v1beta/models/{name}", self._dispatch)
        self.app.router.add_get(STATS_PATH, self._stats)
        # Batch Mode and its files (batch.py, files.py); the lambda reads a replaced clock too.
        self.files = FilesApi(self._check_key, self.counts, self.config.seed,
                              self.config.max_file_bytes)  # fmt: skip
        self.caches = CachesApi(self._check_key, self._check_model, lambda: self.clock(),
                                self.counts, self.config.cache_min_tokens,
                                self.config.cache_refuse, self.files.media)  # fmt: skip
        self.batches = BatchApi(self.files, self._check_key, self._check_model,
                                lambda: self.clock(), self.counts, self.config,
                                self.caches)  # fmt: skip
        self.files.add_routes(self.app.router)
        self.batches.add_routes(self.app.router)
        self.caches.add_routes(self.app.router)

    def caches_alive(self) -> int:
        """cachedContents entries that exist now (not deleted, not expired)."""
        return self.caches.alive()

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        """The counts so far; not itself counted, so polling does not change them."""
        return web.Response(text=json.dumps(dict(self.counts)), content_type="application/json")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        # "gemini-2.5-flash:generateContent" arrives as one path segment.
        model, _, method = request.match_info["name"].rpartition(":")
        if self.config.record:
            self.received_headers.append(dict(request.headers))
        if method == "generateContent" and model:
            return await self._generate(request, model)
        if method == "countTokens" and model:
            return await self._count(request, model)
        if method == "batchGenerateContent" and model:
            return await self.batches.create(request, model)
        raise web.HTTPNotFound()

    async def _generate(self, request: web.Request, model: str) -> web.StreamResponse:
        self.counts["generateContent"] += 1
        raw = parse_json(await request.read())
        if self.config.record:
            self.received.append(raw)
        body = read_generate_request(raw)
        self._check_key(request)
        self._check_model(model, "generateContent")
        prompt = prompt_text(body)
        media = read_media(body, self.files.media)
        cache = self.caches.use(body, model) if body.get("cachedContent") else None
        if cache is not None:  # the cached prefix comes first, as the system instruction would
            prompt = f"{cache.text}\n{prompt}"
        self._check_outage()
        tokens = estimate_tokens(prompt) + sum(m.tokens for m in media)
        self._quota.admit(model, tokens, self.clock())
        tier = body.get("serviceTier") or "standard"
        fault = self._choose_fault(prompt)
        if fault == "capacity" and tier != "flex":
            fault = None  # only Flex is sheddable
        if fault:
            self.counts[f"fault:{fault}"] += 1
        await self._delay(model, fault)
        if fault == "drop":
            raise _DropConnectionError()
        if fault == "429":
            raise quota_error(model, "rpm", self.config.rpm_limit or 1000, INJECTED_429_DELAY)
        if fault in _HTTP_FAULTS:
            raise ApiError(*_HTTP_FAULTS[fault])
        if fault in HOSTILE_FAULTS:
            answer = answer_body(body, model, prompt, None, media)
            return await hostile_reply(request, fault, self.config.hostile, model, answer)
        served = self._served(tier)
        self.counts[f"tier:{served}"] += 1
        # the same answer at every tier: only the header says how it was served
        answer = answer_body(body, model, prompt, fault, media)
        if cache is not None:  # promptTokenCount includes the cached part
            answer["usageMetadata"]["cachedContentTokenCount"] = cache.tokens
        response = _json_response(answer)
        response.headers[TIER_HEADER] = served
        return response

    def _served(self, tier: str) -> str:
        """The tier that serves an answered request: Flex, or a share of it at standard."""
        if tier == "unspecified":
            return "standard"
        if tier == "flex" and self._tier_dice.random() < self.config.flex_standard_share:
            return "standard"
        return tier

    async def _count(self, request: web.Request, model: str) -> web.StreamResponse:
        self.counts["countTokens"] += 1
        body = read_count_request(parse_json(await request.read()))
        self._check_key(request)
        self._check_model(model, "countTokens")
        media = read_media(body, self.files.media)
        return _json_response(count_tokens_body(prompt_text(body), media))

    def _check_key(self, request: web.Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
        if not key.strip():
            raise ApiError(403, "PERMISSION_DENIED", _UNREGISTERED)
        if self.config.api_keys is not None and key not in self.config.api_keys:
            message = "API key not valid. Please pass a valid API key."
            raise ApiError(400, "INVALID_ARGUMENT", message, _KEY_INVALID_DETAILS)

    def _check_model(self, model: str, method: str) -> None:
        if model not in self.config.models:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"models/{model} is not found for API version v1beta, or is not supported for "
                f"{method}. Call ListModels to see the list of available models and their "
                "supported methods.",
            )

    def _check_outage(self) -> None:
        """During the configured outage every call is refused at once, as by a proxy."""
        now = self.clock()
        if self._first_call is None:
            self._first_call = now
        start = self.config.outage_after_s
        if start is None:
            return
        elapsed = now - self._first_call
        if start <= elapsed < start + self.config.outage_seconds:
            self.counts["fault:outage"] += 1
            raise ApiError(*_HTTP_FAULTS["503"])

    def _choose_fault(self, prompt: str) -> str | None:
        """A scripted entry if a script key matches the prompt, else a roll of the dice."""
        for key, plan in self.config.script.items():
            if key in prompt:
                used = self._script_used[key]
                if used >= len(plan):
                    return None
                self._script_used[key] += 1
                return None if plan[used] == "ok" else plan[used]
        if not self.config.fault_rates:
            return None
        roll, edge = self._dice.random(), 0.0
        for name, rate in self.config.fault_rates.items():
            edge += rate
            if roll < edge:
                return name
        return None

    async def _delay(self, model: str, fault: str | None) -> None:
        seconds = self._latency.seconds(model)
        if fault == "slow":
            seconds += self.config.slow_seconds
        if seconds > 0:
            await asyncio.sleep(seconds)


APP_KEY = web.AppKey("emulator", Emulator)


@web.middleware
async def _envelope_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as the API's JSON envelope; counts every status."""
    try:
        response = await handler(request)
    except _DropConnectionError:
        return _drop(request)
    except ApiError as exc:
        response = _json_response(exc.body(), exc.code)
    except web.HTTPRequestEntityTooLarge:
        message = f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes."
        response = _json_response(error_body(400, "INVALID_ARGUMENT", message), 400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Unknown paths and wrong HTTP methods alike: only two API methods exist here.
        message = f"The requested URL {request.path} was not found on this server."
        response = _json_response(error_body(404, "NOT_FOUND", message), 404)
    if request.path != STATS_PATH:
        request.app[APP_KEY].counts[f"status:{response.status}"] += 1
    return response


def _json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    # The real API pretty-prints with two spaces and says charset=UTF-8.
    text = pretty_json(body)
    return web.Response(text=text, status=status, content_type="application/json")


class _DropConnectionError(Exception):
    """Raised by a handler to close the connection with nothing sent (the "drop" fault)."""


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection; the client sees a server disconnect and no HTTP response.

    aiohttp then fails to write the returned response to the closing transport and treats it
    as a client that went away, so nothing is logged as an error.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)  # never sent; 499 is "client closed request" in logs


def create_app(config: EmulatorConfig | None = None) -> web.Application:
    """A new emulator's application; ``app[APP_KEY]`` (or ``app["emulator"]``) is the Emulator."""
    return Emulator(config).app


class EmulatorServer:
    """The emulator listening on ``host:port`` in the current event loop (port 0: any free)."""

    def __init__(
        self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.emulator = Emulator(config)
        self.host = host
        self.port = port
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> EmulatorServer:
        # handler_cancellation: a client that gives up on a "slow" answer frees its handler;
        # shutdown_timeout: stopping never waits long for such handlers.
        runner = web.AppRunner(
            self.emulator.app,
            access_log_class=RedactingAccessLogger,
            handler_cancellation=True,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class EmulatorThread:
    """The emulator on its own event loop in a daemon thread, for synchronous callers."""

    def __init__(
        self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._server = EmulatorServer(config, host, port)
        self.emulator = self._server.emulator
        self.base_url = ""
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> str:
        """Start serving; return the base URL once the socket listens."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=asyncio.run, args=(self._main(),), name="batchgen-emulator", daemon=True
            )
            self._thread.start()
            self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.base_url

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with self._server:
                self.base_url = self._server.base_url
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:  # handed to the thread that called start()
            self._error = exc
        finally:
            self._ready.set()

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._thread is None or self._loop is None or self._stop is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8089) -> None:
    """Serve until interrupted (Ctrl+C); print one line with the base URL first."""

    async def run() -> None:
        async with EmulatorServer(config, host, port) as server:
            print(f"Gemini emulator listening on {server.base_url} (Ctrl+C to stop)", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
