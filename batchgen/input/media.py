"""Media values: what a media cell or a context file refers to, its MIME type, and the pre-scan.

A media cell holds a local path (absolute, or relative to the input file's folder), raw bytes
(a Parquet binary column, bytes in a DataFrame), an ``https://`` or ``gs://`` URI, or a Files
API name (``files/...``); a null cell sends no part. The pre-scan (:func:`scan_value`) checks
what can be checked without reading a file: that it exists, is a regular readable file, is not
empty, is within the Files API's 2 GB, and that its first bytes (or, failing that, its
extension) name a type Gemini takes. It returns a :class:`~batchgen.records.MediaRef`, or raises
:class:`BadMediaError` with the one line the user reads. :func:`read_media` reads the bytes when the
row is sent and refuses a file whose size or mtime moved since the pre-scan.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchgen.records import MediaRef

__all__ = [
    "CONTEXT",
    "MAX_FILE_BYTES",
    "SUPPORTED",
    "BadMediaError",
    "content_hash",
    "media_blocks",
    "read_media",
    "scan_path",
    "scan_value",
    "sniff",
]

CONTEXT = "context"  # the column a context file's reference names (part of its rows' request hash)
MAX_FILE_BYTES = 2 * 1000**3  # the Files API's limit per file (docs/media.md)
HEAD_BYTES = 32  # enough for every signature below
# the MIME types Gemini takes as parts (docs/media.md, "Supported types")
SUPPORTED = frozenset(
    {
        "image/png", "image/jpeg", "image/webp", "image/heic", "image/heif",
        "application/pdf", "text/plain",
        "audio/wav", "audio/mp3", "audio/mpeg", "audio/aiff", "audio/aac", "audio/ogg",
        "audio/flac",
        "video/mp4", "video/mpeg", "video/mov", "video/quicktime", "video/avi", "video/x-flv",
        "video/mpg", "video/webm", "video/wmv", "video/3gpp",
    }
)  # fmt: skip
_ALIASES = {"audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/x-aiff": "audio/aiff",
            "audio/x-flac": "audio/flac", "video/x-msvideo": "video/avi",
            "video/x-ms-wmv": "video/wmv"}  # fmt: skip
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_FILE_NAME = re.compile(r"^files/[a-z0-9][a-z0-9-]{0,39}$")


class BadMediaError(Exception):
    """A media value that cannot be sent; ``str()`` says why (the caller adds where)."""


def sniff(head: bytes) -> str | None:
    """The MIME type the first bytes of a file announce, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"WAVE", b"AVI "):
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/avi"}[head[8:12]]
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if head.startswith((b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")):
        return "audio/mp3"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc"):
            return "image/heic"
        if brand in (b"mif1", b"msf1"):
            return "image/heif"
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    return None


def _by_name(name: str) -> str | None:
    guess = mimetypes.guess_type(name, strict=False)[0]
    return _ALIASES.get(guess, guess) if guess else None


def _checked_type(mime: str | None, what: str) -> str:
    if mime is None:
        raise BadMediaError(f"{what}: unknown media type (set prompt.media_types for the column)")
    mime = _ALIASES.get(mime, mime)
    if mime not in SUPPORTED:
        raise BadMediaError(f"{what}: unsupported media type {mime}")
    return mime


def scan_path(path: Path, column: str, override: str | None = None) -> MediaRef:
    """Pre-scan one local file: exists, regular, readable, not empty, within the limit, a type
    Gemini takes (its magic bytes, else its extension, unless ``override``)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise BadMediaError(f"{path}: no such file") from None
    except OSError as exc:
        raise BadMediaError(f"{path}: cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise BadMediaError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise BadMediaError(f"{path}: not a regular file")
    if info.st_size == 0:
        raise BadMediaError(f"{path}: empty file")
    if info.st_size > MAX_FILE_BYTES:
        raise BadMediaError(f"{path}: {info.st_size:,} bytes, over the API's 2 GB limit for a file")
    try:
        with open(path, "rb") as source:
            head = source.read(HEAD_BYTES)
    except OSError as exc:
        raise BadMediaError(f"{path}: cannot read: {exc.strerror}") from None
    mime = _checked_type(override or sniff(head) or _by_name(path.name), str(path))
    return MediaRef(column, "path", mime, info.st_size, str(path), info.st_mtime_ns)


def scan_value(value: Any, column: str, base: Path, override: str | None = None) -> MediaRef:
    """Pre-scan one media cell (not None); raises :class:`BadMediaError`."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        if not data:
            raise BadMediaError("empty bytes")
        if len(data) > MAX_FILE_BYTES:
            raise BadMediaError(f"{len(data):,} bytes, over the API's 2 GB limit")
        mime = _checked_type(override or sniff(data[:HEAD_BYTES]), "the bytes")
        return MediaRef(column, "bytes", mime, len(data), data=data)
    if not isinstance(value, str):
        raise BadMediaError(f"a {type(value).__name__}, not a path, URI or bytes")
    text = value.strip()
    if not text:
        raise BadMediaError("an empty path")
    if text.startswith("files/"):
        if not _FILE_NAME.match(text):
            raise BadMediaError(f"{text}: not a Files API name (files/ and up to 40 of a-z 0-9 -)")
        mime = _ALIASES.get(override, override) if override else ""
        return MediaRef(column, "file", mime or "", uri=text)
    scheme = _SCHEME.match(text)
    if scheme:
        if scheme.group(1).lower() not in ("https", "gs"):
            raise BadMediaError(
                f"{text}: unknown URI scheme {scheme.group(1)}:// (https://, gs://)"
            )
        mime = _checked_type(override or _by_name(text.split("?")[0]), text)
        return MediaRef(column, "uri", mime, uri=text)
    path = Path(text).expanduser()
    return scan_path(path if path.is_absolute() else base / path, column, override)


def read_media(ref: MediaRef) -> bytes:
    """The bytes of a path or bytes reference; BadMediaError when the file moved since the scan."""
    if ref.data is not None:
        return ref.data
    assert ref.path is not None
    try:
        with open(ref.path, "rb") as source:
            info = os.fstat(source.fileno())
            _unchanged(ref, info)
            data = source.read()
    except OSError as exc:
        raise BadMediaError(f"{ref.path}: cannot read: {exc.strerror}") from None
    if len(data) != ref.size:
        raise BadMediaError(f"{ref.path}: changed while being read")
    return data


def media_blocks(ref: MediaRef, block: int) -> Iterator[bytes]:
    """A file's bytes ``block`` at a time, as a request is sent; BadMediaError when the file
    moved since the pre-scan."""
    assert ref.path is not None
    total = 0
    try:
        with open(ref.path, "rb") as source:
            _unchanged(ref, os.fstat(source.fileno()))
            while chunk := source.read(block):
                total += len(chunk)
                if total > ref.size:
                    break
                yield chunk
    except OSError as exc:
        raise BadMediaError(f"{ref.path}: cannot read: {exc.strerror}") from None
    if total != ref.size:
        raise BadMediaError(f"{ref.path}: changed while being sent")


def _unchanged(ref: MediaRef, info: os.stat_result) -> None:
    if info.st_size != ref.size or info.st_mtime_ns != ref.mtime_ns:
        raise BadMediaError(
            f"{ref.path}: changed since the pre-scan ({ref.size:,} → {info.st_size:,} bytes); "
            "nothing was sent for the row"
        )


_HASHES: dict[tuple[str, int, int], str] = {}
_MOST_HASHES = 200_000  # (path, size, mtime) → hash kept; ~200 bytes each


def content_hash(ref: MediaRef, data: bytes | None = None) -> str:
    """The sha256 of a reference's content (hex): of ``data`` when given, else read in 1 MB
    blocks (a path's hash is remembered by path, size and mtime)."""
    if data is not None:
        return hashlib.sha256(data).hexdigest()
    if ref.data is not None:
        return hashlib.sha256(ref.data).hexdigest()
    assert ref.path is not None
    key = (ref.path, ref.size, ref.mtime_ns)
    if key in _HASHES:
        return _HASHES[key]
    digest = hashlib.sha256()
    try:
        with open(ref.path, "rb") as source:
            _unchanged(ref, os.fstat(source.fileno()))
            while block := source.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise BadMediaError(f"{ref.path}: cannot read: {exc.strerror}") from None
    if len(_HASHES) >= _MOST_HASHES:
        _HASHES.clear()
    _HASHES[key] = digest.hexdigest()
    return _HASHES[key]
