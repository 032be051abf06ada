"""Media rows at send time: read each file when its row is sent, and decide per content what goes
inline and what through the Files API.

A content (by sha256) goes through the Files API, once, when it is over ``[media]
inline_max_mb``, when another row already sent it (it is shared), when the row's inline parts
would pass the API's request limit (the largest are uploaded until the rest fit), or always on
the batch tier (``force_upload``: JSONL lines name files). Each upload is recorded in
``OUTPUT/uploads.jsonl`` before a request names it, and reused by later rows and later runs
while it lives. A 403/404 naming one of those files means it is gone: :meth:`MediaSender.lost`
forgets it so the next build uploads it again, without spending the row's attempt.

Memory stays bounded: a request's media bytes are held only while it is built and sent, and at
most ``[media] memory_mb`` of them at once, counted as the request carries them (base64); a row
bigger than that waits to be alone, and what goes by fileData holds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from batchgen.gemini.batch_client import NOT_RELAYED, BatchClient
from batchgen.gemini.request import (
    STREAM_BLOCK,
    Body,
    Encoded,
    Part,
    RequestBuilder,
    file_part,
    inline_part,
    inline_size,
    streamed_part,
)
from batchgen.gemini.transport import ApiError
from batchgen.input.media import CONTEXT, BadMediaError, content_hash, media_blocks, read_media
from batchgen.job.spec import Job
from batchgen.plan import Plan
from batchgen.records import MediaRef, Work
from batchgen.store.uploads import LIFETIME, Uploaded, UploadRegistry

MAX_REQUEST_BYTES = 100 * 1000**2  # the API's limit on a whole request (docs/media.md)
REQUEST_HEADROOM = 1000**2  # left for the text, the schema and JSON around the parts
STREAM_HELD = 4 * STREAM_BLOCK  # what a file part streamed into a request holds at a time


__all__ = ["MediaCounts", "MediaFailedError", "MediaSender", "media_sender"]


class MediaFailedError(Exception):
    """A row's media cannot be sent (changed since the pre-scan, unreadable): the row fails as
    input; ``str()`` is its one line."""


@dataclass
class MediaCounts:
    """What the media of a run did: uploads made and reused, parts sent inline."""

    uploaded: int = 0
    uploaded_bytes: int = 0
    reused: int = 0
    inline: int = 0
    reuploaded: int = 0


class _Room:
    """A byte budget for media held in memory (a request over the budget waits to be alone)."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0 or self.used + size <= self.total)
            self.used += size
        try:
            yield
        finally:
            async with self._changed:
                self.used -= size
                self._changed.notify_all()


