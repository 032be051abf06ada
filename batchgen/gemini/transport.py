"""The one HTTP transport for every call to the Gemini API, and the classification of what can
go wrong.

generateContent, countTokens, the Files API (resumable upload, download) and the ``batches``
resource all go through :class:`Transport`; nothing else in the package opens a session to the
API (:func:`open_session`). What a call can end in::

    200                        → the body, read as a stream up to max_response_bytes; more
                                 → AnswerError response_too_large (the client says what it means)
    3xx                        → ApiError(not retryable): redirects are never followed
    400 API_KEY_INVALID, 401, 403, 404 → FatalApiError: no other row can succeed
    404 on a named batch or file → ApiError not_found: that resource is gone
    429                        → ApiError(retryable), with the RetryInfo (or Retry-After) delay
    429 on a per-day quota     → QuotaExhaustedError: the run stops until the quota resets
    500, 502, 503, 504, timeout, dropped connection → ApiError(retryable)
    other 4xx                  → ApiError(not retryable): this row's request is wrong

:meth:`Transport.errors` holds that mapping, exceptions and statuses alike (as httpx's
``map_httpcore_exceptions`` does for its transports), so every call is classified the same way.

Calls go through the proxy ``HTTPS_PROXY``/``HTTP_PROXY`` name unless ``NO_PROXY`` or loopback
says otherwise (:mod:`batchgen.gemini.proxy`); https through it is a CONNECT tunnel.

The API key travels only in the ``x-goog-api-key`` header, only to the configured host (a
redirect could hand it to another one), and is scrubbed from every message and every body read.
Bodies are read as a stream under a cap counted after decompression, so a gzip bomb or an endless
body costs at most the cap in memory; error bodies get a small cap, since only their message
matters. A delay the server asks for is capped too (an hour's Retry-After would stall the run).
"""

from __future__ import annotations

import email.utils
import errno
import io
import json
import math
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp

from batchgen.errors import FatalApiError, JobError, QuotaExhaustedError
from batchgen.gemini.answers import EXCERPT_CHARS, AnswerError
from batchgen.gemini.proxy import proxy_for
from batchgen.gemini.request import StreamedBody
from batchgen.job.spec import LimitsSpec, ModelSpec, RetrySpec
from batchgen.job.wire import unsendable
from batchgen.redact import redact_url, url_host

__all__ = ["ApiError", "Response", "Transport", "open_session"]

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
ERROR_BODY_BYTES = 64 * 1024  # the start of an error body holds its message; the rest is waste
READ_CHUNK = 64 * 1024
MIN_SCRUBBED_KEY = 8  # real keys are 39 characters; "k" in a test must not eat every "k"
DEFAULT_MAX_RESPONSE_BYTES = LimitsSpec().max_response_bytes
DEFAULT_MAX_SERVER_DELAY = RetrySpec().max_server_delay_seconds
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)s\s*$")


