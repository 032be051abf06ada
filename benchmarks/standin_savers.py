"""A second Gemini server for caching, dedupe and candidates, written apart from the emulator.

batchgen's emulator (``batchgen/emulator/``) was written by the team that wrote the client, so
where both share an assumption neither catches it. This stand-in is written from the public
REST reference instead (https://ai.google.dev/api/generate-content,
https://ai.google.dev/api/caching, https://ai.google.dev/api/tokens) and imports nothing from
batchgen. Where the reference leaves a choice it takes the strict one:

- unknown fields in a request, a ``generationConfig`` or a cache body: 400 INVALID_ARGUMENT
  ``Invalid JSON payload received. Unknown name "…"`` (the API's proto parser);
- ``cachedContent`` beside ``systemInstruction``, ``tools`` or ``toolConfig``: 400; a cache
  made for another model: 400; a cache that is deleted or past its expiry: 403
  PERMISSION_DENIED ``CachedContent not found (or permission denied)``;
- a cache below the model's minimum: 400 ``Cached content is too small.
  total_token_count=…, min_total_token_count=…``; ``ttl`` is input only (never returned),
  ``expireTime`` always is; PATCH takes ``ttl`` or ``expireTime``, with or without
  ``?updateMask=``;
- tokens are counted by its own rule (one token per three bytes of text, 258 a PDF page or
  other media part), not
  the emulator's, so a client that guesses tokens instead of reading them is found out;
  ``promptTokenCount`` includes the cached tokens, ``cachedContentTokenCount`` is the cached
  part, ``candidatesTokenCount`` sums every candidate;
- ``candidateCount`` n gives n candidates, each with its ``index``, answers that differ by
  candidate and by call (so an identical request answered twice gets two answers: dedupe is the
  client's to do);
- its own per-minute request limit: 429 RESOURCE_EXHAUSTED with a RetryInfo ``retryDelay``.

Run as ``python benchmarks/standin_savers.py [--rpm N] [--latency LO,HI] [--key KEY]``; it prints
its URL on the first line and serves its counts at ``/_standin/stats``; a POST to
``/_standin/expire`` ends every cache at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import math
import random
import re
import secrets
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

STATS_PATH = "/_standin/stats"
EXPIRE_PATH = "/_standin/expire"  # every cache ends now
MEDIA_TOKENS = 258
MIN_CACHE = {"gemini-2.5-flash-lite": 1024, "gemini-2.5-flash": 1024}  # else 4096 (3.x models)
REQUEST_KEYS = {
    "contents",
    "systemInstruction",
    "generationConfig",
    "safetySettings",
    "cachedContent",
    "serviceTier",
    "tools",
    "toolConfig",
    "labels",
    "model",
    "store",
}
CONFIG_KEYS = {
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "mediaResolution",
    "responseModalities",
    "speechConfig",
}
CACHE_KEYS = {
    "model",
    "contents",
    "systemInstruction",
    "ttl",
    "expireTime",
    "displayName",
    "tools",
    "toolConfig",
}
PART_KEYS = {"text", "inlineData", "fileData", "thought", "thoughtSignature"}
PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
TTL = re.compile(r"^\d+(\.\d+)?s$")


class RefusedError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _invalid(message: str) -> RefusedError:
    return RefusedError(400, "INVALID_ARGUMENT", message)


def _unknown(keys: set[str], allowed: set[str], where: str) -> None:
    extra = sorted(keys - allowed)
    if extra:
        raise _invalid(f"Invalid JSON payload received. Unknown name \"{extra[0]}\" at '{where}'")


@dataclass
class Cache:
    name: str
    model: str
    tokens: int
    created: datetime
    expires: datetime
    display: str

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "displayName": self.display,
            "createTime": _stamp(self.created),
            "updateTime": _stamp(self.created),
            "expireTime": _stamp(self.expires),
            "usageMetadata": {"totalTokenCount": self.tokens},
        }


def _stamp(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def media_tokens(part: dict[str, Any]) -> int:
    """258 a PDF page (counted in inline data), else 258 a part."""
    inline = part.get("inlineData") or {}
    if inline.get("mimeType") == "application/pdf":
        try:
            data = base64.b64decode(str(inline.get("data", "")), validate=True)
        except ValueError:
            raise _invalid("Invalid value at 'inline_data.data': not base64") from None
        return MEDIA_TOKENS * max(1, len(PDF_PAGE.findall(data)))
    return MEDIA_TOKENS


def count_contents(contents: Any, system: Any) -> int:
    """Tokens by the stand-in's own rule: a token per three bytes of text, 258 a media part."""
    tokens = 0
    turns = list(contents or []) + ([system] if system else [])
    for turn in turns:
        if not isinstance(turn, dict):
            raise _invalid("Invalid value at 'contents': a Content must be an object")
        if "role" in turn and turn["role"] not in ("user", "model"):
            raise _invalid(f"Please use a valid role: user, model. Got {turn['role']!r}")
        for part in turn.get("parts") or []:
            _unknown(set(part), PART_KEYS, "contents.parts")
            if "text" in part:
                tokens += math.ceil(len(str(part["text"]).encode()) / 3)
            else:
                tokens += media_tokens(part)
    return tokens


