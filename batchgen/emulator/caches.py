"""The ``cachedContents`` resource: explicit context caches with a TTL on the emulator's clock.

create (``POST /v1beta/cachedContents``), list, get, patch (``ttl`` or ``expireTime``) and delete,
as the API words them: a cache below the model's minimum size is a 400 ("Cached content is too
small"), an unknown or expired one a 403 (``CachedContent not found (or permission denied)``).
:meth:`CachesApi.use` is what generateContent does with a request naming ``cachedContent``: 400
when the request also sets ``systemInstruction``, ``tools`` or ``toolConfig``, or names another
model; 403 when the cache is unknown or expired. :meth:`CachesApi.alive` counts the caches that
still exist (tests assert none is left billing storage). With ``refuse`` every create is refused
(a model or project without caching).
"""

from __future__ import annotations

import collections
import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from batchgen.emulator.media import Lookup, read_media
from batchgen.emulator.replies import estimate_tokens
from batchgen.emulator.wire import ApiError, parse_json, prompt_text, read_generate_request

DEFAULT_TTL_S = 3600.0  # the API's default when neither ttl nor expireTime is given
DEFAULT_MIN_TOKENS = 1024  # the enforced explicit minimum seen live on Flash models
_TTL = re.compile(r"^(\d+(?:\.\d+)?)s$")
_NOT_FOUND = "CachedContent not found (or permission denied)"
_WITH_SYSTEM = (
    "CachedContent can not be used with GenerateContent request setting system_instruction, "
    "tools or tool_config.\n\nProposed fix: move those values to CachedContent from "
    "GenerateContent request."
)


@dataclass
class CacheEntry:
    """One cache: its model, the text it holds (as the emulator counts it), its tokens and
    when it expires on the emulator's clock."""

    name: str
    model: str
    text: str
    tokens: int
    expires: float
    display_name: str = ""


