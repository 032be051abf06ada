"""The emulator in tests: the factory fixture's type, and calls straight to the emulator app
(for the emulator's own tests)."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from batchgen.emulator import Emulator, EmulatorThread

KEY = "test-key-0123456789"
FLASH = "gemini-2.5-flash"
Client = TestClient[Any, Any]
StartEmulator = Callable[..., EmulatorThread]  # conftest's emulator_factory
MakeClient = Callable[..., Awaitable[tuple[Client, Emulator]]]


async def call(
    client: Client,
    body: Any,
    model: str = FLASH,
    method: str = "generateContent",
    key: str | None = KEY,
) -> tuple[int, dict[str, Any]]:
    """POST a body; return the status and the parsed JSON answer."""
    headers = {"x-goog-api-key": key} if key is not None else {}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    # aiohttp warns about sending large raw bytes in one go; a stream is the polite way.
    data = io.BytesIO(raw) if len(raw) > 1_000_000 else raw
    async with client.post(f"/v1beta/models/{model}:{method}", data=data, headers=headers) as r:
        assert r.content_type == "application/json"
        assert "Retry-After" not in r.headers
        return r.status, await r.json()


def ask(prompt: str, schema: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    """A generateContent body with one user prompt and, optionally, a response schema."""
    generation = dict(config)
    if schema is not None:
        generation |= {"responseMimeType": "application/json", "responseSchema": schema}
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if generation:
        body["generationConfig"] = generation
    return body
