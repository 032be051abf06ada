"""Offline media tokens: counts from the files' headers, against the published rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.input.media_tokens import (
    MediaError,
    image_tokens,
    media_tokens,
    modality_of,
    row_count,
)
from batchgen.records import Modalities, TokenCount
from tests.helpers import media


@pytest.mark.parametrize(
    ("width", "height", "tokens"),
    [
        (384, 384, 258),  # small: one tile's tokens
        (100, 40, 258),
        (385, 200, 258),  # past 384 on one side: one 768 tile
        (768, 768, 258),
        (769, 768, 516),  # two tiles across
        (1024, 768, 516),
        (1600, 1200, 3 * 2 * 258),
        (4000, 3000, 6 * 4 * 258),
    ],
)
def test_image_rule(width: int, height: int, tokens: int) -> None:
    assert image_tokens(width, height) == tokens


@pytest.mark.parametrize("make", [media.png, media.jpeg, media.gif, media.webp])
def test_image_sizes_come_from_every_header(make: object, tmp_path: Path) -> None:
    build = make  # type: ignore[assignment]
    path = tmp_path / "image"
    path.write_bytes(build(1600, 1200))  # type: ignore[operator]
    assert media_tokens(path, "image/png") == 6 * 258
    assert media_tokens(build(300, 200), "image/jpeg") == 258  # type: ignore[operator]


def test_a_real_png_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(media.png(1024, 2000))
    assert media_tokens(path, "image/png") == 2 * 3 * 258


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("pages", [1, 3, 12])
def test_pdf_is_258_a_page(pages: int, compressed: bool, tmp_path: Path) -> None:
    path = tmp_path / "doc.pdf"
    path.write_bytes(media.pdf(pages, compressed=compressed))
    assert media_tokens(path, "application/pdf") == pages * 258


def test_pdf_pages_are_found_across_chunk_boundaries(tmp_path: Path) -> None:
    # 3 MB of padding puts the page tree beyond the first 1 MB chunks
    body = media.pdf(5)
    path = tmp_path / "big.pdf"
    path.write_bytes(body[:9] + b"%" + b"x" * (3 << 20) + b"\n" + body[9:])
    assert media_tokens(path, "application/pdf") == 5 * 258


@pytest.mark.parametrize("seconds", [1.0, 2.5, 61.0])
def test_wav_is_exact(seconds: float, tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    path.write_bytes(media.wav(seconds, rate=8000, channels=2))
    assert media_tokens(path, "audio/wav") == round(seconds * 32)


@pytest.mark.parametrize(
    ("make", "mime", "seconds", "within"),
    [
        (media.flac, "audio/flac", 30.0, 0),
        (media.ogg_vorbis, "audio/ogg", 30.0, 0),
        (media.m4a, "audio/mp4", 30.0, 0),
        (media.mp3_cbr, "audio/mpeg", 30.0, 3),  # bitrate estimate: frames left unpadded
        (media.adts, "audio/aac", 30.0, 1),  # whole frames of 23.2 ms
    ],
)
def test_other_audio_durations(make: object, mime: str, seconds: float, within: int) -> None:
    data = make(seconds)  # type: ignore[operator]
    assert abs(media_tokens(data, mime) - seconds * 32) <= within


def test_video_is_263_a_second() -> None:
    assert media_tokens(media.m4a(10.0), "video/mp4") == 2630


def test_modalities_of_mime_types() -> None:
    assert [modality_of(m) for m in ("image/webp", "audio/x-wav", "video/mp4", "text/plain",
                                     "application/pdf", "IMAGE/PNG; q=1")] == [
        "image", "audio", "video", "text", "document", "image"]  # fmt: skip


def test_unreadable_media_say_what(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not a PNG, JPEG, GIF or WebP"):
        media_tokens(b"hello", "image/png")
    with pytest.raises(MediaError, match="no %PDF header"):
        media_tokens(b"hello", "application/pdf")
    with pytest.raises(MediaError, match="cannot read"):
        media_tokens(tmp_path / "missing.wav", "audio/wav")
    with pytest.raises(MediaError, match="PDF only"):
        media_tokens(b"PK\x03\x04", "application/zip")


def test_a_rows_media_add_to_its_text_by_modality(tmp_path: Path) -> None:
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(media.pdf(2))
    refs = [("image/png", media.png(800, 600)), ("audio/wav", media.wav(10)),
            ("application/pdf", scan)]  # fmt: skip
    count = row_count(40, refs)
    assert count == TokenCount(
        40 + 516 + 320 + 516, Modalities(text=40, image=516, audio=320, document=516)
    )


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("JPEG", {}), ("JPEG", {"progressive": True}), ("WEBP", {"lossless": True}),
     ("WEBP", {"quality": 50}), ("GIF", {}), ("PNG", {})],
)  # fmt: skip
def test_images_written_by_pillow(fmt: str, options: dict[str, object], tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / f"photo.{fmt.lower()}"
    Image.new("RGB", (1600, 900), (200, 120, 40)).save(path, fmt, **options)
    assert media_tokens(path, f"image/{fmt.lower()}") == 3 * 2 * 258


def test_a_pdf_written_by_matplotlib(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    path = tmp_path / "report.pdf"
    with PdfPages(path) as pdf:
        for page in range(4):
            figure = plt.figure()
            figure.text(0.5, 0.5, f"page {page}")
            pdf.savefig(figure)
            plt.close(figure)
    assert media_tokens(path, "application/pdf") == 4 * 258
