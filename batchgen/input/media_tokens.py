"""Media tokens counted offline, by the published rules, from the files' headers.

The rules (ai.google.dev/gemini-api/docs/tokens, checked 2026-12-04; README "What media costs"):

- an image is 258 tokens when both sides are at most 384 px, else it is cut into 768×768 tiles
  of 258 tokens each (``ceil(w/768) × ceil(h/768)``); Gemini 3 models take
  ``generationConfig.mediaResolution``, which changes the count by rules not published as
  numbers, so for them this is a guess and countTokens the measure;
- a PDF is 258 tokens a page;
- audio is 32 tokens a second; video about 263 a second (frames at 1 fps and the audio track).

What is read, never a whole file: image sizes from the PNG, JPEG, GIF and WebP headers; a PDF's
page count from its page tree (the largest ``/Count`` of a ``/Type /Pages`` node, else the
``/Type /Page`` objects), reading in 1 MB chunks and inflating compressed object streams
(``/ObjStm``, FlateDecode only) one at a time; durations from the headers of WAV (exact: data
size / byte rate), FLAC (exact: STREAMINFO samples), Ogg Vorbis/Opus (exact: the last page's
granule position), MP4/M4A and MOV (exact: ``mvhd``), MP3 (the Xing/Info/VBRI frame count when
the encoder wrote one, exact; else the first frame's bitrate over the file's size, exact for
constant bitrate) and AAC in ADTS frames (every frame header is walked: exact, reading 7 bytes a
frame). A file these cannot read raises :class:`MediaError`, never a guess that looks measured.
"""

from __future__ import annotations

import io
import math
import re
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from batchgen.records import Modalities, TokenCount

__all__ = [
    "AUDIO_PER_SECOND",
    "PDF_PER_PAGE",
    "TILE",
    "TILE_TOKENS",
    "VIDEO_PER_SECOND",
    "MediaError",
    "audio_seconds",
    "image_size",
    "media_tokens",
    "modality_of",
    "pdf_pages",
    "row_count",
]

TILE_TOKENS = 258  # one image tile, or a small image whole
SMALL_SIDE = 384  # both sides at most this: one tile's tokens
TILE = 768  # the tile's side in pixels
PDF_PER_PAGE = 258
AUDIO_PER_SECOND = 32
VIDEO_PER_SECOND = 263
TEXT_CHARS_PER_TOKEN = 4  # a text/* part: about four characters a token, as the offline estimate
CHUNK = 1 << 20
_MAX_INFLATED = 64 << 20  # an object stream inflated past this is not an object stream
_HEAD = 64 << 10  # enough of an image's or an audio file's start to find its header

Source = Path | bytes


class MediaError(ValueError):
    """A file whose tokens cannot be counted from its header (``str()`` says which and why)."""


def modality_of(mime: str) -> str:
    """The API's modality for a MIME type: text, image, audio, video or document."""
    kind = mime.split(";")[0].strip().lower()
    if kind.startswith("image/"):
        return "image"
    if kind.startswith("audio/"):
        return "audio"
    if kind.startswith("video/"):
        return "video"
    if kind.startswith("text/") or kind in ("application/json", "application/xml"):
        return "text"
    return "document"  # application/pdf, and documents the API reads as pages


def media_tokens(source: Source, mime: str) -> int:
    """The prompt tokens of one media part by the published rules.

    Raises:
        MediaError: an unsupported type, or a header that does not read.
    """
    modality = modality_of(mime)
    kind = mime.split(";")[0].strip().lower()
    with _open(source) as stream:
        if modality == "image":
            width, height = image_size(stream)
            return image_tokens(width, height)
        if modality == "document":
            if kind != "application/pdf":
                raise MediaError(f"{mime}: no offline rule for this type (PDF only)")
            return pdf_pages(stream) * PDF_PER_PAGE
        if modality == "text":
            return math.ceil(_size(stream) / TEXT_CHARS_PER_TOKEN)
        seconds = audio_seconds(stream, kind)
    per_second = AUDIO_PER_SECOND if modality == "audio" else VIDEO_PER_SECOND
    return math.ceil(seconds * per_second)


