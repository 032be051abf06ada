"""Build the generateContent request body: the shape in docs/gemini-api.md §1.

The parts every row shares (generationConfig with the responseSchema, or the responseJsonSchema
of a JSON Schema job) are serialized once; each row adds only its own text.

Few-shot examples (``[[prompt.examples]]``) are their own part of the body: alternating user and
model turns at the start of ``contents``, before the row's turn (:meth:`RequestBuilder.turns`).
When they use no row values they are serialized once per job, like the config; a later shared
prefix (a cache) takes them as one piece. ``safetySettings`` is a top-level field, sent before
``generationConfig``.

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
    """Turns rendered prompt text into request bodies for one job; ``examples`` are the job's
    few-shot turns when every row shares them (:meth:`turns`)."""

    def __init__(self, job: Job, examples: bytes = b"") -> None:
        config = {
            **job.generation,
            "responseMimeType": "application/json",
            job.schema.wire_key: job.response_schema,
        }
        self._tail = b',"generationConfig":' + _dumps(config) + b"}"
        if job.safety_settings:
            settings = [{"category": s.category, "threshold": s.threshold}
                        for s in job.safety_settings]  # fmt: skip
            self._tail = b',"safetySettings":' + _dumps(settings) + self._tail
        if job.model.tier == "flex":
            self._tail = self._tail[:-1] + FLEX_FIELD
        self.examples = examples

    @staticmethod
    def turns(examples: list[tuple[str, str]]) -> bytes:
        """Few-shot examples, (user text, model text) each, as the turns that open ``contents``."""
        return b"".join(
            b'{"role":"user","parts":[{"text":' + _dumps(user) + b'}]},{"role":"model","parts":'
            b'[{"text":' + _dumps(model) + b"}]},"
            for user, model in examples
        )

    def body(self, user: str, system: str | None = None, examples: bytes | None = None) -> bytes:
        """The JSON body for one row; ``examples`` (:meth:`turns`) replace the job's shared ones
        when they differ by row."""
        turns = self.examples if examples is None else examples
        head = b'{"contents":[' + turns + b'{"role":"user","parts":[{"text":' + _dumps(user)
        head += b"}]}]"
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
