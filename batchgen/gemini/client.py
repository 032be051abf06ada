"""The generateContent HTTP client and the classification of what can go wrong.

::

    200                        → the decoded JSON, read as a stream up to max_response_bytes;
                                 more, or a body that is not JSON → AnswerError: this row's answer
    3xx                        → ApiError(not retryable): redirects are never followed
    400 API_KEY_INVALID, 401, 403, 404 → FatalApiError: no other row can succeed
    429                        → ApiError(retryable), with the RetryInfo (or Retry-After) delay
    429 on a per-day quota     → QuotaExhaustedError: the run stops until the quota resets
    500, 502, 503, 504, timeout, dropped connection → ApiError(retryable)
    other 4xx                  → ApiError(not retryable): this row's request is wrong

The API key travels only in the ``x-goog-api-key`` header, only to the configured host (a
redirect could hand it to another one), and is scrubbed from every message and every body read.
Bodies are read as a stream under a cap counted after decompression, so a gzip bomb or an endless
body costs at most the cap in memory; error bodies get a small cap, since only their message
matters. A delay the server asks for is capped too (an hour's Retry-After would stall the run).

Which service tier served a call is the ``x-gemini-service-tier`` response header, else the
answer's ``usageMetadata.serviceTier`` (docs/gemini-api.md §11); a Flex job's requests also carry
``X-Server-Timeout``, the hint the Flex guide gives for answers that take minutes.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp

from batchgen.errors import FatalApiError, QuotaExhaustedError
from batchgen.gemini.answers import EXCERPT_CHARS, MALFORMED, AnswerError
from batchgen.gemini.transport import (
    ApiError,
    _details,
    _envelope,
    _not_gemini,
    _one_line,
    _quota_id,
    _retry_after,
    _retry_delay,
)
from batchgen.job.spec import LimitsSpec, ModelSpec, RetrySpec
from batchgen.redact import redact_url, url_host

__all__ = ["ApiError", "GeminiClient", "Reply", "served_tier"]  # ApiError lives in transport

ERROR_BODY_BYTES = 64 * 1024  # the start of an error body holds its message; the rest is waste
READ_CHUNK = 64 * 1024
MIN_SCRUBBED_KEY = 8  # real keys are 39 characters; "k" in a test must not eat every "k"
DEFAULT_MAX_RESPONSE_BYTES = LimitsSpec().max_response_bytes
DEFAULT_MAX_SERVER_DELAY = RetrySpec().max_server_delay_seconds
TIER_HEADER = "x-gemini-service-tier"
_TIER_WORD = re.compile(r"^[A-Za-z_]{1,40}$")


@dataclass(frozen=True)
class Reply:
    """A 200 answer: its JSON value, its latency, and the service tier that served it
    (lowercase, e.g. ``flex``; None when the server did not say)."""

    payload: Any
    latency_ms: float
    tier: str | None = None


class GeminiClient:
    """Sends request bodies to one model's generateContent endpoint."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        model: ModelSpec,
        api_key: str,
        timeout: float,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_server_delay: float = DEFAULT_MAX_SERVER_DELAY,
    ) -> None:
        self._session = session
        self._model = model
        self._key = api_key
        # A body that repeats the key (an echo server, a debugging proxy) has it replaced before
        # anything reads it. A key too short to be a real one would match ordinary text instead.
        self._key_bytes = api_key.encode() if len(api_key) >= MIN_SCRUBBED_KEY else b""
        self._headers = {"x-goog-api-key": api_key, "Content-Type": "application/json"}
        if model.tier == "flex":  # the server waits 600 s unless told (a hint, best-effort)
            self._headers["X-Server-Timeout"] = str(math.ceil(timeout))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_response_bytes
        self._max_delay = max_server_delay
        self._host = url_host(model.base_url)

    async def generate(self, body: bytes) -> tuple[Any, float]:
        """POST one request; return (the 200 body's JSON value, latency in ms) or raise as
        :meth:`reply` does."""
        reply = await self.reply(body)
        return reply.payload, reply.latency_ms

    async def reply(self, body: bytes) -> Reply:
        """POST one request; return its :class:`Reply` or raise.

        The value may have any shape: :func:`batchgen.gemini.answers.parse_response` reads it.

        Raises:
            ApiError: the call failed (HTTP status, timeout, connection, redirect).
            AnswerError: a 200 whose body is too large or not JSON (``response_too_large``,
                ``malformed_response``).
            FatalApiError, QuotaExhaustedError: no other row can succeed now.
        """
        started = time.perf_counter()
        status, raw, headers = await self._post(self._model.url, body)
        latency_ms = (time.perf_counter() - started) * 1000
        if status != 200:
            raise self._error(status, raw, headers.get("Retry-After"))
        payload = _decode(raw)
        return Reply(payload, latency_ms, served_tier(headers.get(TIER_HEADER), payload))

    async def count_tokens(self, contents_body: bytes) -> int:
        """POST a countTokens request; return its ``totalTokens``, or raise as :meth:`generate`.

        ``contents_body`` is a CountTokensRequest: ``{"contents": [...]}`` counts the contents
        alone; ``{"generateContentRequest": {"model": "models/…", ...}}`` counts the request as
        generateContent would bill its prompt, systemInstruction included (docs/gemini-api.md §8).
        """
        m = self._model
        url = f"{m.base_url}/{m.api_version}/models/{m.name}:countTokens"
        status, raw, headers = await self._post(url, contents_body)
        if status != 200:
            raise self._error(status, raw, headers.get("Retry-After"))
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            payload = None
        # proto3 JSON leaves a zero count out, and may quote an integer
        count = payload.get("totalTokens", 0) if isinstance(payload, dict) else None
        if isinstance(count, str) and count.isdigit():
            count = int(count)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ApiError("bad_response", f"countTokens at {self._host}: HTTP 200 without a count")
        return count

    async def _post(self, url: str, body: bytes) -> tuple[int, bytearray, dict[str, str]]:
        """(status, body, the headers read) of one POST; transport failures as retryable
        ApiError."""
        try:
            async with self._session.post(
                url, data=body, headers=self._headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                if 300 <= resp.status < 400:
                    raise self._redirect(resp)
                raw = await self._read(resp)
                if self._key_bytes and self._key_bytes in raw:  # a proxy echoing what it got
                    raw = raw.replace(self._key_bytes, b"***")
                wanted = ("Retry-After", TIER_HEADER)
                headers = {h: resp.headers[h] for h in wanted if h in resp.headers}
                return resp.status, raw, headers
        except TimeoutError:
            raise ApiError(
                "timeout", f"no answer from {self._host} within {self._timeout.total:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            text = self._scrub(f"{type(exc).__name__}: {exc}")
            raise ApiError("connection", f"{self._host}: {text}") from None

    async def _read(self, resp: aiohttp.ClientResponse) -> bytearray:
        """The body, decompressed, as a stream under its cap (a 200's or an error's)."""
        cap = self._max_bytes if resp.status == 200 else ERROR_BODY_BYTES
        encoding = resp.headers.get("Content-Encoding", "identity").lower()
        length = resp.content_length
        if encoding == "identity" and length is not None and length <= cap:
            # the common case: a plain body whose declared length is under the cap (aiohttp
            # reads no more than Content-Length), read in one call
            return bytearray(await resp.read())
        raw = bytearray()
        async for chunk in resp.content.iter_chunked(READ_CHUNK):
            room = cap - len(raw)
            if len(chunk) <= room:
                raw += chunk
                continue
            resp.close()  # the rest is never read: the connection cannot be reused
            if resp.status != 200:
                return raw + chunk[:room]
            mib = cap / 1024 / 1024
            raise AnswerError(
                "response_too_large",
                f"HTTP 200 body from {self._host} is over {mib:g} MiB (limits.max_response_mb) "
                "after decompression; raise limits.max_response_mb if answers are that long",
                _excerpt_text(raw),
            )
        return raw

    def _redirect(self, resp: aiohttp.ClientResponse) -> ApiError:
        """A 3xx is never followed: the key would go along to wherever it points."""
        location = resp.headers.get("Location", "")
        try:
            target = url_host(urljoin(str(resp.url), location)) if location else "nowhere"
        except ValueError:
            target = redact_url(location)
        return ApiError(
            "redirect",
            f"HTTP {resp.status} redirect to {target} not followed: the API key is only sent to "
            f"{self._host}; set model.base_url to the final address",
            resp.status,
        )

    def _error(
        self, status: int, raw: bytes | bytearray, retry_after: str | None = None
    ) -> Exception:
        error = _envelope(raw)
        message = self._scrub(_one_line(error.get("message")) or _not_gemini(raw))
        where = f"{redact_url(self._model.base_url)} (model {self._model.name})"
        reasons = {d.get("reason") for d in _details(error)}
        if status in (401, 403) or "API_KEY_INVALID" in reasons:
            return FatalApiError(
                f"{where}: the API refused the key in ${self._model.api_key_env} "
                f"(HTTP {status}): {message}"
            )
        if status == 404:
            return FatalApiError(f"{where}: HTTP 404: {message}")
        quota = _quota_id(error)
        if status == 429 and quota and "PerDay" in quota:
            return QuotaExhaustedError(
                f"{where}: the per-day quota {quota} is used up; the run stopped with its "
                "results saved: rerun after the quota resets (midnight Pacific)"
            )
        delay = _retry_delay(error)
        if delay is None:  # Gemini itself sends none, but proxies in front of it may
            delay = _retry_after(retry_after)
        asked = delay if delay is not None and delay > self._max_delay else None
        if asked is not None:
            delay = self._max_delay
        if status == 429:
            return ApiError("rate_limited", message, status, delay, quota, asked)
        category = "server" if status >= 500 else f"http_{status}"
        return ApiError(category, f"HTTP {status}: {message}", status, delay, asked_delay=asked)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def served_tier(header: str | None, payload: Any) -> str | None:
    """The tier that served a call, lowercase: the header, else ``usageMetadata.serviceTier``
    (whose spelling is unverified: ``flex``, ``FLEX`` and ``SERVICE_TIER_FLEX`` all read as
    ``flex``); None when neither says."""
    value: Any = header
    if not value and isinstance(payload, dict) and isinstance(payload.get("usageMetadata"), dict):
        value = payload["usageMetadata"].get("serviceTier")
    if not isinstance(value, str) or not _TIER_WORD.match(value.strip()):
        return None  # absent, or not a tier's name: the tier asked for stands
    tier = value.strip().lower().removeprefix("service_tier_")
    return "standard" if tier == "unspecified" else tier


def _decode(raw: bytearray) -> Any:
    """A 200 body's JSON value; a body that is not JSON is this row's malformed answer."""
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        problem = f"is not UTF-8 text (byte {exc.start})"
    except json.JSONDecodeError as exc:
        problem = f"is not JSON ({exc.msg}: character {exc.pos} of {len(exc.doc)})"
    except RecursionError:
        problem = "is JSON nested too deeply to read"
    raise AnswerError(MALFORMED, f"HTTP 200 body {problem}", _excerpt_text(raw))


def _excerpt_text(raw: bytes | bytearray) -> str:
    return bytes(raw[: EXCERPT_CHARS * 4]).decode(errors="replace")[:EXCERPT_CHARS]
