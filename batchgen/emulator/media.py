"""Media parts as the API reads them: ``inlineData`` decoded, ``fileData`` resolved against the
emulator's Files API, and each counted by the published rules (docs/media.md):

- an image is 258 tokens when both sides are at most 384 px, else 258 per 768×768 tile;
- a PDF page is 258 tokens (pages counted from the document's page objects);
- a second of audio is 32 tokens (WAV: from its header; other formats: from their size at an
  assumed 16 kB/s), a second of video about 263 (from its size at an assumed 250 kB/s);
- a text/plain part is counted as text.

The code here is the emulator's own (it imports nothing from batchgen's client). A ``fileData``
naming a file the Files API does not hold, or one past its 48 hours, is a 403, as the API
answers; an ``https://`` or ``gs://`` URI is taken as fetched, its bytes standing in as the URI.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batchgen.emulator.wire import ApiError

TILE = 768
SMALL_SIDE = 384
TOKENS_PER_TILE = 258
TOKENS_PER_PAGE = 258
AUDIO_PER_SECOND = 32
VIDEO_PER_SECOND = 263
AUDIO_BYTES_PER_SECOND = 16_000  # an assumed bit rate for compressed audio
VIDEO_BYTES_PER_SECOND = 250_000
_FILE_PATH = re.compile(r"(?:^|/v1beta/)(files/[a-z0-9][a-z0-9-]*)$")
_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


@dataclass(frozen=True)
class Media:
    """One media part read: its modality, tokens and content digest (which seeds the answer)."""

    modality: str
    tokens: int
    digest: str


Lookup = Callable[[str], tuple[str, bytes, datetime]]  # name -> (mime, bytes, expiry)


def read_media(body: Mapping[str, Any], lookup: Lookup) -> list[Media]:
    """Every media part of a request's contents, in order; ApiError 400/403 for a bad one."""
    found = []
    for content in body.get("contents") or []:
        for part in content.get("parts") or []:
            if part.get("inlineData") is not None:
                found.append(_inline(part["inlineData"]))
            elif part.get("fileData") is not None:
                found.append(_file(part["fileData"], lookup))
    return found


def _inline(blob: Any) -> Media:
    if not isinstance(blob, Mapping):
        raise ApiError(400, "INVALID_ARGUMENT", "Invalid value at 'inline_data'.")
    mime = str(blob.get("mimeType") or blob.get("mime_type") or "")
    try:
        data = base64.b64decode(str(blob.get("data") or ""), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400, "INVALID_ARGUMENT", "Invalid value at 'inline_data.data' (TYPE_BYTES): "
            "Base64 decoding failed.",
        ) from None  # fmt: skip
    if not mime:
        raise ApiError(400, "INVALID_ARGUMENT", "inline_data.mime_type is required.")
    if not data:
        raise ApiError(400, "INVALID_ARGUMENT", "inline_data.data is empty.")
    return count(mime, data)


def _file(ref: Any, lookup: Lookup) -> Media:
    if not isinstance(ref, Mapping) or not isinstance(ref.get("fileUri"), str):
        raise ApiError(400, "INVALID_ARGUMENT", "file_data.file_uri is required.")
    uri: str = ref["fileUri"]
    mime = str(ref.get("mimeType") or "")
    match = _FILE_PATH.search(uri.split("?")[0])
    if match is None:
        if not uri.startswith(("https://", "gs://")):
            raise ApiError(400, "INVALID_ARGUMENT", f"Unsupported file uri: {uri}")
        return count(mime or "application/octet-stream", uri.encode())
    name = match.group(1)
    denied = ApiError(
        403, "PERMISSION_DENIED",
        f"You do not have permission to access the File {name.removeprefix('files/')} or it "
        "may not exist.",
    )  # fmt: skip
    try:
        stored_mime, data, expires = lookup(name)
    except ApiError:
        raise denied from None
    if expires <= datetime.now(UTC):
        raise denied
    return count(mime or stored_mime, data)


def count(mime: str, data: bytes) -> Media:
    """A part's modality and tokens by the published rules."""
    digest = hashlib.sha256(data).hexdigest()
    kind = mime.split("/")[0]
    if mime == "application/pdf":
        return Media("DOCUMENT", TOKENS_PER_PAGE * max(1, len(_PAGE.findall(data))), digest)
    if kind == "image":
        width, height = image_size(data)
        return Media("IMAGE", image_tokens(width, height), digest)
    if kind == "audio":
        seconds = wav_seconds(data) or len(data) / AUDIO_BYTES_PER_SECOND
        return Media("AUDIO", max(1, math.ceil(seconds * AUDIO_PER_SECOND)), digest)
    if kind == "video":
        seconds = len(data) / VIDEO_BYTES_PER_SECOND
        return Media("VIDEO", max(1, math.ceil(seconds * VIDEO_PER_SECOND)), digest)
    if kind == "text":
        text = data.decode("utf-8", "replace")
        return Media("TEXT", max(1, round(len(text) / 4)), digest)
    raise ApiError(400, "INVALID_ARGUMENT", f"Unsupported MIME type: {mime}")


def image_tokens(width: int, height: int) -> int:
    """258 for an image with both sides ≤ 384 px, else 258 per 768×768 tile."""
    if width <= SMALL_SIDE and height <= SMALL_SIDE:
        return TOKENS_PER_TILE
    return TOKENS_PER_TILE * math.ceil(width / TILE) * math.ceil(height / TILE)


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG, JPEG, GIF or WebP header; (0, 0) when unknown."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return 0, 0


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        return width, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return 0, 0


def _jpeg_size(data: bytes) -> tuple[int, int]:
    at = 2
    while at + 9 < len(data):
        if data[at] != 0xFF:
            at += 1
            continue
        marker = data[at + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return int(width), int(height)
        at += 2 + length
    return 0, 0


def wav_seconds(data: bytes) -> float | None:
    """A WAV file's duration from its fmt and data chunks; None when it is not one."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    at, rate = 12, 0
    while at + 8 <= len(data):
        name, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        if name == b"fmt " and at + 16 <= len(data):
            rate = int.from_bytes(data[at + 16 : at + 20], "little")  # bytes per second
        elif name == b"data" and rate:
            return min(size, len(data) - at - 8) / rate
        at += 8 + size + (size & 1)
    return None


def by_modality(text_tokens: int, media: list[Media]) -> list[dict[str, Any]]:
    """promptTokensDetails: tokens per modality, TEXT first, zero counts left out."""
    totals: dict[str, int] = {"TEXT": text_tokens}
    for item in media:
        totals[item.modality] = totals.get(item.modality, 0) + item.tokens
    return [{"modality": m, "tokenCount": n} for m, n in totals.items() if n]