def row_count(
    text_tokens: int, media: Iterable[tuple[str, Source]], count: Callable[..., int] = media_tokens
) -> TokenCount:
    """A row's prompt: its text estimate plus each media part's tokens, by modality.

    ``media`` holds the row's parts as (MIME type, path or bytes) pairs; this is what a row's
    media references feed into ``estimate`` offline.
    """
    sums = {"text": text_tokens, "image": 0, "audio": 0, "video": 0, "document": 0}
    for mime, source in media:
        sums[modality_of(mime)] += count(source, mime)
    details = Modalities(**sums)
    return TokenCount(details.total, details)


def image_tokens(width: int, height: int) -> int:
    """258 for a small image (both sides ≤ 384 px), else 258 per 768×768 tile."""
    if width <= SMALL_SIDE and height <= SMALL_SIDE:
        return TILE_TOKENS
    return math.ceil(width / TILE) * math.ceil(height / TILE) * TILE_TOKENS


# --- opening -------------------------------------------------------------------------------


def _open(source: Source) -> BinaryIO:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source))
    try:
        return source.open("rb")
    except OSError as exc:
        raise MediaError(f"{source}: cannot read ({exc.strerror})") from None


def _size(stream: BinaryIO) -> int:
    return stream.seek(0, io.SEEK_END)


def _need(data: bytes, size: int, what: str) -> bytes:
    if len(data) < size:
        raise MediaError(f"{what}: the file ends inside its header")
    return data


# --- images --------------------------------------------------------------------------------


def image_size(stream: BinaryIO) -> tuple[int, int]:
    """(width, height) from a PNG, JPEG, GIF or WebP header."""
    head = stream.read(32)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", _need(head, 24, "PNG")[16:24])
        return width, height
    if head[:6] in (b"GIF87a", b"GIF89a"):
        width, height = struct.unpack("<HH", _need(head, 10, "GIF")[6:10])
        return width, height
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _webp_size(head + stream.read(32))
    if head.startswith(b"\xff\xd8"):
        stream.seek(2)
        return _jpeg_size(stream)
    raise MediaError("image: not a PNG, JPEG, GIF or WebP header")


def _webp_size(head: bytes) -> tuple[int, int]:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:  # lossy: after a 3-byte frame tag and start code
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:  # lossless: 14-bit sizes minus one
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:  # extended: 24-bit canvas sizes minus one
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    raise MediaError("WebP: unknown or short header")


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(stream: BinaryIO) -> tuple[int, int]:
    """Walk the JPEG markers to the first start-of-frame (seeking over each segment)."""
    while True:
        byte = stream.read(1)
        while byte == b"\xff":  # fill bytes
            marker = stream.read(1)
            if marker != b"\xff":
                break
        else:
            raise MediaError("JPEG: no start-of-frame before the data")
        code = marker[0] if marker else 0
        if not marker or code == 0xD9:
            raise MediaError("JPEG: no start-of-frame before the end")
        if 0xD0 <= code <= 0xD7 or code == 0x01:
            continue  # markers without a length
        length = struct.unpack(">H", _need(stream.read(2), 2, "JPEG"))[0]
        if code in _SOF:
            frame = _need(stream.read(5), 5, "JPEG")
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height
        stream.seek(length - 2, io.SEEK_CUR)


# --- PDF -----------------------------------------------------------------------------------

_PAGES_COUNT = re.compile(
    rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)|/Count\s+(\d+)[^>]*?/Type\s*/Pages\b"
)
_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_OBJSTM = re.compile(rb"/Type\s*/ObjStm\b")
_STREAM = re.compile(rb"stream\r?\n")
_OVERLAP = 512  # a match cut by a chunk boundary is found in the next chunk


def pdf_pages(stream: BinaryIO) -> int:
    """A PDF's page count: the largest ``/Count`` of its page-tree nodes (the root's), else the
    number of ``/Type /Page`` objects; object streams are inflated to look inside them.

    Limits: an object stream compressed otherwise than FlateDecode (rare) is not read, and a
    file updated incrementally may keep an old page tree beside the new one (the larger count
    wins). Encrypted PDFs keep their page tree readable, so they count.
    """
    if not stream.read(5).startswith(b"%PDF"):
        raise MediaError("PDF: no %PDF header")
    stream.seek(0)
    counts: list[int] = []
    pages = 0
    objstms: list[int] = []
    seen: set[int] = set()
    offset = 0
    tail = b""
    while chunk := stream.read(CHUNK):
        data = tail + chunk
        base = offset - len(tail)
        fresh = len(tail)  # a match must end past the overlap to be new in this chunk
        for match in _PAGES_COUNT.finditer(data):
            if match.end() > fresh:
                counts.append(int(match.group(1) or match.group(2)))
        pages += sum(1 for m in _PAGE.finditer(data) if m.end() > fresh)
        for match in _OBJSTM.finditer(data):
            at = base + match.start()
            if match.end() > fresh and at not in seen:
                seen.add(at)
                objstms.append(at)
        offset += len(chunk)
        tail = data[-_OVERLAP:]
    for at in objstms:
        inner = _inflate_at(stream, at)
        counts += [int(m.group(1) or m.group(2)) for m in _PAGES_COUNT.finditer(inner)]
        pages += len(_PAGE.findall(inner))
    found = max(counts) if counts else pages
    if not found:
        raise MediaError("PDF: no page tree found")
    return found


