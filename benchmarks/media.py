"""Media rows against the emulator: peak RSS of N rows of 2 MB images vs a text-only run of the
same N, rows/s, and upload throughput.

    python benchmarks/media.py [--rows N] [--uploads M] [--image-kb K] [--keep]

1. ``text``: N rows, the prompt only, at the job defaults a user gets (concurrency "auto").
2. ``images``: the same N rows, each with its own 2 MB PNG (a distinct content a row), at the
   defaults (``[media] inline_max_mb = 20``: every image goes inline, base64).
3. ``uploads``: M rows of their own 2 MB PNGs with ``inline_max_mb = 1``: every image goes
   through the Files API (resumable upload) once, then by fileData.

Each run is ``batchgen run`` in its own process against the emulator in another process (both
on this machine's cores); peak RSS is the child's VmHWM (benchmarks/harness.py). The images are
written once into a temporary folder, removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

from harness import EmulatorProcess, batchgen_cmd, child_env, run_child

IMAGE_BYTES = 2 * 1000**2
MODEL = "gemini-2.5-flash-lite"


def image(i: int, noise: bytes) -> bytes:
    """A PNG of ``len(noise) + 100`` bytes (1024×768, a 16-byte tag that makes each one a
    distinct content)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 1024, 768, 8, 2, 0, 0, 0)
    tag = hashlib.blake2b(str(i).encode(), digest_size=16).digest()
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    body = chunk(b"teXt", tag + noise) + chunk(b"IEND", b"")
    return head + body


def write_rows(folder: Path, rows: int, with_images: bool, image_bytes: int = IMAGE_BYTES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    media = folder.parent / "images"
    if with_images:
        media.mkdir(exist_ok=True)
        noise = hashlib.shake_256(b"noise").digest(image_bytes - 100)
        for i in range(rows):
            path = media / f"img-{i:06d}.png"
            if not path.exists():
                path.write_bytes(image(i, noise))
    with (folder / "rows.csv").open("w") as out:
        out.write("id,name,image\n" if with_images else "id,name\n")
        for i in range(rows):
            tail = f",{media}/img-{i:06d}.png" if with_images else ""
            out.write(f"r{i},item {i}{tail}\n")
    return folder / "rows.csv"


def write_job(
    folder: Path, with_images: bool, inline_max_mb: float | None, concurrency: int | None = None
) -> Path:
    media = 'media = ["image"]\n' if with_images else ""
    pinned = f"concurrency = {concurrency}\n" if concurrency else ""
    limit = f"[media]\ninline_max_mb = {inline_max_mb}\n" if inline_max_mb else ""
    text = f"""name = "media-bench"
[input]
path = "rows.csv"
id_column = "id"
[model]
name = "{MODEL}"
[prompt]
user = "Describe {{{{ name }}}} in a few words."
{media}[limits]
requests_per_minute = 1000000000
{pinned}{limit}[response_schema]
type = "OBJECT"
required = ["label"]
properties = {{ label = {{ type = "STRING" }} }}
[output]
directory = "out"
"""
    path = folder / "job.toml"
    path.write_text(text)
    return path


def one(
    work: Path,
    name: str,
    rows: int,
    images: bool,
    inline_max_mb: float | None = None,
    image_bytes: int = IMAGE_BYTES,
) -> dict[str, float]:
    folder = work / name
    write_rows(folder, rows, images, image_bytes)
    job = write_job(folder, images, inline_max_mb)
    with EmulatorProcess() as emulator:
        child = run_child(
            batchgen_cmd(job, emulator.base_url), cwd=folder, env=child_env(), timeout=1800
        )
    if child.returncode != 0:
        raise RuntimeError(f"{name}: exit {child.returncode}: {child.stderr[-500:]}")
    uploads = folder / "out" / "uploads.jsonl"
    uploaded = len(uploads.read_text().splitlines()) if uploads.exists() else 0
    result = {
        "rows": rows,
        "seconds": child.wall,
        "rows_per_s": rows / child.wall,
        "peak_rss_mb": child.peak_rss_mb,
        "cpu_s": child.cpu_seconds,
        "uploaded": uploaded,
        "mb_per_s": (rows * image_bytes / 1e6 / child.wall) if images else 0.0,
    }
    print(f"{name}: " + ", ".join(f"{k} {v:,.2f}" for k, v in result.items()), flush=True)
    shutil.rmtree(folder / "out", ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--image-kb", type=int, default=IMAGE_BYTES // 1000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    work = Path(tempfile.mkdtemp(prefix="batchgen-media-bench-"))
    try:
        size = args.image_kb * 1000
        text = one(work, "text", args.rows, images=False)
        images = one(work, "images", args.rows, images=True, image_bytes=size)
        uploads = (
            one(work, "uploads", args.uploads, True, inline_max_mb=size / 2e6, image_bytes=size)
            if args.uploads
            else None
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ratio = images["peak_rss_mb"] / text["peak_rss_mb"]
    print(f"peak RSS images ÷ text = {ratio:.2f} (target ≤ 1.3)")
    print(f"inline images: {images['rows_per_s']:.1f} rows/s, {images['mb_per_s']:.1f} MB/s")
    if uploads:
        print(f"uploads: {uploads['uploaded']} files, {uploads['mb_per_s']:.1f} MB/s, "
              f"{uploads['rows_per_s']:.1f} rows/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