def answer_for(schema: Any, rng: random.Random, json_schema: bool) -> Any:
    """A value the response schema allows (OpenAPI subset or JSON Schema), varied by ``rng``."""
    if not isinstance(schema, dict):
        return None
    kind = str(schema.get("type", "object" if "properties" in schema else "string")).lower()
    if isinstance(schema.get("type"), list):
        kind = str(next(t for t in schema["type"] if t != "null")).lower()
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: answer_for(v, rng, json_schema) for k, v in props.items()}
    if kind == "array":
        low = int(schema.get("minItems", 1))
        return [answer_for(schema.get("items", {}), rng, json_schema) for _ in range(max(1, low))]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        return rng.randint(low, low + 9)
    if kind == "number":
        return round(float(schema.get("minimum", 0)) + rng.random() * 10, 3)
    if kind == "boolean":
        return rng.random() < 0.5
    return f"answer-{rng.randrange(16**6):06x}"


def make_app(key: str, rpm: int, latency: tuple[float, float]) -> web.Application:
    counts: Counter[str] = Counter()
    caches: dict[str, Cache] = {}
    arrivals: deque[float] = deque()
    rng = random.Random()

    def fail(exc: RefusedError) -> web.Response:
        counts[f"status:{exc.status}"] += 1
        error = {"code": exc.status, "message": exc.message, "status": exc.reason}
        return web.json_response({"error": error}, status=exc.status)

    def check_key(request: web.Request) -> None:
        if request.headers.get("x-goog-api-key") != key:
            raise RefusedError(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
            )

    async def body_of(request: web.Request) -> dict[str, Any]:
        try:
            raw = json.loads(await request.read() or b"{}")
        except ValueError:
            raise _invalid("Invalid JSON payload received.") from None
        if not isinstance(raw, dict):
            raise _invalid("Invalid JSON payload received. Expected an object.")
        return raw

    def live(name: str) -> Cache:
        cache = caches.get(name)
        if cache is None or cache.expires <= datetime.now(UTC):
            caches.pop(name, None)
            raise RefusedError(
                403, "PERMISSION_DENIED", "CachedContent not found (or permission denied)"
            )
        return cache

    def admitted() -> web.Response | None:
        """None, or the 429 (with RetryInfo) of a request over the per-minute limit."""
        now = time.monotonic()
        while arrivals and arrivals[0] <= now - 60:
            arrivals.popleft()
        if len(arrivals) < rpm:
            arrivals.append(now)
            return None
        wait = max(1, math.ceil(arrivals[0] + 60 - now))
        counts["status:429"] += 1
        retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait}s"}
        error = {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [retry],
        }
        return web.json_response({"error": error}, status=429)

    async def generate(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        counts["generateContent"] += 1
        try:
            check_key(request)
        except RefusedError as exc:
            return fail(exc)
        if (limited := admitted()) is not None:
            return limited
        await asyncio.sleep(rng.uniform(*latency))
        try:
            body = await body_of(request)
            _unknown(set(body), REQUEST_KEYS, "GenerateContentRequest")
            config = body.get("generationConfig") or {}
            _unknown(set(config), CONFIG_KEYS, "generation_config")
            if not body.get("contents"):
                raise _invalid("* GenerateContentRequest.contents: contents is not specified")
            cached = 0
            if "cachedContent" in body:
                if any(k in body for k in ("systemInstruction", "tools", "toolConfig")):
                    raise _invalid(
                        "CachedContent can not be used with GenerateContent request "
                        "setting system_instruction, tools or tool_config."
                    )
                cache = live(str(body["cachedContent"]))
                if cache.model != f"models/{model}":
                    raise _invalid(
                        f"Model used by GenerateContent request (models/{model}) and "
                        f"CachedContent ({cache.model}) has to be the same."
                    )
                cached = cache.tokens
                counts["calls_naming_a_cache"] += 1
            prompt = count_contents(body["contents"], body.get("systemInstruction")) + cached
            n = int(config.get("candidateCount", 1))
            if not 1 <= n <= 8:
                raise _invalid("candidateCount must be between 1 and 8")
        except RefusedError as exc:
            return fail(exc)
        counts["answered"] += 1
        counts["candidates"] += n
        json_schema = "responseJsonSchema" in config
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        candidates, out_tokens = [], 0
        for i in range(n):
            text = json.dumps(answer_for(schema, rng, json_schema)) if schema else "ok"
            out_tokens += math.ceil(len(text) / 3)
            candidates.append(
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "STOP",
                    "index": i,
                }
            )
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": out_tokens,
            "totalTokenCount": prompt + out_tokens,
        }
        if cached:
            usage["cachedContentTokenCount"] = cached
        counts["prompt_tokens"] += prompt
        counts["cached_tokens"] += cached
        return web.json_response(
            {
                "candidates": candidates,
                "usageMetadata": usage,
                "modelVersion": model,
                "responseId": secrets.token_hex(8),
            }
        )

    async def count_tokens(request: web.Request) -> web.StreamResponse:
        counts["countTokens"] += 1
        try:
            check_key(request)
            body = await body_of(request)
            _unknown(set(body), {"contents", "generateContentRequest"}, "CountTokensRequest")
            inner = body.get("generateContentRequest") or {"contents": body.get("contents")}
            _unknown(set(inner), REQUEST_KEYS, "generate_content_request")
            cached = live(str(inner["cachedContent"])).tokens if "cachedContent" in inner else 0
            total = count_contents(inner.get("contents"), inner.get("systemInstruction")) + cached
        except RefusedError as exc:
            return fail(exc)
        return web.json_response({"totalTokens": total})

    def expiry(raw: dict[str, Any], now: datetime) -> datetime:
        if "ttl" in raw and "expireTime" in raw:
            raise _invalid("Only one of ttl or expire_time may be set")
        if "ttl" in raw:
            if not TTL.match(str(raw["ttl"])):
                raise _invalid(f"Invalid value at 'cached_content.ttl' ({raw['ttl']!r})")
            return now + timedelta(seconds=float(str(raw["ttl"])[:-1]))
        if "expireTime" in raw:
            return datetime.fromisoformat(str(raw["expireTime"]).replace("Z", "+00:00"))
        return now + timedelta(hours=1)

    async def create(request: web.Request) -> web.StreamResponse:
        counts["cachedContents.create"] += 1
        try:
            check_key(request)
            raw = await body_of(request)
            _unknown(set(raw), CACHE_KEYS, "cached_content")
            model = str(raw.get("model", ""))
            if not model.startswith("models/"):
                raise _invalid("cached_content.model: must be of the form models/{model}")
            tokens = count_contents(raw.get("contents"), raw.get("systemInstruction"))
            least = MIN_CACHE.get(model.removeprefix("models/"), 4096)
            if tokens < least:
                raise _invalid(
                    f"Cached content is too small. total_token_count={tokens}, "
                    f"min_total_token_count={least}"
                )
            now = datetime.now(UTC)
            name = f"cachedContents/{secrets.token_hex(6)}"
            caches[name] = Cache(
                name, model, tokens, now, expiry(raw, now), str(raw.get("displayName", ""))
            )
        except RefusedError as exc:
            return fail(exc)
        counts["caches_created"] += 1
        return web.json_response(caches[name].view())

    async def get(request: web.Request) -> web.StreamResponse:
        try:
            check_key(request)
            return web.json_response(live(f"cachedContents/{request.match_info['id']}").view())
        except RefusedError as exc:
            return fail(exc)

    async def patch(request: web.Request) -> web.StreamResponse:
        counts["cachedContents.patch"] += 1
        try:
            check_key(request)
            cache = live(f"cachedContents/{request.match_info['id']}")
            raw = await body_of(request)
            mask = request.query.get("updateMask")
            allowed = {"ttl", "expireTime"} if mask is None else set(mask.split(","))
            _unknown(set(raw), allowed & {"ttl", "expireTime"}, "cached_content")
            cache.expires = expiry(raw, datetime.now(UTC))
        except RefusedError as exc:
            return fail(exc)
        return web.json_response(cache.view())

    async def delete(request: web.Request) -> web.StreamResponse:
        counts["cachedContents.delete"] += 1
        try:
            check_key(request)
            live(f"cachedContents/{request.match_info['id']}")
        except RefusedError as exc:
            return fail(exc)
        del caches[f"cachedContents/{request.match_info['id']}"]
        counts["caches_deleted"] += 1
        return web.json_response({})

    async def listing(request: web.Request) -> web.StreamResponse:
        try:
            check_key(request)
        except RefusedError as exc:
            return fail(exc)
        now = datetime.now(UTC)
        alive = [c.view() for c in caches.values() if c.expires > now]
        return web.json_response({"cachedContents": alive} if alive else {})

    async def stats(_: web.Request) -> web.Response:
        now = datetime.now(UTC)
        alive = sum(c.expires > now for c in caches.values())
        return web.json_response({**counts, "caches_alive": alive})

    async def expire(_: web.Request) -> web.Response:
        """A test's hand: every cache ends now, as an expired one does (403 on use)."""
        for cache in caches.values():
            cache.expires = datetime.now(UTC)
        return web.json_response({})

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/v1beta/models/{model}:generateContent", generate)
    app.router.add_post("/v1beta/models/{model}:countTokens", count_tokens)
    app.router.add_post("/v1beta/cachedContents", create)
    app.router.add_get("/v1beta/cachedContents", listing)
    app.router.add_get("/v1beta/cachedContents/{id}", get)
    app.router.add_patch("/v1beta/cachedContents/{id}", patch)
    app.router.add_delete("/v1beta/cachedContents/{id}", delete)
    app.router.add_get(STATS_PATH, stats)
    app.router.add_post(EXPIRE_PATH, expire)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=int, default=10_000)
    parser.add_argument("--latency", default="0.3,1.5", help="seconds: LOW,HIGH")
    parser.add_argument("--key", default="standin-key")
    args = parser.parse_args()
    low, high = (float(x) for x in args.latency.split(","))

    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # a killed client's resets

    async def serve() -> None:
        runner = web.AppRunner(make_app(args.key, args.rpm, (low, high)), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
