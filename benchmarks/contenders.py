"""The loops batchgen is measured against, each run as its own process.

``python benchmarks/contenders.py bare URL INPUT CONCURRENCY``
    The transport floor: one aiohttp ClientSession, CONCURRENCY workers, the request body batchgen
    sends, the answer read and its status checked; no parsing, no output.
``python benchmarks/contenders.py peer URL INPUT CONCURRENCY OUTPUT``
    What a user would otherwise write: pandas reads the input, the official google-genai SDK's
    async client sends each row under an ``asyncio.Semaphore``, the answers are parsed and
    pyarrow writes them to Parquet.
``python benchmarks/contenders.py peer-insights URL INPUT CONCURRENCY OUTPUT``
    The same peer on jobs/review_insights.toml's task: a Parquet input of reviews, a system
    instruction, nested arrays of objects in the schema, carried columns in the output.

Each prints one JSON line: rows, ok (answers with HTTP 200), seconds (its own loop).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import API_KEY, MODEL, SCHEMA, render_prompt

JOBS = Path(__file__).resolve().parent.parent / "jobs"


async def bare(url: str, input_path: str, concurrency: int) -> dict[str, Any]:
    import aiohttp
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(input_path).to_pydict()
    prompts = [
        render_prompt(p, c, n)
        for p, c, n in zip(table["product"], table["category"], table["notes"], strict=True)
    ]
    tail = json.dumps(
        {"responseMimeType": "application/json", "responseSchema": SCHEMA},
        separators=(",", ":"),
    ).encode()
    endpoint = f"{url}/v1beta/models/{MODEL}:generateContent"
    headers = {"x-goog-api-key": API_KEY, "Content-Type": "application/json"}
    todo = iter(prompts)
    ok = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        for prompt in todo:
            text = json.dumps(prompt, ensure_ascii=False).encode()
            body = b'{"contents":[{"role":"user","parts":[{"text":' + text
            body += b'}]}],"generationConfig":' + tail + b"}"
            async with session.post(endpoint, data=body, headers=headers) as resp:
                await resp.read()
                ok += resp.status == 200

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {"rows": len(prompts), "ok": ok, "seconds": time.perf_counter() - started}


async def peer(url: str, input_path: str, concurrency: int, output: str) -> dict[str, Any]:
    """The flat job through the SDK."""
    import pandas as pd
    from google.genai import types

    started = time.perf_counter()
    config = types.GenerateContentConfig(
        response_mime_type="application/json", response_schema=SCHEMA
    )
    return await _sdk_rows(
        url, pd.read_csv(input_path, dtype=str), concurrency, output, MODEL, config,
        prompt=lambda row: render_prompt(row.product, row.category, row.notes),
        ids=lambda row: {"id": row.id}, started=started,
    )  # fmt: skip


async def peer_insights(url: str, input_path: str, concurrency: int, output: str) -> dict[str, Any]:
    """jobs/review_insights.toml's task through the SDK: the same system instruction,
    generation settings, schema and prompt, the carried columns in the output."""
    import pandas as pd
    from google.genai import types

    started = time.perf_counter()
    schema = json.loads((JOBS / "review_insights.schema.json").read_text(encoding="utf-8"))
    config = types.GenerateContentConfig(
        system_instruction="You analyse customer reviews. Answer only from the review's text.",
        temperature=0.2,
        max_output_tokens=2048,
        thinking_config=types.ThinkingConfig(thinking_budget=0),
        response_mime_type="application/json",
        response_schema=schema,
    )

    def prompt(row: Any) -> str:
        text = row.review_text if row.review_text else "(no text, stars only)"
        return (
            f"Product: {row.product}\nStars: {row.stars} / 5\nReview: {text}\n\n"
            "Classify the review's sentiment, score it, summarise it in one sentence and list "
            "the aspects it talks about with a short quote for each."
        )

    return await _sdk_rows(
        url, pd.read_parquet(input_path), concurrency, output, "gemini-2.5-flash-lite", config,
        prompt=prompt, started=started,
        ids=lambda row: {"review_id": row.review_id, "product": row.product, "stars": row.stars},
    )  # fmt: skip


async def _sdk_rows(
    url: str,
    df: Any,
    concurrency: int,
    output: str,
    model: str,
    config: Any,
    *,
    prompt: Callable[[Any], str],
    ids: Callable[[Any], dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    """Every row of ``df`` through the SDK's async client under a semaphore, as one writes it
    (``asyncio.gather`` over all rows); the answers with their ids and usage to Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key=API_KEY, http_options=types.HttpOptions(base_url=url, api_version="v1beta")
    )
    semaphore = asyncio.Semaphore(concurrency)

    async def one(row: Any) -> dict[str, Any]:
        text = prompt(row)
        async with semaphore:
            response = await client.aio.models.generate_content(
                model=model, contents=text, config=config
            )
        usage = response.usage_metadata
        return {
            **ids(row),
            **json.loads(response.text or "{}"),
            "prompt_tokens": usage.prompt_token_count if usage else None,
            "output_tokens": usage.candidates_token_count if usage else None,
        }

    results = await asyncio.gather(*(one(row) for row in df.itertuples(index=False)))
    pq.write_table(pa.Table.from_pylist(results), output)
    return {"rows": len(df), "ok": len(results), "seconds": time.perf_counter() - started}


def main(argv: list[str]) -> None:
    kind, url, input_path, concurrency = argv[0], argv[1], argv[2], int(argv[3])
    if kind == "bare":
        result = asyncio.run(bare(url, input_path, concurrency))
    elif kind == "peer":
        result = asyncio.run(peer(url, input_path, concurrency, argv[4]))
    elif kind == "peer-insights":
        result = asyncio.run(peer_insights(url, input_path, concurrency, argv[4]))
    else:
        raise SystemExit(f"unknown contender {kind!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
