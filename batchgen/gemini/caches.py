"""The ``cachedContents`` client, and what a row's call needs of a live cache.

:class:`CachesClient` creates, reads, extends (``ttl``) and deletes explicit context caches
through the one :class:`~batchgen.gemini.transport.Transport` (docs/gemini-api.md §13).
:class:`CacheUse` is the cache a run's calls use: it turns a row's body into the cached variant
(:meth:`~batchgen.gemini.request.RequestBuilder.cached`) while the cache is usable, and once the
API refuses it (:func:`cache_refusal`) it is off for the rest of the run, said once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchgen.errors import FatalApiError
from batchgen.gemini.request import Body, Prefix, RequestBuilder
from batchgen.gemini.transport import ApiError, Transport

__all__ = ["CacheInfo", "CacheUse", "CachesClient", "cache_refusal"]

REFUSED_STATUS = frozenset({400, 403, 404})


@dataclass(frozen=True)
class CacheInfo:
    """A cache as the API describes it: its name, tokens, and expiry (RFC 3339)."""

    name: str
    tokens: int
    expire_time: str


class CachesClient:
    """cachedContents create/get/patch/delete for one model's API host."""

    def __init__(self, http: Transport) -> None:
        self._http = http
        m = http.model
        self._root = f"{m.base_url}/{m.api_version}/"

    async def create(self, prefix: Prefix, ttl_seconds: int) -> CacheInfo:
        answer = await self._http.request(
            "POST", self._root + "cachedContents", prefix.cache_body(ttl_seconds)
        )
        return _info(answer.body)

    async def get(self, name: str) -> CacheInfo:
        answer = await self._http.request("GET", self._root + name, named=True)
        return _info(answer.body)

    async def extend(self, name: str, ttl_seconds: int) -> CacheInfo:
        body = json.dumps({"ttl": f"{ttl_seconds}s"}).encode()
        answer = await self._http.request("PATCH", self._root + name, body, named=True)
        return _info(answer.body)

    async def delete(self, name: str) -> None:
        await self._http.request("DELETE", self._root + name, named=True)


class CacheUse:
    """The cache a run's calls use, while the API takes it.

    ``wire(body)`` is the body to send (the cached variant, or ``body`` itself when the cache
    is off or does not fit the row); ``refused(exc)`` turns a cache refusal off for good and
    tells ``note`` once.
    """

    def __init__(
        self, builder: RequestBuilder, prefix: Prefix, name: str, note: Callable[[str], None]
    ) -> None:
        self.builder, self.prefix, self.name = builder, prefix, name
        self.active = True
        self.why: str | None = None  # why the API refused it (None: it did not)
        self.used = 0  # calls sent with the cache
        self.note = note

    @property
    def holds_context(self) -> bool:
        """Whether rows are to be sent without the job's context parts (the cache, in use,
        holds them)."""
        return self.active and self.prefix.holds_context

    def wire(self, body: Body) -> Body | None:
        """The cached variant of ``body``, or None to send it as it is."""
        if not self.active:
            return None
        cached = self.builder.cached(body, self.prefix, self.name)
        if cached is not None:
            self.used += 1
        return cached

    def refused(self, why: str) -> None:
        if self.active:
            self.active = False
            self.why = why
            self.note(f"the API refused the context cache ({why}): the rest of the run is uncached")


def cache_refusal(exc: BaseException) -> str | None:
    """Why ``exc``, the failure of a call that named the cache, is the API refusing the cache,
    or None. A 403 or 404 (the transport's FatalApiError) is taken as one whatever it says (an
    expired cache is a 403 "CachedContent not found"): the row is sent again uncached, and if
    the refusal was not the cache's, that call meets it again. A 400 is one only when it names
    cached content (a 400 about the row's own request must not turn the cache off)."""
    if isinstance(exc, FatalApiError):
        return _first_line(str(exc))
    if not isinstance(exc, ApiError) or exc.status not in REFUSED_STATUS:
        return None
    lowered = str(exc).lower()
    if "cachedcontent" in lowered or "cached content" in lowered or "cached_content" in lowered:
        return _first_line(str(exc))
    return None


def _first_line(text: str) -> str:
    return (text.splitlines() or [""])[0][:160]


def _info(raw: bytes | bytearray) -> CacheInfo:
    try:
        payload: Any = json.loads(raw)
        name = payload["name"]
        tokens = int((payload.get("usageMetadata") or {}).get("totalTokenCount", 0))
        return CacheInfo(str(name), tokens, str(payload.get("expireTime", "")))
    except (ValueError, KeyError, TypeError):
        raise ApiError("bad_response", "cachedContents: HTTP 200 without a cache's name") from None
