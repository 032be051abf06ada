"""Build the generateContent request body: the shape in docs/gemini-api.md §1.

The parts every row shares (generationConfig with the responseSchema, or the responseJsonSchema
of a JSON Schema job) are serialized once; each row adds only its own text.

Few-shot examples (``[[prompt.examples]]``) are their own part of the body: alternating user and
model turns at the start of ``contents``, before the row's turn (:meth:`RequestBuilder.turns`).
When they use no row values they are serialized once per job, like the config; a later shared
prefix (a cache) takes them as one piece. ``safetySettings`` is a top-level field, sent before
``generationConfig``.

The prefix every row shares in front of its own turn (the shared system instruction and the
shared example turns) is one :class:`Prefix`, made by :meth:`RequestBuilder.prefix`: the piece an
explicit cache (``cachedContents``, :mod:`batchgen.gemini.caches`) holds. With a cache a request
names it in ``cachedContent`` and carries neither the system instruction nor the example turns
(the API refuses ``systemInstruction`` beside ``cachedContent``): :meth:`RequestBuilder.cached`
turns a row's body into that variant at send time. The row's :class:`~batchgen.records.Work`
keeps the uncached body, so :func:`request_hash` (dedupe, resume) is the hash of the logical
request: a row answered with the cache is the same request as without it.

A Flex job adds ``"serviceTier": "flex"``, a top-level field of the request (docs/gemini-api.md
§11), as the body's last field; a standard job sends no tier, as the API's default. The tier says
how a request is served, not what it asks, so :func:`request_hash` leaves it out: a row answered
at one tier is done at the other, and :func:`standard_body` turns a Flex request into the same
request at the standard tier.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from batchgen.job.spec import Job

FLEX_FIELD = b',"serviceTier":"flex"}'  # what closes a Flex body instead of "}"


@dataclass(frozen=True)
class Prefix:
    """What every row's request shares before the row's own turn: the cacheable prefix.

    ``system``: the shared system instruction (None: none); ``turns``: the shared few-shot
    turns (:meth:`RequestBuilder.turns`, b"" when none). Seam for shared context parts (the
    media issue's ``[prompt] context``): they would be a third field, ``context`` (parts bytes),
    sent uncached at the front of the row's user turn and cached as one user turn after
    ``turns`` in :meth:`cache_body`, stripped from the row's turn in
    :meth:`RequestBuilder.cached` like ``turns``; :meth:`digest` and :meth:`contents` take it in.
    """

    model: str
    system: str | None
    turns: bytes

    def contents(self) -> bytes:
        """The cached ``contents`` array's items (JSON, no brackets)."""
        return self.turns.removesuffix(b",")

    def system_field(self) -> bytes:
        """The ``systemInstruction`` field as a request carries it, with its leading comma."""
        if self.system is None:
            return b""
        return b',"systemInstruction":{"parts":[{"text":' + _dumps(self.system) + b"}]}"

    def digest(self) -> str:
        """A fingerprint of the prefix and model: a cache made for another prefix is not ours."""
        text = _dumps([self.model, self.system]) + self.turns
        return hashlib.sha256(text).hexdigest()[:16]

    def cache_body(self, ttl_seconds: int) -> bytes:
        """The cachedContents create body holding this prefix (docs/gemini-api.md §13)."""
        body = b'{"model":' + _dumps(f"models/{self.model}") + b',"ttl":'
        body += _dumps(f"{ttl_seconds}s") + b',"displayName":' + _dumps(f"batchgen-{self.digest()}")
        if self.turns:
            body += b',"contents":[' + self.contents() + b"]"
        return body + self.system_field() + b"}"

    def count_body(self) -> bytes:
        """A countTokens request for the prefix (with a one-character user turn, as contents
        cannot be empty): its count is the prefix's tokens, give or take one."""
        turns = self.turns + b'{"role":"user","parts":[{"text":"."}]}'
        inner = b'{"model":' + _dumps(f"models/{self.model}") + b',"contents":[' + turns + b"]"
        return b'{"generateContentRequest":' + inner + self.system_field() + b"}}"


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
        self._model = job.model.name

    def prefix(self, shared_system: bool, system: str | None) -> Prefix | None:
        """The prefix every row shares (:class:`Prefix`), or None when rows share none: no
        shared system instruction and no shared example turns, or a system instruction that
        differs by row (``shared_system`` false)."""
        if not shared_system or (system is None and not self.examples):
            return None
        return Prefix(self._model, system, self.examples)

    def cached(self, body: bytes, prefix: Prefix, name: str) -> bytes | None:
        """``body`` (from :meth:`body`) sent with the cache ``name`` that holds ``prefix``: the
        prefix left out, ``cachedContent`` named; None when the body does not start with that
        prefix (its row's examples or system differ), so it goes uncached."""
        head = b'{"contents":[' + prefix.turns
        end = prefix.system_field() + self._tail
        if not (body.startswith(head) and body.endswith(end)) or len(body) < len(head) + len(end):
            return None
        row_turn = body[len(head) : len(body) - len(end)]  # the row's turn and "]"
        return b'{"contents":[' + row_turn + b',"cachedContent":' + _dumps(name) + self._tail

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
