"""The HTTP transport for every call to the Gemini API: errors and their classification."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from typing import Any

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


_TAG = re.compile(r"<[^>]*>")
MESSAGE_CHARS = 160


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