class ApiError(Exception):
    """One call failed; the row may be retried when ``retryable``."""

    def __init__(
        self,
        category: str,
        message: str,
        status: int | None = None,
        retry_delay: float | None = None,
        quota: str | None = None,
        asked_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.status = status
        self.retry_delay = retry_delay  # what to wait: the server's delay, capped
        self.quota = quota  # the QuotaFailure quotaId of a 429, when the server names it
        self.asked_delay = asked_delay  # the server's own delay, set only when it was capped

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUS


@dataclass(frozen=True)
class Response:
    """A 200 answer: its body (the key scrubbed) and its response headers."""

    body: bytearray
    headers: Mapping[str, str]


@asynccontextmanager
async def open_session(connections: int | None = None) -> AsyncIterator[aiohttp.ClientSession]:
    """A session for calls to the API, at most ``connections`` open at once (aiohttp's default
    of 100 when None). The key is not in it: each request carries it (:class:`Transport`)."""
    connector = aiohttp.TCPConnector(limit=connections) if connections is not None else None
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


class Transport:
    """Requests to one model's API over a session: redirects refused, bodies capped, the key
    scrubbed, failures classified (see the module)."""

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
        # aiohttp would refuse these at the first call, in a worker; the callers check the key
        # earlier (resolve_api_key), this is for a library caller that hands one in directly
        problem = unsendable(api_key)
        if problem is not None:
            raise JobError(
                f"the API key for ${model.api_key_env} (model.api_key_env) holds {problem}, which "
                "cannot go in an HTTP header; set it to the key alone"
            )
        self._session = session
        self.model = model
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
        self.host = url_host(model.base_url)
        self.proxy = proxy_for(model.base_url)  # HTTPS_PROXY and the like (gemini/proxy.py)
        self._proxy_url = self.proxy.url if self.proxy else None
        # proxy credentials: in the CONNECT of an https call; in an http call's own headers
        self._proxy_headers = dict(self.proxy.headers) if self.proxy else None
        if self.proxy and not model.base_url.lower().startswith("https:"):
            self._headers.update(self.proxy.headers)

    async def request(
        self,
        method: str,
        url: str,
        data: bytes | StreamedBody | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        named: bool = False,
    ) -> Response:
        """One call; its 200 :class:`Response`, or the error :meth:`errors` maps its failure to.

        ``named``: the URL names a batch or a file, whose 404 is ``not_found``, not fatal.
        """
        sent = {**self._headers, **(headers or {})}
        reading: list[BaseException] = []  # what a streamed body's source raised
        payload: Any
        if isinstance(data, StreamedBody):  # read (a file a block at a time) as it is sent
            sent["Content-Length"] = str(data.size)
            payload = _stream(data, reading)
        else:  # aiohttp warns about large raw bytes bodies; a stream sends the same bytes
            payload = io.BytesIO(data) if data is not None and len(data) > READ_CHUNK else data
        try:
            with self.errors():
                async with self._session.request(
                    method, url, data=payload, headers=sent, timeout=self._timeout,
                    allow_redirects=False, proxy=self._proxy_url,
                    proxy_headers=self._proxy_headers,
                ) as resp:  # fmt: skip
                    if resp.status != 200:
                        raise await self.failure(resp, named=named)
                    return Response(self._scrubbed(await self._read(resp)), resp.headers)
        except Exception:
            if reading:  # the body's source failed (a file changed): that, not the transport
                raise reading[0] from None
            raise

    @asynccontextmanager
    async def stream(
        self, url: str, *, during: str | None = None, named: bool = False
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET whose 200 body the caller reads itself (a download); failures as
        :meth:`request`'s, those while reading included. ``during`` names the call in a
        timeout's message."""
        with self.errors(during):
            async with self._session.get(
                url, headers=self._headers, timeout=self._timeout, allow_redirects=False,
                proxy=self._proxy_url, proxy_headers=self._proxy_headers,
            ) as resp:  # fmt: skip
                if resp.status != 200:
                    raise await self.failure(resp, named=named)
                yield resp

    @contextmanager
    def errors(self, during: str | None = None) -> Iterator[None]:
        """Timeouts and connection failures as retryable :class:`ApiError` (the mapping of
        statuses is :meth:`failure`'s, called in here by :meth:`request` and :meth:`stream`).
        Running out of file descriptors (EMFILE, ENFILE) is ``open_files``: this machine's
        limit, which says nothing about whether the server is there."""
        try:
            yield
        except TimeoutError:
            if during is not None:
                raise ApiError("timeout", f"{during} from {self.host} timed out") from None
            raise ApiError(
                "timeout", f"no answer from {self.host} within {self._timeout.total:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            text = self.scrub(f"{type(exc).__name__}: {exc}")
            if _out_of_descriptors(exc):  # our limit, not the server's absence
                raise ApiError(
                    "open_files",
                    f"{self.host}: out of file descriptors ({text}); raise the open-file limit "
                    "(ulimit -n) or lower limits.max_concurrency",
                ) from None
            if not isinstance(exc, aiohttp.ClientError):
                raise
            raise ApiError("connection", f"{self.host}: {text}") from None

    async def failure(self, resp: aiohttp.ClientResponse, *, named: bool = False) -> Exception:
        """The error a response that is not a 200 stands for (the table in the module)."""
        if 300 <= resp.status < 400:
            return self._redirect(resp)
        raw = self._scrubbed(await self._read(resp))
        if resp.status == 404 and named:
            return ApiError("not_found", f"{self.host}: {self._message(raw)}", 404)
        return self.status_error(resp.status, raw, resp.headers.get("Retry-After"))

    def status_error(
        self, status: int, raw: bytes | bytearray, retry_after: str | None = None
    ) -> Exception:
        """The error of an HTTP status that is neither a 200 nor a redirect, from its body."""
        error = _envelope(raw)
        model = self.model
        message = self.scrub(_one_line(error.get("message")) or _not_gemini(raw))
        where = f"{redact_url(model.base_url)} (model {model.name})"
        reasons = {d.get("reason") for d in _details(error)}
        if status in (403, 404) and _FILE_GONE.search(message):
            # a file a request names is gone (expired after 48 h, deleted): not the key's fault;
            # the sender uploads it again (batchgen.backends.media)
            return ApiError("file_gone", f"HTTP {status}: {message}", status)
        if status in (401, 403) or "API_KEY_INVALID" in reasons:
            return FatalApiError(
                f"{where}: the API refused the key in ${model.api_key_env} "
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

    def scrub(self, text: str) -> str:
        """``text`` with the key replaced by ``***``."""
        return text.replace(self._key, "***") if self._key else text

    def _scrubbed(self, raw: bytearray) -> bytearray:
        if self._key_bytes and self._key_bytes in raw:  # a proxy echoing what it got
            return raw.replace(self._key_bytes, b"***")
        return raw

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
                f"HTTP 200 body from {self.host} is over {mib:g} MiB (limits.max_response_mb) "
                "after decompression; raise limits.max_response_mb if answers are that long",
                excerpt_text(self._scrubbed(raw)),
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
            f"{self.host}; set model.base_url to the final address",
            resp.status,
        )

    def _message(self, raw: bytes | bytearray) -> str:
        """The message of a named resource's 404: the envelope's, else the body's start."""
        try:
            error = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            error = None
        text = error.get("error", {}).get("message") if isinstance(error, dict) else None
        return self.scrub(str(text or bytes(raw[:200]).decode(errors="replace")))


def excerpt_text(raw: bytes | bytearray) -> str:
    """The start of a body, as text, for a failure record."""
    return bytes(raw[: EXCERPT_CHARS * 4]).decode(errors="replace")[:EXCERPT_CHARS]


_TAG = re.compile(r"<[^>]*>")
MESSAGE_CHARS = 160


async def _stream(body: StreamedBody, failed: list[BaseException]) -> AsyncIterator[bytes]:
    """A streamed body's chunks for aiohttp; what its source raises is kept in ``failed``."""
    try:
        for chunk in body.chunks():
            yield chunk
    except Exception as exc:
        failed.append(exc)
        raise


_FILE_GONE = re.compile(r"\bFile (files/)?[a-z0-9][a-z0-9-]*\b")


def _one_line(text: object) -> str:
    """A server's message as one line of at most MESSAGE_CHARS (HTML tags dropped)."""
    if not text:
        return ""
    line = " ".join(_TAG.sub(" ", str(text)).split())
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…"


def _not_gemini(raw: bytes | bytearray) -> str:
    """What to say of an error body that is not Gemini's error envelope (a proxy's HTML page)."""
    text = _one_line(bytes(raw[:4096]).decode(errors="replace"))
    return f"{text or 'an empty body'} (not a Gemini error: is model.base_url the API?)"


def _envelope(raw: bytes | bytearray) -> Mapping[str, Any]:
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    if isinstance(payload, list) and payload:  # the non-SSE streaming shape wraps errors
        payload = payload[0]
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}


def _details(error: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _quota_id(error: Mapping[str, Any]) -> str | None:
    """The quotaId of the first QuotaFailure violation, if any (per minute, per day, tokens...)."""
    for detail in _details(error):
        if str(detail.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations") or []:
                if isinstance(violation, dict) and violation.get("quotaId"):
                    return str(violation["quotaId"])
    return None


def _retry_after(header: str | None) -> float | None:
    """A Retry-After header: seconds, or an HTTP date."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retry_delay(error: Mapping[str, Any]) -> float | None:
    """The RetryInfo delay (a protobuf Duration such as "26s" or "45.8s"), in seconds."""
    for detail in _details(error):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _out_of_descriptors(exc: BaseException) -> bool:
    """Whether ``exc`` (or the OSError aiohttp wraps in it) is EMFILE or ENFILE."""
    seen: BaseException | None = exc
    for _ in range(4):  # aiohttp's own error, its os_error, their causes: a short chain
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.EMFILE, errno.ENFILE):
            return True
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return False