def _inflate_at(stream: BinaryIO, at: int) -> bytes:
    """The inflated data of the object stream whose dictionary starts near ``at``."""
    stream.seek(at)
    head = stream.read(4096)
    start = _STREAM.search(head)
    if start is None or b"/FlateDecode" not in head[: start.start()]:
        return b""
    stream.seek(at + start.end())
    inflater = zlib.decompressobj()
    out = bytearray()
    try:
        while not inflater.eof and len(out) < _MAX_INFLATED:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            out += inflater.decompress(chunk, _MAX_INFLATED - len(out))
    except zlib.error:
        return bytes(out)
    return bytes(out)


# --- audio and video -----------------------------------------------------------------------


def audio_seconds(stream: BinaryIO, mime: str = "") -> float:
    """The duration of a WAV, FLAC, Ogg, MP4/M4A/MOV, MP3 or ADTS AAC file, from its headers."""
    head = stream.read(_HEAD)
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return _wav_seconds(stream)
    if head.startswith(b"fLaC"):
        return _flac_seconds(head)
    if head.startswith(b"OggS"):
        return _ogg_seconds(stream, head)
    if head[4:8] == b"ftyp":
        return _mp4_seconds(stream)
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return _adts_seconds(stream)
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return _mp3_seconds(stream, head)
    raise MediaError(f"{mime or 'audio'}: not a WAV, FLAC, Ogg, MP4, MP3 or AAC header")


def _wav_seconds(stream: BinaryIO) -> float:
    """data size / byte rate (exact), walking the RIFF chunks."""
    stream.seek(12)
    byte_rate = 0
    while header := stream.read(8):
        if len(header) < 8:
            break
        kind, size = header[:4], struct.unpack("<I", header[4:])[0]
        if kind == b"fmt ":
            fmt = _need(stream.read(size), 12, "WAV fmt")
            byte_rate = struct.unpack("<I", fmt[8:12])[0]
            stream.seek(size % 2, io.SEEK_CUR)
            continue
        if kind == b"data":
            if not byte_rate:
                raise MediaError("WAV: data before its fmt chunk")
            here = stream.tell()
            size = min(size, _size(stream) - here)  # a streamed file may say 2**32-1
            return float(size / byte_rate)
        stream.seek(size + size % 2, io.SEEK_CUR)
    raise MediaError("WAV: no data chunk")


def _flac_seconds(head: bytes) -> float:
    """STREAMINFO's total samples / sample rate (exact; 0 samples: unknown)."""
    info = _need(head, 26, "FLAC")[8:26]
    bits = int.from_bytes(info[10:18], "big")
    rate = bits >> 44
    samples = bits & ((1 << 36) - 1)
    if not rate or not samples:
        raise MediaError("FLAC: STREAMINFO gives no sample count")
    return samples / rate


def _ogg_seconds(stream: BinaryIO, head: bytes) -> float:
    """The last page's granule position / the rate (Vorbis: its header; Opus: 48 kHz, less the
    pre-skip)."""
    if b"\x01vorbis" in head[:64]:
        at = head.index(b"\x01vorbis")
        rate, skip = (
            struct.unpack("<I", _need(head, at + 16, "Ogg Vorbis")[at + 12 : at + 16])[0],
            0,
        )
    elif b"OpusHead" in head[:64]:
        at = head.index(b"OpusHead")
        rate, skip = 48_000, struct.unpack("<H", _need(head, at + 12, "Opus")[at + 10 : at + 12])[0]
    else:
        raise MediaError("Ogg: neither Vorbis nor Opus")
    size = _size(stream)
    stream.seek(max(0, size - _HEAD))
    tail = stream.read()
    last = tail.rfind(b"OggS")
    if last < 0 or len(tail) < last + 14:
        raise MediaError("Ogg: no last page")
    granule = struct.unpack("<q", tail[last + 6 : last + 14])[0]
    return float(max(0, granule - skip) / rate)