class MediaSender:
    """Builds the request of a media row when it is sent (see the module)."""

    def __init__(
        self,
        job: Job,
        builder: RequestBuilder,
        files: BatchClient,
        registry: UploadRegistry,
        *,
        force_upload: bool = False,
    ) -> None:
        self.job, self.builder, self.files, self.registry = job, builder, files, registry
        self.inline_max = int(job.media.inline_max_mb * 1000**2)
        self.force_upload = force_upload
        self.api = f"{job.model.base_url}/{job.model.api_version}"
        self.counts = MediaCounts()
        inflight = int(job.media.memory_mb * 1000**2)
        self._room = _Room(inflight)
        self._upload_room = _Room(inflight // 2)  # chunks of uploads in flight
        # contents sent inline once this run (shared from now on), as the first 8 bytes of their
        # sha256: an int, about 75 bytes a content (set slot included) instead of about 155 for
        # the hex string; a collision (odds ~n²/2⁶⁵) only uploads what could have gone inline
        self._seen: set[int] = set()
        self._uploading: dict[str, asyncio.Future[Uploaded]] = {}
        self._files_relayed = True

    @asynccontextmanager
    async def request(
        self, work: Work, context: bool = True
    ) -> AsyncIterator[tuple[Body, frozenset[str]]]:
        """The row's body and the Files API names it uses, held while the caller sends it
        (within the byte budget: raw bytes as the request carries them, a file's part as the
        blocks it is read in while the request is sent). ``context`` false: without the job's
        context parts (a context cache holds them)."""
        if not context:
            work = dataclasses.replace(work, media=_own(work.media))
        upload = self._to_upload(work.media)
        inline = [r for r in work.media if r not in upload and r.kind in ("path", "bytes")]
        held = sum(
            inline_size(r.size) if r.kind == "bytes" else min(inline_size(r.size), STREAM_HELD)
            for r in inline
        )
        async with self._room.hold(held):
            body, names = await self._build(work, upload)
            yield body, names

    async def _build(self, work: Work, upload: set[MediaRef]) -> tuple[Body, frozenset[str]]:
        assert work.text is not None
        try:
            context, media, names = await self._parts(work.media, upload)
        except BadMediaError as exc:
            raise MediaFailedError(f"row {work.row.row_id}: {exc}") from None
        user, system, examples = work.text
        body = self.builder.request(user, system, context, media, examples)
        return body, frozenset(names)

    async def built(self, work: Work, context: bool = True) -> Work:
        """The work with its whole request as its body (for a batch chunk file); ``context``
        as for :meth:`request`."""
        async with self.request(work, context) as (body, _):
            whole = body if isinstance(body, bytes) else b"".join(body.chunks())
            return dataclasses.replace(work, body=whole, media=(), text=None)

    async def context_parts(self, refs: tuple[MediaRef, ...]) -> list[bytes]:
        """The parts of the job's context files (``refs``) as a context cache holds them: a
        file the rows would upload (over ``inline_max_mb``, or to keep the request under the
        API's limit) by ``fileData``, uploaded once and recorded, so rows sent without the cache
        name the same upload; the rest inline, read whole (once, for the cache's creation)."""
        upload = self._to_upload(refs)
        parts: list[bytes] = []
        for ref in refs:
            try:
                if ref.kind in ("path", "bytes") and ref not in upload:
                    parts.append(b"".join(inline_part(ref.mime, read_media(ref))))
                    continue
                part, _ = await self._part(ref, upload=True)
            except BadMediaError as exc:
                raise MediaFailedError(f"prompt.context: {exc}") from None
            if not isinstance(part, bytes):  # the Files API is not relayed: inline after all
                part = b"".join(inline_part(ref.mime, read_media(ref)))
            parts.append(part)
        return parts

    def lost(self, exc: ApiError, names: frozenset[str]) -> bool:
        """Whether ``exc`` (a 403/404 naming a File) says one of ``names`` is gone; if so, it
        is forgotten (and uploaded again by the next build)."""
        if exc.category != "file_gone" or not names:
            return False
        gone = [n for n in names if n.removeprefix("files/") in exc.message] or list(names)
        for name in gone:
            self.registry.gone(name)
        self.counts.reuploaded += len(gone)
        return True

    def _to_upload(self, refs: tuple[MediaRef, ...]) -> set[MediaRef]:
        """The references to send by fileData whatever their content: over the inline limit,
        forced, or the largest of a row whose inline parts would pass the request limit."""
        local = [r for r in refs if r.kind in ("path", "bytes")]
        if self.force_upload:
            return set(local)
        upload = {r for r in local if r.size > self.inline_max}
        room = MAX_REQUEST_BYTES - REQUEST_HEADROOM
        left = sorted((r for r in local if r not in upload), key=lambda r: r.size, reverse=True)
        total = sum(inline_size(r.size) for r in left)
        for ref in left:
            if total <= room:
                break
            upload.add(ref)
            total -= inline_size(ref.size)
        return upload

    async def _parts(
        self, refs: tuple[MediaRef, ...], upload: set[MediaRef]
    ) -> tuple[list[Part], list[Part], list[str]]:
        context: list[Part] = []
        media: list[Part] = []
        names: list[str] = []
        for ref in refs:
            part, name = await self._part(ref, ref in upload)
            (context if ref.column == CONTEXT else media).append(part)
            if name:
                names.append(name)
        return context, media, names

    async def _part(self, ref: MediaRef, upload: bool) -> tuple[Part, str | None]:
        if ref.kind == "uri":
            assert ref.uri is not None
            return file_part(ref.mime, ref.uri), None
        if ref.kind == "file":
            assert ref.uri is not None
            return file_part(ref.mime, f"{self.api}/{ref.uri}"), ref.uri
        if upload and self._files_relayed:
            sha = await asyncio.to_thread(content_hash, ref)
            done = await self._uploaded(sha, ref, None)
            if done is not None:
                return file_part(done.mime, f"{self.api}/{done.name}"), done.name
        # a file is hashed (read in blocks) and, inline, read again as the request is sent:
        # its bytes are never held whole; raw bytes from the input already are
        data = ref.data
        sha = await asyncio.to_thread(content_hash, ref)
        key = int(sha[:16], 16)
        if key in self._seen or self.registry.live(sha) is not None:
            done = await self._uploaded(sha, ref, data)
            if done is not None:
                return file_part(done.mime, f"{self.api}/{done.name}"), done.name
        self._seen.add(key)
        self.counts.inline += 1
        if data is not None:
            return inline_part(ref.mime, data), None
        blocks = Encoded(ref.size, functools.partial(media_blocks, ref, STREAM_BLOCK))
        return streamed_part(ref.mime, blocks), None

    async def _uploaded(self, sha: str, ref: MediaRef, data: bytes | None) -> Uploaded | None:
        """The content's live upload, uploading it once (concurrent rows share the one upload);
        None when the Files API is not relayed (the part goes inline)."""
        found = self.registry.live(sha)
        if found is not None:
            self.counts.reused += 1
            return found
        pending = self._uploading.get(sha)
        if pending is not None:
            self.counts.reused += 1
            return await asyncio.shield(pending)
        future: asyncio.Future[Uploaded] = asyncio.get_running_loop().create_future()
        self._uploading[sha] = future
        try:
            entry = await self._upload(sha, ref, data)
        except ApiError as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a row waiting on it sees it, none is left unread
            if exc.category == NOT_RELAYED and ref.size <= self.inline_max:
                self._files_relayed = False
                return None
            raise
        finally:
            del self._uploading[sha]
        future.set_result(entry)
        return entry

    async def _upload(self, sha: str, ref: MediaRef, data: bytes | None) -> Uploaded:
        source: Path | bytes = data if data is not None else ref.data or Path(str(ref.path))
        shown = Path(ref.path).name if ref.path else f"{ref.column}-bytes"
        async with self._upload_room.hold(2 * min(ref.size, self.files.chunk_bytes)):
            info = await self.files.upload(source, f"{sha[:12]}-{shown}"[:500], ref.mime)
        expires = _when(info.expiration_time) or datetime.now(UTC) + LIFETIME
        uri = info.uri or f"{self.api}/{info.name}"
        entry = Uploaded(sha, info.name, uri, ref.mime, ref.size, expires)
        await asyncio.to_thread(self.registry.add, entry)
        self.counts.uploaded += 1
        self.counts.uploaded_bytes += ref.size
        return entry


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters
_M_ARENA_MAX = -8


def _big_buffers_mmapped() -> None:
    """Ask glibc to keep allocations of 1 MB and more in their own mappings, returned to the
    system when freed, and to use at most 2 heaps. By default glibc raises that threshold to the
    largest block freed so far (up to 32 MB), after which every file read and base64 body of a
    media run comes from the heaps (one per thread reading files) and stays in the RSS once
    freed: measured, 1.44× the RSS of a text run instead of 1.25× at 200 rows
    (benchmarks/media.py). Elsewhere (musl, macOS) it does nothing."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
        libc.mallopt(_M_ARENA_MAX, 2)


def media_sender(
    plan: Plan, output: Path, files: BatchClient, force_upload: bool = False
) -> MediaSender | None:
    """The run's media sender, when its job has media or context files."""
    if not plan.job.prompt.media and not plan.context:
        return None
    registry = UploadRegistry(output)
    if sys.platform == "linux":
        _big_buffers_mmapped()
    return MediaSender(plan.job, plan.builder, files, registry, force_upload=force_upload)


def _own(refs: tuple[MediaRef, ...]) -> tuple[MediaRef, ...]:
    """A row's own media: its references without the job's context files."""
    return tuple(r for r in refs if r.column != CONTEXT)


def _when(text: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
