"""Build the generateContent request body: the shape in docs/gemini-api.md §1.

The parts every row shares (generationConfig with the responseSchema, or the responseJsonSchema
of a JSON Schema job) are serialized once; each row adds only its own text.

A Flex job adds ``"serviceTier": "flex"``, a top-level field of the request (docs/gemini-api.md
§11), as the body's last field; a standard job sends no tier, as the API's default. The tier says
how a request is served, not what it asks, so :func:`request_hash` leaves it out: a row answered
at one tier is done at the other, and :func:`standard_body` turns a Flex request into the same
request at the standard tier.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from batchgen.job.spec import Job

FLEX_FIELD = b',"serviceTier":"flex"}'  # what closes a Flex body instead of "}"


class RequestBuilder:
    """Turns rendered prompt text into request bodies for one job."""

    def __init__(self, job: Job) -> None:
        config = {
            **job.generation,
            "responseMimeType": "application/json",
            job.schema.wire_key: job.response_schema,
        }
        self._tail = b',"generationConfig":' + _dumps(config) + b"}"
        if job.model.tier == "flex":
            self._tail = self._tail[:-1] + FLEX_FIELD

    def body(self, user: str, system: str | None = None) -> bytes:
        """The JSON body for one row."""
        head = b'{"contents":[{"role":"user","parts":[{"text":' + _dumps(user) + b"}]}]"
        if system is not None:
            head += b',"systemInstruction":{"parts":[{"text":' + _dumps(system) + b"}]}"
        return head + self._tail


def request_hash(body: bytes) -> str:
    """A short, stable fingerprint of a request body (what was asked, not who asked, nor the
    tier it was asked at)."""
    return hashlib.sha256(standard_body(body)).hexdigest()[:16]


def standard_body(body: bytes) -> bytes:
    """The same request at the standard tier (a standard body as it is)."""
    if body.endswith(FLEX_FIELD):
        return body[: -len(FLEX_FIELD)] + b"}"
    return body


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
