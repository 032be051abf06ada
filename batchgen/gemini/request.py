"""Build the generateContent request body: the shape in docs/gemini-api.md §1.

The parts every row shares (generationConfig with the responseSchema, or the responseJsonSchema
of a JSON Schema job) are serialized once; each row adds only its own text.

With media, the user turn's parts are, in order: the job's context parts (the same in every
request: the prefix an explicit cache can hold), the row's media parts, then the row's text
(Google's guidance puts media before the text that asks about it). :func:`inline_part` and
:func:`file_part` make the parts.

Few-shot examples (``[[prompt.examples]]``) are their own piece of the body: alternating user and
model turns at the start of ``contents``, before the row's turn (:meth:`RequestBuilder.turns`).
When they use no row values they are serialized once per job, like the config; with the system
instruction and the context parts they make the prefix a cache can hold. ``safetySettings`` is a
top-level field, sent before ``generationConfig``.

The prefix every row shares in front of its own turn (the shared system instruction, the
shared example turns, the job's context files) is one :class:`Prefix`, made by
:meth:`RequestBuilder.prefix`: the piece an explicit cache (``cachedContents``,
:mod:`batchgen.gemini.caches`) holds. With a cache a request names it in ``cachedContent`` and
carries neither the system instruction nor the example turns (the API refuses
``systemInstruction`` beside ``cachedContent``) nor, when the cache holds them, the context
parts (the row's body is then built without them): :meth:`RequestBuilder.cached`
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

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from batchgen.job.spec import Job

STREAM_BLOCK = 3 * 64 * 1024  # raw bytes a streamed part reads at a time (whole base64 quanta)


@dataclass(frozen=True)
class Encoded:
    """The base64 of ``size`` bytes that ``blocks()`` yields when the request is sent (a file
    read a block at a time: nothing of it is held before, or longer than a block)."""

    size: int
    blocks: Callable[[], Iterator[bytes]]  # raw blocks, each a multiple of 3 bytes but the last

    @property
    def encoded_size(self) -> int:
        return 4 * ((self.size + 2) // 3)


Piece = bytes | Encoded
Part = bytes | tuple[Piece, ...]  # a part's JSON, whole or in pieces


@dataclass(frozen=True)
class StreamedBody:
    """A request body with file parts read while it is sent; ``size`` is exact (the request's
    Content-Length)."""

    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.encoded_size for p in self.pieces)

    def chunks(self) -> Iterator[bytes]:
        for piece in self.pieces:
            if isinstance(piece, bytes):
                yield piece
            else:
                for block in piece.blocks():
                    yield base64.b64encode(block)


Body = bytes | StreamedBody
FLEX_FIELD = b',"serviceTier":"flex"}'  # what closes a Flex body instead of "}"


@dataclass(frozen=True)
class Prefix:
    """What every row's request shares before the row's own turn: the cacheable prefix.

    ``system``: the shared system instruction (None: none); ``turns``: the shared few-shot
    turns (:meth:`RequestBuilder.turns`, b"" when none); ``context_id``: the shared context
    files' identity (``[prompt] context``; "" when there are none). An uncached request sends
    the context parts at the front of the row's user turn; a cache holds them as a user turn of
    their own after ``turns``, and a row sent with that cache is built without them (the
    caller's choice: :attr:`holds_context`). ``context`` is those parts' JSON, comma-joined, as
    the cache is made with them (:meth:`with_context`: a large file goes by ``fileData``, so
    the bytes differ from run to run while ``context_id`` does not).
    """

    model: str
    system: str | None
    turns: bytes
    context_id: str = ""  # the shared context files' content identity (:meth:`digest`)
    context: bytes = b""  # the context parts' JSON as the cache holds them (:meth:`with_context`)

    @property
    def holds_context(self) -> bool:
        """Whether the prefix holds context parts (a row sent with its cache leaves them out)."""
        return bool(self.context_id)

    def with_context(self, parts: Sequence[bytes]) -> Prefix:
        """The prefix with its context parts' JSON, to make or count the cache with."""
        return dataclasses.replace(self, context=b",".join(parts))

    def contents(self) -> bytes:
        """The cached ``contents`` array's items (JSON, no brackets): the example turns, then
        the context parts as one user turn."""
        if not self.holds_context:
            return self.turns.removesuffix(b",")
        if not self.context:
            raise ValueError("the prefix's context parts are not built (Prefix.with_context)")
        return self.turns + b'{"role":"user","parts":[' + self.context + b"]}"

    def system_field(self) -> bytes:
        """The ``systemInstruction`` field as a request carries it, with its leading comma."""
        if self.system is None:
            return b""
        return b',"systemInstruction":{"parts":[{"text":' + _dumps(self.system) + b"}]}"

    def digest(self) -> str:
        """A fingerprint of the prefix and model: a cache made for another prefix is not ours.
        ``context_id`` takes in the shared context files, so a changed file means a new cache."""
        text = _dumps([self.model, self.system, self.context_id]) + self.turns
        return hashlib.sha256(text).hexdigest()[:16]

    def cache_body(self, ttl_seconds: int) -> bytes:
        """The cachedContents create body holding this prefix (docs/gemini-api.md §13)."""
        body = b'{"model":' + _dumps(f"models/{self.model}") + b',"ttl":'
        body += _dumps(f"{ttl_seconds}s") + b',"displayName":' + _dumps(f"batchgen-{self.digest()}")
        if contents := self.contents():
            body += b',"contents":[' + contents + b"]"
        return body + self.system_field() + b"}"

    def count_body(self) -> bytes:
        """A countTokens request for the prefix (with a one-character user turn, as contents
        cannot be empty): its count is the prefix's tokens, give or take one."""
        contents = self.contents()
        turns = (contents + b"," if contents else b"") + b'{"role":"user","parts":[{"text":"."}]}'
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

    def prefix(
        self, shared_system: bool, system: str | None, context_id: str = ""
    ) -> Prefix | None:
        """The prefix every row shares (:class:`Prefix`), or None when rows share none: no
        shared system instruction, example turns or context files (``context_id``), or a system
        instruction that differs by row (``shared_system`` false: a request naming a cache
        cannot carry its own)."""
        if not shared_system or (system is None and not self.examples and not context_id):
            return None
        return Prefix(self._model, system, self.examples, context_id)

    def cached(self, body: Body, prefix: Prefix, name: str) -> Body | None:
        """``body`` (from :meth:`request`) sent with the cache ``name`` that holds ``prefix``: the
        prefix left out, ``cachedContent`` named (a prefix that :attr:`~Prefix.holds_context`
        wants ``body`` built without the context parts); None when the body does not start with that
        prefix (its row's examples or system differ), so it goes uncached. A streamed body's
        prefix and tail are its first and last pieces, which are always bytes."""
        head = b'{"contents":[' + prefix.turns
        end = prefix.system_field() + self._tail
        opening = b'{"contents":['
        closing = b',"cachedContent":' + _dumps(name) + self._tail
        if isinstance(body, StreamedBody):
            first, last = body.pieces[0], body.pieces[-1]
            if len(body.pieces) < 2 or not (isinstance(first, bytes) and isinstance(last, bytes)):
                return None
            if not (first.startswith(head) and last.endswith(end)):
                return None
            rest = (*body.pieces[1:-1], last[: -len(end)] + closing)
            return StreamedBody((opening + first[len(head) :], *rest))
        if not (body.startswith(head) and body.endswith(end)) or len(body) < len(head) + len(end):
            return None
        return opening + body[len(head) : len(body) - len(end)] + closing  # the row's turn

    def uncached(self, body: bytes, prefix: Prefix) -> bytes:
        """The inverse of :meth:`cached` for a whole body: ``body`` as it was before it named a
        cache holding ``prefix`` (``body`` itself when it names none, or when ``prefix`` holds
        context whose parts it lacks: :meth:`Prefix.with_context`). A Batch Mode line asked
        again online (the fallback) is sent whole, whether or not its cache still lives."""
        opening, key = b'{"contents":[', b',"cachedContent":'
        at = body.rfind(key)  # a key: inside a JSON string its quotes would be escaped
        if at < 0 or not body.startswith(opening):
            return body
        try:
            name, _ = json.JSONDecoder().raw_decode(body[at + len(key) :].decode())
        except (UnicodeDecodeError, ValueError):
            return body
        tail = body[at + len(key) + len(_dumps(name)) :]
        if not isinstance(name, str) or tail != self._tail:
            return body
        middle = body[len(opening) : at]
        if prefix.holds_context:  # the context parts open the row's own (the last) user turn
            turn = b'{"role":"user","parts":['
            start = middle.rfind(turn) + len(turn)
            if start < len(turn) or not prefix.context:
                return body
            middle = middle[:start] + prefix.context + b"," + middle[start:]
        return opening + prefix.turns + middle + prefix.system_field() + tail

    @staticmethod
    def turns(examples: list[tuple[str, str]]) -> bytes:
        """Few-shot examples, (user text, model text) each, as the turns that open ``contents``."""
        return b"".join(
            b'{"role":"user","parts":[{"text":' + _dumps(user) + b'}]},{"role":"model","parts":'
            b'[{"text":' + _dumps(model) + b"}]},"
            for user, model in examples
        )

    def body(
        self,
        user: str,
        system: str | None = None,
        context: Sequence[Part] = (),
        media: Sequence[Part] = (),
        examples: bytes | None = None,
    ) -> bytes:
        """The JSON body for one row, whole (no streamed part): see :meth:`request`."""
        body = self.request(user, system, context, media, examples)
        if not isinstance(body, bytes):
            raise TypeError("a streamed part: use RequestBuilder.request")
        return body

    def request(
        self,
        user: str,
        system: str | None = None,
        context: Sequence[Part] = (),
        media: Sequence[Part] = (),
        examples: bytes | None = None,
    ) -> Body:
        """The JSON body for one row: the example turns, then a user turn of ``context`` parts,
        ``media`` parts and the text. ``examples`` (:meth:`turns`) replace the job's shared ones
        when they differ by row. The body is joined once (a media part's base64 is copied only
        into the body); with a streamed part (:class:`Encoded`) it is a :class:`StreamedBody`,
        read as it is sent."""
        turns = self.examples if examples is None else examples
        pieces: list[Piece] = [b'{"contents":[' + turns + b'{"role":"user","parts":[']
        for part in (*context, *media):
            pieces.extend((part,) if isinstance(part, bytes) else part)
            pieces.append(b",")
        pieces += [b'{"text":', _dumps(user), b"}]}]"]
        if system is not None:
            pieces += [b',"systemInstruction":{"parts":[{"text":', _dumps(system), b"}]}"]
        pieces.append(self._tail)
        if any(isinstance(p, Encoded) for p in pieces):
            return StreamedBody(_merged(pieces))
        return b"".join(p for p in pieces if isinstance(p, bytes))


def _merged(pieces: list[Piece]) -> tuple[Piece, ...]:
    """The pieces with neighbouring bytes joined."""
    out: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, bytes) and out and isinstance(out[-1], bytes):
            out[-1] = out[-1] + piece
        else:
            out.append(piece)
    return tuple(out)


