"""Build the generateContent request body: the shape in docs/gemini-api.md §1.

The parts every row shares (generationConfig with the responseSchema, or the responseJsonSchema
of a JSON Schema job) are serialized once; each row adds only its own text.

With media, the user turn's parts are, in order: the job's context parts (the same in every
request: the prefix an explicit cache can hold), the row's media parts, then the row's text
(Google's guidance puts media before the text that asks about it). :func:`inline_part` and
:func:`file_part` make the parts.

A Flex job adds ``"serviceTier": "flex"``, a top-level field of the request (docs/gemini-api.md
§11), as the body's last field; a standard job sends no tier, as the API's default. The tier says
how a request is served, not what it asks, so :func:`request_hash` leaves it out: a row answered
at one tier is done at the other, and :func:`standard_body` turns a Flex request into the same
request at the standard tier.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from batchgen.job.spec import Job

Part = bytes | tuple[bytes, ...]  # a part's JSON, whole or in pieces
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

    def body(
        self,
        user: str,
        system: str | None = None,
        context: Sequence[Part] = (),
        media: Sequence[Part] = (),
    ) -> bytes:
        """The JSON body for one row: ``context`` parts, then ``media`` parts, then the text.
        The body is joined once (a media part's base64 is copied only into the body)."""
        pieces = [b'{"contents":[{"role":"user","parts":[']
        for part in (*context, *media):
            pieces.extend((part,) if isinstance(part, bytes) else part)
            pieces.append(b",")
        pieces += [b'{"text":', _dumps(user), b"}]}]"]
        if system is not None:
            pieces += [b',"systemInstruction":{"parts":[{"text":', _dumps(system), b"}]}"]
        pieces.append(self._tail)
        return b"".join(pieces)


def inline_part(mime: str, data: bytes) -> tuple[bytes, ...]:
    """An ``inlineData`` part: the bytes, base64 (in pieces, joined once into the body)."""
    encoded = base64.b64encode(data)
    return b'{"inlineData":{"mimeType":' + _dumps(mime) + b',"data":"', encoded, b'"}}'


def inline_size(size: int) -> int:
    """The bytes an ``inlineData`` part of ``size`` raw bytes takes in a request."""
    return 4 * ((size + 2) // 3) + 64


def file_part(mime: str, uri: str) -> bytes:
    """A ``fileData`` part naming an uploaded file or a URI the API fetches."""
    kind = b'{"fileData":{"mimeType":' + _dumps(mime) + b"," if mime else b'{"fileData":{'
    return kind + b'"fileUri":' + _dumps(uri) + b"}}"


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
