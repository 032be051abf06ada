"""Make the media files of the example job jobs/invoice_fields.toml, with the standard library only.

    python sample_inputs/make_media.py

writes sample_inputs/media/ (a few small PDFs, PNG images, a WAV recording and the shared
"manual" PDF) and sample_inputs/invoices.csv, the rows that name them. The output is the same
on every run (no clock, no randomness), so the committed files can be checked against it.
"""

from __future__ import annotations

import csv
import struct
import wave
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEDIA = HERE / "media"


def png(width: int, height: int, seed: int) -> bytes:
    """An RGB PNG with a seeded pattern of stripes (compresses well, decodes anywhere)."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows += bytes(((x * seed) % 256, (y * 3 + seed * 40) % 256, ((x + y) // 8 * 17) % 256))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b"")
    )  # fmt: skip


def pdf(pages: list[list[str]]) -> bytes:
    """A valid PDF of text pages (Helvetica), with its cross-reference table."""
    objects: list[bytes] = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        text = " ".join(
            f"BT /F1 12 Tf 72 {720 - 18 * n} Td ({line}) Tj ET" for n, line in enumerate(lines)
        ).encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * i} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(text) + text + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref
    )  # fmt: skip
    return bytes(out)


def wav(path: Path, seconds: float, pitch: int) -> None:
    """A mono 8 kHz 16-bit WAV of a square wave."""
    rate = 8000
    frames = bytearray()
    for n in range(int(rate * seconds)):
        frames += struct.pack("<h", 6000 if (n // (rate // pitch // 2)) % 2 else -6000)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))


def invoice(number: int, vendor: str, total: str, pages: int) -> list[list[str]]:
    first = [f"INVOICE {number:05d}", f"Vendor: {vendor}", "Date: 2026-11-0" + str(number % 9 + 1),
             f"Total due: {total} EUR"]  # fmt: skip
    return [first] + [[f"Invoice {number:05d}, page {p + 2}: line items"] for p in range(pages - 1)]


VENDORS = [("Acme Tools GmbH", "1240.00", 1), ("Blue Fjord AS", "89.90", 2),
           ("Cobalt Paper Ltd", "412.35", 1), ("Delta Freight SA", "3075.00", 3)]  # fmt: skip


def main() -> None:
    MEDIA.mkdir(exist_ok=True)
    for n, (vendor, total, pages) in enumerate(VENDORS, start=1):
        (MEDIA / f"invoice-{n}.pdf").write_bytes(pdf(invoice(n, vendor, total, pages)))
    (MEDIA / "manual.pdf").write_bytes(pdf([
        ["Accounts payable manual", "An invoice names its vendor, date and total due."],
        ["Totals are in EUR unless the invoice says otherwise."],
    ]))  # fmt: skip
    (MEDIA / "stamp.png").write_bytes(png(64, 64, 3))  # shared by several rows
    (MEDIA / "receipt-photo.png").write_bytes(png(320, 240, 5))
    (MEDIA / "warehouse.png").write_bytes(png(900, 700, 7))  # two tiles by two
    wav(MEDIA / "voicemail.wav", 1.5, 440)
    rows = [
        ("inv-1", "media/invoice-1.pdf", "media/stamp.png", "media/voicemail.wav"),
        ("inv-2", "media/invoice-2.pdf", "media/receipt-photo.png", ""),
        ("inv-3", "media/invoice-3.pdf", "media/stamp.png", ""),
        ("inv-4", "media/invoice-4.pdf", "media/warehouse.png", ""),
        ("inv-5", "media/invoice-1.pdf", "", "media/voicemail.wav"),
    ]
    with (HERE / "invoices.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["invoice_id", "scan", "photo", "recording"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()
