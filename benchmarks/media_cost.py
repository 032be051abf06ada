"""Media cost figures: the offline counter against the published rules, and what a mixed audio +
image job costs against the same tokens priced as text.

    python benchmarks/media_cost.py

1. Files made here (stdlib: zlib PNG, wave WAV, hand-written PDFs, and headers of the other
   formats) are counted by ``batchgen.input.media_tokens`` and compared with the rule's count
   from the size each was made with.
2. 50 rows, each an image (1024×768) and 30 s of audio with a short text, are sent to the
   emulator; their answers are written as a usage ledger and priced by ``report`` on
   gemini-2.5-flash-lite, once with the packaged table and once with the audio rate removed
   (every prompt token at the input rate).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import shutil
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the tests' media makers

from batchgen.emulator import EmulatorServer  # noqa: E402
from batchgen.gemini.answers import parse_response  # noqa: E402
from batchgen.gemini.client import GeminiClient  # noqa: E402
from batchgen.gemini.transport import Transport  # noqa: E402
from batchgen.input.media_tokens import media_tokens  # noqa: E402
from batchgen.job.spec import ModelSpec  # noqa: E402
from batchgen.pricing.file import load_prices  # noqa: E402
from batchgen.records import Answer, Billed  # noqa: E402
from batchgen.reports.report import report  # noqa: E402
from batchgen.store.output import USAGE_SCHEMA  # noqa: E402
from tests.helpers import media  # noqa: E402

MODEL = "gemini-2.5-flash-lite"
ROWS = 50


def _tiles(w: int, h: int) -> int:
    return 258 if w <= 384 and h <= 384 else math.ceil(w / 768) * math.ceil(h / 768) * 258


CASES = [
    ("PNG 300×200", media.png(300, 200), "image/png", _tiles(300, 200)),
    ("PNG 1024×768", media.png(1024, 768), "image/png", _tiles(1024, 768)),
    ("JPEG 4000×3000", media.jpeg(4000, 3000), "image/jpeg", _tiles(4000, 3000)),
    ("WebP 1920×1080", media.webp(1920, 1080), "image/webp", _tiles(1920, 1080)),
    ("GIF 800×800", media.gif(800, 800), "image/gif", _tiles(800, 800)),
    ("PDF 7 pages", media.pdf(7), "application/pdf", 7 * 258),
    ("PDF 40 pages, object stream", media.pdf(40, compressed=True), "application/pdf", 40 * 258),
    ("WAV 45 s", media.wav(45), "audio/wav", 45 * 32),
    ("FLAC 120 s", media.flac(120), "audio/flac", 120 * 32),
    ("Ogg Vorbis 90 s", media.ogg_vorbis(90), "audio/ogg", 90 * 32),
    ("M4A 60 s", media.m4a(60), "audio/mp4", 60 * 32),
    ("MP3 CBR 60 s", media.mp3_cbr(60), "audio/mpeg", 60 * 32),
    ("AAC ADTS 60 s", media.adts(60), "audio/aac", 60 * 32),
    ("MP4 video 10 s", media.m4a(10), "video/mp4", 10 * 263),
]


def counter_table() -> None:
    print("| file | rule | offline counter | difference |")
    print("|---|---:|---:|---:|")
    for name, data, mime, rule in CASES:
        counted = media_tokens(data, mime)
        print(f"| {name} | {rule:,} | {counted:,} | {(counted - rule) / rule:+.2%} |")


async def _answers(base_url: str) -> list[Answer]:
    photo, clip = media.png(1024, 768), media.wav(30)
    parts = [
        {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}
        for mime, data in (("image/png", photo), ("audio/wav", clip))
    ]
    spec = ModelSpec(name=MODEL, base_url=base_url)
    async with aiohttp.ClientSession() as session:
        client = GeminiClient(Transport(session, spec, "bench-key", 30))
        answers = []
        for i in range(ROWS):
            text = {"text": f"Grade call {i:03d} and describe its photo in a few words."}
            body = {"contents": [{"role": "user", "parts": [*parts, text]}]}
            payload, _ = await client.generate(json.dumps(body).encode())
            answers.append(parse_response(payload))
        return answers


def mixed_job(folder: Path) -> None:
    async def run() -> list[Answer]:
        async with EmulatorServer() as server:
            return await _answers(server.base_url)

    answers = asyncio.run(run())
    at = datetime(2026, 12, 4, 12, tzinfo=UTC)
    rows = [
        Billed("20261204T120000-abcdef", "calls", f"r{i}", 1, MODEL, a, "ok", at).to_row()
        for i, a in enumerate(answers)
    ]
    out = folder / "out"
    (out / "usage").mkdir(parents=True)
    (out / "job.json").write_text(json.dumps({"job": "calls", "parts": {"model": MODEL}}))
    table = pa.Table.from_pylist(rows, USAGE_SCHEMA)
    pq.write_table(table, out / "usage" / "part-20261204T120000-abcdef-00001.parquet")
    prices = load_prices()
    entry = prices.models[MODEL]
    flat = replace(entry.periods[0], standard=replace(entry.periods[0].standard, audio=None))
    as_text = replace(prices, models={**prices.models, MODEL: replace(entry, periods=(flat,))})
    real, text = report([out], prices=prices), report([out], prices=as_text)
    cost, plain = real.total["cost_usd"], text.total["cost_usd"]
    print(f"\n{ROWS} rows on {MODEL}, each a 1024×768 PNG + 30 s WAV + a short text:")
    print(f"prompt by modality: {real.modalities}")
    answer = real.total["output_tokens"] + real.total["thinking_tokens"]
    answer_cost = answer * entry.periods[0].output / 1e6
    print(f"output + thinking tokens: {answer:,} (${answer_cost:.6f})")
    print(f"cost with audio at its rate: ${cost:.6f} (prompt ${cost - answer_cost:.6f})")
    print(f"same tokens priced as text:  ${plain:.6f} (prompt ${plain - answer_cost:.6f})")
    print(
        f"ratio: {cost / plain:.2f}x the whole call, "
        f"{(cost - answer_cost) / (plain - answer_cost):.2f}x the prompt"
    )


def main() -> None:
    counter_table()
    folder = Path(tempfile.mkdtemp())
    try:
        mixed_job(folder)
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
