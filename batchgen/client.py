"""The generateContent HTTP client and the classification of what can go wrong.

::

    200                        → the parsed response
    400 API_KEY_INVALID, 401, 403, 404 → FatalApiError: no other row can succeed
    429                        → ApiError(retryable), with the RetryInfo (or Retry-After) delay
    429 on a per-day quota     → QuotaExhaustedError: the run stops until the quota resets
    500, 502, 503, 504, timeout, dropped connection → ApiError(retryable)
    other 4xx                  → ApiError(not retryable): this row's request is wrong

The API key travels only in the ``x-goog-api-key`` header and is scrubbed from every message.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from batchgen.errors import FatalApiError, QuotaExhaustedError
from batchgen.job import ModelSpec

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
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
    ) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.status = status
        self.retry_delay = retry_delay
        self.quota = quota  # the QuotaFailure quotaId of a 429, when the server names it

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUS


class GeminiClient:
    """Sends request bodies to one model's generateContent endpoint."""

    def __init__(
        self, session: aiohttp.ClientSession, model: ModelSpec, api_key: str, timeout: float
    ) -> None:
        self._session = session
        self._model = model
        self._key = api_key
        self._headers = {"x-goog-api-key": api_key, "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def generate(self, body: bytes) -> tuple[dict[str, Any], float]:
        """POST one request; return (response JSON, latency in ms) or raise."""
        started = time.perf_counter()
        status, raw, retry_after = await self._post(self._model.url, body)
        latency_ms = (time.perf_counter() - started) * 1000
        if status != 200:
            raise self._error(status, raw, retry_after)
        try:
            return json.loads(raw), latency_ms
        except ValueError:
            raise ApiError("bad_response", "HTTP 200 with a body that is not JSON") from None

    async def count_tokens(self, contents_body: bytes) -> int:
        """POST a countTokens request; return its ``totalTokens``, or raise as :meth:`generate`.

        ``contents_body`` is a CountTokensRequest: ``{"contents": [...]}`` counts the contents
        alone; ``{"generateContentRequest": {"model": "models/…", ...}}`` counts the request as
        generateContent would bill its prompt, systemInstruction included (gemini-api.md §8).
        """
        m = self._model
        url = f"{m.base_url}/{m.api_version}/models/{m.name}:countTokens"
        status, raw, retry_after = await self._post(url, contents_body)
        if status != 200:
            raise self._error(status, raw, retry_after)
        try:
            payload = json.loads(raw)
            return int(payload.get("totalTokens", 0))  # proto3 JSON leaves a zero count out
        except (ValueError, TypeError, AttributeError):
            raise ApiError("bad_response", "countTokens: HTTP 200 without a count") from None

    async def _post(self, url: str, body: bytes) -> tuple[int, bytes, str | None]:
        """(status, body, Retry-After) of one POST; transport failures as retryable ApiError."""
        try:
            async with self._session.post(
                url, data=body, headers=self._headers, timeout=self._timeout
            ) as resp:
                return resp.status, await resp.read(), resp.headers.get("Retry-After")
        except TimeoutError:
            raise ApiError("timeout", f"no answer within {self._timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            raise ApiError("connection", self._scrub(f"{type(exc).__name__}: {exc}")) from None

    def _error(self, status: int, raw: bytes, retry_after: str | None = None) -> Exception:
        error = _envelope(raw)
        message = self._scrub(str(error.get("message") or raw[:200].decode(errors="replace")))
        where = f"{self._model.base_url} (model {self._model.name})"
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
        if status == 429:
            return ApiError("rate_limited", message, status, delay, quota)
        category = "server" if status >= 500 else f"http_{status}"
        return ApiError(category, f"HTTP {status}: {message}", status, delay)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def _envelope(raw: bytes) -> Mapping[str, Any]:
    try:
        payload = json.loads(raw)
    except ValueError:
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