def inline_part(mime: str, data: bytes) -> tuple[bytes, ...]:
    """An ``inlineData`` part: the bytes, base64 (in pieces, joined once into the body)."""
    encoded = base64.b64encode(data)
    return b'{"inlineData":{"mimeType":' + _dumps(mime) + b',"data":"', encoded, b'"}}'


def inline_size(size: int) -> int:
    """The bytes an ``inlineData`` part of ``size`` raw bytes takes in a request."""
    return 4 * ((size + 2) // 3) + 64


def streamed_part(mime: str, data: Encoded) -> tuple[Piece, ...]:
    """An ``inlineData`` part whose base64 is read from a file as the request is sent."""
    return b'{"inlineData":{"mimeType":' + _dumps(mime) + b',"data":"', data, b'"}}'


def file_part(mime: str, uri: str) -> bytes:
    """A ``fileData`` part naming an uploaded file or a URI the API fetches."""
    kind = b'{"fileData":{"mimeType":' + _dumps(mime) + b"," if mime else b'{"fileData":{'
    return kind + b'"fileUri":' + _dumps(uri) + b"}}"


def request_hash(body: bytes) -> str:
    """A short, stable fingerprint of a request body (what was asked, not who asked, nor the
    tier it was asked at)."""
    return hashlib.sha256(standard_body(body)).hexdigest()[:16]


@overload
def standard_body(body: bytes) -> bytes: ...
@overload
def standard_body(body: StreamedBody) -> StreamedBody: ...
@overload
def standard_body(body: Body) -> Body: ...
def standard_body(body: Body) -> Body:
    """The same request at the standard tier (a standard body as it is)."""
    if isinstance(body, StreamedBody):
        last = body.pieces[-1]
        assert isinstance(last, bytes)  # the tail is always bytes
        return StreamedBody((*body.pieces[:-1], standard_body(last)))
    if body.endswith(FLEX_FIELD):
        return body[: -len(FLEX_FIELD)] + b"}"
    return body


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
