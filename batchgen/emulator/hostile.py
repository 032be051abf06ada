"""The emulator's hostile modes: what a proxy, a gateway or a broken server in front of the API
may answer instead of Gemini.

Each mode is a fault name like the emulator's own (:data:`HOSTILE_FAULTS`), usable in
``EmulatorConfig.script`` and ``fault_rates``. Bodies too big to hold (a gzip bomb, a 200 MB
answer) are streamed from a small buffer, never built in memory, so the emulator itself stays
small while the client under test is put to the proof.

Like the rest of the emulator, this module knows nothing of batchgen's client: it is the oracle.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from batchgen.emulator.replies import pretty_json, quota_error
from batchgen.emulator.wire import error_body

__all__ = ["HOSTILE_FAULTS", "HostileConfig", "hostile_reply"]

HOSTILE_FAULTS: tuple[str, ...] = (
    "body_null",  # 200, the JSON value null
    "body_list",  # 200, the response wrapped in a list (the non-SSE streaming shape)
    "candidates_object",  # 200, candidates as an object instead of a list
    "parts_not_objects",  # 200, parts as bare strings
    "parts_without_text",  # 200, the candidate's only part is inline data: no text at all
    "usage_not_numbers",  # 200, usageMetadata counts as words
    "empty_object",  # 200, {}
    "truncated_body",  # 200, the JSON text cut in half (Content-Length says so too)
    "not_utf8",  # 200, a Latin-1 encoded body
    "error_in_200",  # 200 carrying an error envelope
    "html_200",  # 200, an HTML page, as a captive portal answers
    "redirect_302",  # 302 to HostileConfig.redirect_to, same path
    "redirect_307",  # 307 likewise (a client that follows it resends the POST and its headers)
    "gzip_bomb",  # 200, Content-Encoding gzip: about 1 MB that inflates to bomb_bytes
    "huge_body",  # 200, huge_bytes of answer text, chunked, no Content-Length
    "slow_body",  # 200, headers at once, then one byte every trickle_seconds
    "reset_body",  # 200, half the body, then a TCP reset
    "delay_429",  # 429 with RetryInfo server_delay_seconds
    "delay_503",  # 503 with Retry-After: server_delay_seconds
)
_CHUNK = 1024 * 1024
_OPENING = b'{"candidates": [{"content": {"parts": [{"text": "'
_PORTAL = (
    "<!DOCTYPE html><html><head><title>Sign in to the network</title></head>"
    "<body><h1>Welcome</h1><p>Accept the terms to continue.</p></body></html>"
)


@dataclass(frozen=True)
class HostileConfig:
    """How big, slow or far the hostile modes go.

    Attributes:
        redirect_to: the base URL redirects point at (a second emulator on 127.0.0.2, say).
        bomb_bytes: what the gzip bomb inflates to.
        huge_bytes: the length of the huge body.
        trickle_seconds: the pause between two bytes of the slow body.
        server_delay_seconds: the delay the delay_429 and delay_503 modes ask for.
    """

    redirect_to: str = "http://127.0.0.2"
    bomb_bytes: int = 1 << 30
    huge_bytes: int = 200 * 1024 * 1024
    trickle_seconds: float = 0.25
    server_delay_seconds: float = 3600.0


async def hostile_reply(
    request: web.Request,
    fault: str,
    config: HostileConfig,
    model: str,
    answer: Mapping[str, Any],
) -> web.StreamResponse:
    """The reply of one hostile mode; ``answer`` is the normal answer it mangles."""
    shaped = _SHAPES.get(fault)
    if shaped is not None:
        return _json(shaped(answer))
    if fault in ("redirect_302", "redirect_307"):
        location = config.redirect_to.rstrip("/") + request.path_qs
        return web.Response(status=int(fault[-3:]), headers={"Location": location})
    if fault == "delay_429":
        raise quota_error(model, "rpm", 1000, config.server_delay_seconds)
    if fault == "delay_503":
        body = error_body(503, "UNAVAILABLE", "The service is temporarily unavailable.")
        response = _json(body, 503)
        response.headers["Retry-After"] = f"{config.server_delay_seconds:g}"
        return response
    if fault in _STREAMS:
        return await _STREAMS[fault](request, config, pretty_json(answer).encode())
    return _raw(_BODIES[fault](answer))


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=pretty_json(body), status=status, content_type="application/json")


def _raw(body: bytes, content_type: str = "application/json") -> web.Response:
    return web.Response(body=body, headers={"Content-Type": content_type})


def _half(body: bytes) -> bytes:
    return body[: len(body) // 2]


def _candidate(answer: Mapping[str, Any]) -> dict[str, Any]:
    return dict(answer.get("candidates", [{}])[0])


def _parts_not_objects(answer: Mapping[str, Any]) -> dict[str, Any]:
    candidate = _candidate(answer)
    texts = [p.get("text", "") for p in candidate.get("content", {}).get("parts", [])]
    candidate["content"] = {"parts": texts, "role": "model"}
    return {**answer, "candidates": [candidate]}


def _parts_without_text(answer: Mapping[str, Any]) -> dict[str, Any]:
    candidate = _candidate(answer)
    part = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    candidate["content"] = {"parts": [part], "role": "model"}
    return {**answer, "candidates": [candidate]}


def _usage_not_numbers(answer: Mapping[str, Any]) -> dict[str, Any]:
    usage = {key: "many" for key in answer.get("usageMetadata", {}) if key.endswith("Count")}
    return {**answer, "usageMetadata": usage or {"promptTokenCount": "many"}}


_SHAPES: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "body_null": lambda answer: None,
    "body_list": lambda answer: [answer],
    "candidates_object": lambda answer: {**answer, "candidates": {"0": _candidate(answer)}},
    "parts_not_objects": _parts_not_objects,
    "parts_without_text": _parts_without_text,
    "usage_not_numbers": _usage_not_numbers,
    "empty_object": lambda answer: {},
    "error_in_200": lambda answer: error_body(
        503, "UNAVAILABLE", "The model is overloaded. Please try again later."
    ),
}
_BODIES: dict[str, Callable[[Mapping[str, Any]], bytes]] = {
    "truncated_body": lambda answer: _half(pretty_json(answer).encode()),
    # an "é" in Latin-1 is the byte 0xE9, which cannot start a UTF-8 sequence followed by '"'
    "not_utf8": lambda answer: (
        pretty_json(answer).replace('"', '"\u00e9', 1).encode("latin-1", errors="replace")
    ),
    "html_200": lambda answer: _PORTAL.encode(),
}


async def _open(
    request: web.Request, headers: dict[str, str] | None = None, length: int | None = None
) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = "application/json"
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    return response


async def _gzip_bomb(
    request: web.Request, config: HostileConfig, answer: bytes
) -> web.StreamResponse:
    """An answer that opens like one and goes on as blanks, gzip-compressed on the fly."""
    response = await _open(request, {"Content-Encoding": "gzip"})
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: the gzip wrapper
    blanks = b" " * _CHUNK
    with contextlib.suppress(ConnectionError):  # the client hung up
        await response.write(packer.compress(_OPENING))
        for _ in range(config.bomb_bytes // _CHUNK):
            packed = packer.compress(blanks)
            if packed:
                await response.write(packed)
        await response.write(packer.flush())
        await response.write_eof()
    return response


async def _huge_body(
    request: web.Request, config: HostileConfig, answer: bytes
) -> web.StreamResponse:
    """An answer whose text never seems to end, sent as it is made (chunked)."""
    response = await _open(request)
    filler = b"x" * _CHUNK
    with contextlib.suppress(ConnectionError):  # the client hung up
        await response.write(_OPENING)
        for _ in range(config.huge_bytes // _CHUNK):
            await response.write(filler)
        await response.write(b'"}]}}]}')
        await response.write_eof()
    return response


async def _slow_body(
    request: web.Request, config: HostileConfig, answer: bytes
) -> web.StreamResponse:
    """Headers at once, then the body a byte at a time: no single read ever times out."""
    response = await _open(request, length=len(answer))
    with contextlib.suppress(ConnectionError):  # the client hung up
        for i in range(len(answer)):
            await response.write(answer[i : i + 1])
            await asyncio.sleep(config.trickle_seconds)
        await response.write_eof()
    return response


async def _reset_body(
    request: web.Request, config: HostileConfig, answer: bytes
) -> web.StreamResponse:
    """Half the promised body, then a TCP reset (RST, not a clean close)."""
    response = await _open(request, length=len(answer))
    with contextlib.suppress(ConnectionError):  # the client hung up
        await response.write(answer[: len(answer) // 2])
        await response.drain()
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:  # linger on, for 0 s: close() then sends RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return response


_Stream = Callable[[web.Request, HostileConfig, bytes], Awaitable[web.StreamResponse]]
_STREAMS: dict[str, _Stream] = {
    "gzip_bomb": _gzip_bomb,
    "huge_body": _huge_body,
    "slow_body": _slow_body,
    "reset_body": _reset_body,
}