def _mp4_seconds(stream: BinaryIO) -> float:
    """``moov/mvhd`` duration / timescale (exact), seeking over the other boxes."""
    size = _size(stream)
    at, end = 0, size
    while at + 8 <= end:
        stream.seek(at)
        box = stream.read(16)
        length, kind = struct.unpack(">I4s", box[:8])
        head = 8
        if length == 1:
            length, head = struct.unpack(">Q", box[8:16])[0], 16
        elif length == 0:
            length = end - at
        if kind == b"moov":
            at, end = at + head, at + length  # descend
            continue
        if kind == b"mvhd":
            stream.seek(at + head)
            body = stream.read(32)
            if body[0] == 1:
                scale, duration = struct.unpack(">IQ", body[20:32])
            else:
                scale, duration = struct.unpack(">II", body[12:20])
            if not scale:
                break
            return float(duration / scale)
        if length < 8:
            break
        at += length
    raise MediaError("MP4: no moov/mvhd box")


_MP3_BITRATES = {  # kbit/s by (MPEG-1?, layer 3) index
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_seconds(stream: BinaryIO, head: bytes) -> float:
    """The Xing/Info/VBRI frame count × samples per frame (exact) when present, else the file's
    audio bytes × 8 / the first frame's bitrate (exact for constant bitrate only)."""
    skip = 0
    if head.startswith(b"ID3"):
        size = _need(head, 10, "ID3")[6:10]
        skip = 10 + ((size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3])
        stream.seek(skip)
        head = stream.read(_HEAD)
    frame = head.find(b"\xff")
    while frame >= 0 and (frame + 1 >= len(head) or head[frame + 1] & 0xE0 != 0xE0):
        frame = head.find(b"\xff", frame + 1)
    if frame < 0 or frame + 4 > len(head):
        raise MediaError("MP3: no frame header")
    b1, b2, b3 = head[frame + 1], head[frame + 2], head[frame + 3]
    version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
    if layer != 1 or version == 1 or (b2 >> 4) in (0, 15) or (b2 >> 2) & 3 == 3:
        raise MediaError("MP3: not a layer III frame header (or free bitrate)")
    mpeg1 = version == 3
    bitrate = _MP3_BITRATES[mpeg1][b2 >> 4] * 1000
    rate = _MP3_RATES[version][(b2 >> 2) & 3]
    per_frame = 1152 if mpeg1 else 576
    mono = (b3 >> 6) == 3
    side = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    tag_at = frame + 4 + side
    tag = head[tag_at : tag_at + 12]
    if tag[:4] in (b"Xing", b"Info") and len(tag) >= 12 and struct.unpack(">I", tag[4:8])[0] & 1:
        return float(struct.unpack(">I", tag[8:12])[0] * per_frame / rate)
    vbri = head[frame + 36 : frame + 36 + 18]
    if vbri[:4] == b"VBRI" and len(vbri) >= 18:
        return float(struct.unpack(">I", vbri[14:18])[0] * per_frame / rate)
    audio_bytes = _size(stream) - skip - frame
    return audio_bytes * 8 / bitrate


_AAC_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)


def _adts_seconds(stream: BinaryIO) -> float:
    """Every ADTS frame header walked (7 bytes read a frame): frames × 1024 / the rate."""
    stream.seek(0)
    frames, rate, at = 0, 0, 0
    while len(header := stream.read(7)) == 7 and header[0] == 0xFF and header[1] & 0xF6 == 0xF0:
        index = (header[2] >> 2) & 0xF
        if index >= len(_AAC_RATES):
            raise MediaError("AAC: bad sample-rate index")
        rate = _AAC_RATES[index]
        length = ((header[3] & 3) << 11) | (header[4] << 3) | (header[5] >> 5)
        if length < 7:
            break
        frames += (header[6] & 3) + 1
        at += length
        stream.seek(at)
    if not frames:
        raise MediaError("AAC: no ADTS frames")
    return frames * 1024 / rate
