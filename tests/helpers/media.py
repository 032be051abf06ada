"""Small media files made by the tests (stdlib only): real PNG, WAV and PDF files, and the
headers of the other formats the offline counter reads."""

from __future__ import annotations

import io
import struct
import wave
import zlib


def png(width: int, height: int) -> bytes:
    """A real grey PNG of this size (one zlib stream of blank scanlines)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def wav(seconds: float, rate: int = 8000, channels: int = 1) -> bytes:
    """A real silent 16-bit PCM WAV of this length."""
    sink = io.BytesIO()
    with wave.open(sink, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * channels * round(seconds * rate))
    return sink.getvalue()


def pdf(pages: int, compressed: bool = False) -> bytes:
    """A real PDF with ``pages`` blank pages; ``compressed`` puts the page tree in an object
    stream (FlateDecode), as PDF 1.5 writers do."""
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
    ]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"] * pages
    if compressed:
        numbers = list(range(1, len(objects) + 1))
        bodies, offsets, at = [], [], 0
        for body in objects:
            offsets.append(at)
            bodies.append(body + b"\n")
            at += len(body) + 1
        index = " ".join(f"{n} {o}" for n, o in zip(numbers, offsets, strict=True)).encode() + b"\n"
        data = zlib.compress(index + b"".join(bodies))
        head = (
            f"<< /Type /ObjStm /N {len(objects)} /First {len(index)} /Filter /FlateDecode "
            f"/Length {len(data)} >>"
        )
        stream_obj = head.encode() + b"\nstream\n" + data + b"\nendstream"
        return (
            b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n1000 0 obj\n"
            + stream_obj
            + b"\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
        )
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write(b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets))
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def jpeg(width: int, height: int) -> bytes:
    """A JPEG's markers up to its start-of-frame (SOI, an APP0 segment, SOF0)."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def webp(width: int, height: int) -> bytes:
    """An extended (VP8X) WebP header."""
    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def mp3_cbr(seconds: float) -> bytes:
    """MPEG-1 layer III frames at 128 kbit/s, 44.1 kHz, with no Xing header (constant bitrate)."""
    frame = b"\xff\xfb\x90\x64" + b"\x00" * (417 - 4)  # 144 × 128000 / 44100 = 417 bytes
    frames = round(seconds * 44100 / 1152)
    return frame * frames


def flac(seconds: float, rate: int = 44100) -> bytes:
    """A FLAC stream's marker and STREAMINFO block (no audio frames)."""
    samples = round(seconds * rate)
    bits = (rate << 44) | (1 << 41) | (15 << 36) | samples  # 2 channels, 16 bits
    info = struct.pack(">HH", 4096, 4096) + b"\x00" * 6 + bits.to_bytes(8, "big") + b"\x00" * 16
    return b"fLaC" + b"\x80" + len(info).to_bytes(3, "big") + info


def ogg_vorbis(seconds: float, rate: int = 48000) -> bytes:
    """Two Ogg pages: the Vorbis identification header, and a last page at the end granule."""

    def page(granule: int, body: bytes, flags: int) -> bytes:
        return (
            b"OggS\x00"
            + bytes([flags])
            + struct.pack("<qIIIB", granule, 1, 0, 0, 1)
            + bytes([len(body)])
            + body
        )

    ident = b"\x01vorbis" + struct.pack("<IBIiii", 0, 2, rate, 0, 0, 0) + b"\xb8\x01"
    return page(0, ident, 2) + page(round(seconds * rate), b"\x00" * 10, 4)


def m4a(seconds: float, scale: int = 1000) -> bytes:
    """ftyp and moov/mvhd (version 0) boxes."""
    mvhd_body = (
        b"\x00\x00\x00\x00"
        + struct.pack(">IIII", 0, 0, scale, round(seconds * scale))
        + b"\x00" * 80
    )
    mvhd = struct.pack(">I", 8 + len(mvhd_body)) + b"mvhd" + mvhd_body
    moov = struct.pack(">I", 8 + len(mvhd)) + b"moov" + mvhd
    ftyp = struct.pack(">I", 16) + b"ftypM4A \x00\x00\x00\x00"
    mdat = struct.pack(">I", 8 + 100) + b"mdat" + b"\x00" * 100
    return ftyp + mdat + moov


def adts(seconds: float, rate_index: int = 4) -> bytes:
    """ADTS AAC frames (44.1 kHz at index 4) of 20 bytes each, 1024 samples a frame."""
    rates = (96000, 88200, 64000, 48000, 44100)
    frames = round(seconds * rates[rate_index] / 1024)
    length = 20
    header = bytes([0xFF, 0xF1, (1 << 6) | (rate_index << 2), (2 << 6) | (length >> 11),
                    (length >> 3) & 0xFF, ((length & 7) << 5) | 0x1F, 0xFC])  # fmt: skip
    return (header + b"\x00" * (length - 7)) * frames
