"""The generateContent and countTokens client.

Every call goes through :class:`~batchgen.gemini.transport.Transport`, whose module holds the
classification of what can go wrong (redirects, body caps, key scrubbing, statuses). What is
particular to generateContent: a 200 body over max_response_bytes or not JSON is this row's
:class:`~batchgen.gemini.answers.AnswerError` (``response_too_large``, ``malformed_response``).

Which service tier served a call is the ``x-gemini-service-tier`` response header, else the
answer's ``usageMetadata.serviceTier`` (docs/gemini-api.md §11); a Flex job's requests also carry
``X-Server-Timeout``, the hint the Flex guide gives for answers that take minutes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from batchgen.gemini.answers import MALFORMED, AnswerError, modality_details
from batchgen.gemini.request import StreamedBody
from batchgen.gemini.transport import (
    ApiError,
    Transport,
    excerpt_text,
)
from batchgen.records import TokenCount

__all__ = ["ApiError", "GeminiClient", "Reply", "served_tier"]  # ApiError lives in transport

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

    def __init__(self, http: Transport) -> None:
        self._http = http
        self._model = http.model

    @property
    def transport(self) -> Transport:
        """The transport this client calls on (a Files client shares it)."""
        return self._http

    async def generate(self, body: bytes) -> tuple[Any, float]:
        """POST one request; return (the 200 body's JSON value, latency in ms) or raise as
        :meth:`reply` does."""
        reply = await self.reply(body)
        return reply.payload, reply.latency_ms

    async def reply(self, body: bytes | StreamedBody) -> Reply:
        """POST one request; return its :class:`Reply` or raise.

        The value may have any shape: :func:`batchgen.gemini.answers.parse_response` reads it.

        Raises:
            ApiError: the call failed (HTTP status, timeout, connection, redirect).
            AnswerError: a 200 whose body is too large or not JSON (``response_too_large``,
                ``malformed_response``).
            FatalApiError, QuotaExhaustedError: no other row can succeed now.
        """
        started = time.perf_counter()
        answer = await self._http.request("POST", self._model.url, body)
        latency_ms = (time.perf_counter() - started) * 1000
        payload = _decode(answer.body)
        return Reply(payload, latency_ms, served_tier(answer.headers.get(TIER_HEADER), payload))

    async def count_tokens(self, contents_body: bytes) -> int:
        """POST a countTokens request; return its ``totalTokens``, or raise as :meth:`generate`.

        ``contents_body`` is a CountTokensRequest: ``{"contents": [...]}`` counts the contents
        alone; ``{"generateContentRequest": {"model": "models/…", ...}}`` counts the request as
        generateContent would bill its prompt, systemInstruction included (docs/gemini-api.md §8).
        """
        return (await self.count_prompt(contents_body)).total

    async def count_prompt(self, contents_body: bytes) -> TokenCount:
        """As :meth:`count_tokens`, with the split by modality when the answer gives
        ``promptTokensDetails`` (media parts: IMAGE, AUDIO, VIDEO, DOCUMENT)."""
        m = self._model
        url = f"{m.base_url}/{m.api_version}/models/{m.name}:countTokens"
        answer = await self._http.request("POST", url, contents_body)
        try:
            payload = json.loads(answer.body)
        except (ValueError, RecursionError):
            payload = None
        # proto3 JSON leaves a zero count out, and may quote an integer
        count = payload.get("totalTokens", 0) if isinstance(payload, dict) else None
        if isinstance(count, str) and count.isdigit():
            count = int(count)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            host = self._http.host
            raise ApiError("bad_response", f"countTokens at {host}: HTTP 200 without a count")
        details = payload.get("promptTokensDetails") if isinstance(payload, dict) else None
        return TokenCount(count, modality_details(details))


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
    raise AnswerError(MALFORMED, f"HTTP 200 body {problem}", excerpt_text(raw))