class CachesApi:
    """The cachedContents routes and the lookup generateContent uses."""

    def __init__(
        self,
        check_key: Callable[[web.Request], None],
        check_model: Callable[[str, str], None],
        clock: Callable[[], float],
        counts: collections.Counter[str],
        min_tokens: Mapping[str, int],
        refuse: bool = False,
        media: Lookup | None = None,
    ) -> None:
        self.entries: dict[str, CacheEntry] = {}
        self.created = 0
        self.refuse = refuse
        self._check_key, self._check_model = check_key, check_model
        self._clock, self._counts, self._min = clock, counts, min_tokens
        self._ids = itertools.count(1)
        self._media = media  # a fileData name -> its stored file (None: fileData parts refused)

    def _lookup(self, name: str) -> tuple[str, bytes, datetime]:
        if self._media is None:
            raise ApiError(
                403, "PERMISSION_DENIED", f"You do not have permission to access {name}."
            )
        return self._media(name)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1beta/cachedContents", self._create)
        router.add_get("/v1beta/cachedContents", self._list)
        router.add_get("/v1beta/cachedContents/{id}", self._get)
        router.add_patch("/v1beta/cachedContents/{id}", self._patch)
        router.add_delete("/v1beta/cachedContents/{id}", self._delete)

    def alive(self) -> int:
        """Caches that exist now (created, not deleted, not expired)."""
        self._expire()
        return len(self.entries)

    def use(self, body: Mapping[str, Any], model: str) -> CacheEntry:
        """The cache a generateContent request names; raises as the API answers."""
        if body.get("systemInstruction") or body.get("tools") or body.get("toolConfig"):
            raise ApiError(400, "INVALID_ARGUMENT", _WITH_SYSTEM)
        entry = self._entry(str(body["cachedContent"]))
        if entry.model != model:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"Model used by GenerateContent request (models/{model}) and CachedContent "
                f"(models/{entry.model}) has to be the same.",
            )
        self._counts["cachedContent:used"] += 1
        return entry

    # --- handlers -------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        self._counts["cachedContents.create"] += 1
        raw = parse_json(await request.read())
        if not isinstance(raw, Mapping):
            raise ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        self._check_key(request)
        model = str(raw.get("model", "")).removeprefix("models/")
        if not model:
            raise ApiError(400, "INVALID_ARGUMENT", "* CachedContent.model: model is required\n")
        self._check_model(model, "createCachedContent")
        if self.refuse:
            raise ApiError(
                400, "INVALID_ARGUMENT", f"Model models/{model} does not support explicit caching."
            )
        checked = read_generate_request(
            {
                "contents": raw.get("contents") or [{"parts": [{"text": ""}]}],
                **({"systemInstruction": raw["systemInstruction"]}
                   if raw.get("systemInstruction") else {}),
            }
        )  # fmt: skip
        if not raw.get("contents"):
            checked.pop("contents")
        text = prompt_text(checked)
        tokens = estimate_tokens(text) + sum(m.tokens for m in read_media(raw, self._lookup))
        least = self._min.get(model, DEFAULT_MIN_TOKENS)
        if tokens < least:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                "Cached content is too small. "
                f"total_token_count={tokens}, min_total_token_count={least}",
            )
        name = f"cachedContents/c{next(self._ids)}"
        expires = self._expiry(raw, self._clock() + DEFAULT_TTL_S)
        entry = CacheEntry(name, model, text, tokens, expires, str(raw.get("displayName", "")))
        self.entries[name] = entry
        self.created += 1
        return _json(self._view(entry))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        self._check_key(request)
        self._expire()
        return _json({"cachedContents": [self._view(e) for e in self.entries.values()]})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self._check_key(request)
        return _json(self._view(self._entry(_name(request))))

    async def _patch(self, request: web.Request) -> web.StreamResponse:
        self._counts["cachedContents.patch"] += 1
        raw = parse_json(await request.read())
        self._check_key(request)
        entry = self._entry(_name(request))
        if not isinstance(raw, Mapping) or not ({"ttl", "expireTime"} & set(raw)):
            raise ApiError(400, "INVALID_ARGUMENT", "Only the expiration can be updated.")
        entry.expires = self._expiry(raw, entry.expires)
        return _json(self._view(entry))

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        self._counts["cachedContents.delete"] += 1
        self._check_key(request)
        entry = self._entry(_name(request))
        del self.entries[entry.name]
        return _json({})

    # --- helpers --------------------------------------------------------------------------

    def _expire(self) -> None:
        now = self._clock()
        for name in [n for n, e in self.entries.items() if e.expires <= now]:
            del self.entries[name]

    def _entry(self, name: str) -> CacheEntry:
        self._expire()
        entry = self.entries.get(name)
        if entry is None:
            raise ApiError(403, "PERMISSION_DENIED", _NOT_FOUND)
        return entry

    def _expiry(self, raw: Mapping[str, Any], default: float) -> float:
        ttl = raw.get("ttl")
        if ttl is not None:
            match = _TTL.match(str(ttl))
            if match is None:
                raise ApiError(400, "INVALID_ARGUMENT", f"Invalid value at 'ttl' ({ttl!r})")
            return self._clock() + float(match.group(1))
        if raw.get("expireTime") is not None:
            try:
                at = datetime.fromisoformat(str(raw["expireTime"]).replace("Z", "+00:00"))
            except ValueError:
                raise ApiError(400, "INVALID_ARGUMENT", "Invalid value at 'expire_time'") from None
            return self._clock() + (at - datetime.now(UTC)).total_seconds()
        return default

    def _view(self, entry: CacheEntry) -> dict[str, Any]:
        left = entry.expires - self._clock()
        expire = datetime.now(UTC) + timedelta(seconds=left)
        return {
            "name": entry.name,
            "displayName": entry.display_name,
            "model": f"models/{entry.model}",
            "expireTime": expire.isoformat().replace("+00:00", "Z"),
            "usageMetadata": {"totalTokenCount": entry.tokens},
        }


def _name(request: web.Request) -> str:
    return f"cachedContents/{request.match_info['id']}"


def _json(body: dict[str, Any]) -> web.Response:
    return web.json_response(body)
