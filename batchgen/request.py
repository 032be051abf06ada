"""Build the generateContent request body: the shape in docs/gemini-api.md §1.

The parts every row shares (generationConfig with the responseSchema, or the responseJsonSchema
of a JSON Schema job) are serialized once; each row adds only its own text.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from batchgen.job import Job


class RequestBuilder:
    """Turns rendered prompt text into request bodies for one job."""

    def __init__(self, job: Job) -> None:
        config = {
            **job.generation,
            "responseMimeType": "application/json",
            job.schema.wire_key: job.response_schema,
        }
        self._tail = b',"generationConfig":' + _dumps(config) + b"}"

    def body(self, user: str, system: str | None = None) -> bytes:
        """The JSON body for one row."""
        head = b'{"contents":[{"role":"user","parts":[{"text":' + _dumps(user) + b"}]}]"
        if system is not None:
            head += b',"systemInstruction":{"parts":[{"text":' + _dumps(system) + b"}]}"
        return head + self._tail


def request_hash(body: bytes) -> str:
    """A short, stable fingerprint of a request body (what was asked, not who asked)."""
    return hashlib.sha256(body).hexdigest()[:16]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
