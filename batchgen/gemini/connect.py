"""A client for a job, built in one place: the session it runs on, and the five settings it
takes from the job (model, key, timeout, body cap, longest server delay)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from batchgen.gemini.batch_client import BatchClient
from batchgen.gemini.caches import CachesClient
from batchgen.gemini.client import GeminiClient
from batchgen.gemini.transport import Transport, open_session
from batchgen.job.spec import Job, LimitsSpec, ModelSpec, RetrySpec

__all__ = ["client_for"]

C = TypeVar("C", GeminiClient, BatchClient, CachesClient)


@asynccontextmanager
async def client_for(
    job: Job | ModelSpec,
    api_key: str,
    kind: type[C],
    *,
    connections: int | None = None,
    timeout: float | None = None,
) -> AsyncIterator[C]:
    """A ``kind`` client for ``job``'s model on a session of its own, closed on leaving.

    Args:
        job: the job; or, for a command that has no job file (``batchgen cancel``), the model
            alone, with the default limits.
        api_key: the key, sent only in the ``x-goog-api-key`` header.
        kind: :class:`GeminiClient` (generateContent, countTokens), :class:`BatchClient`
            (Files, Batches) or :class:`CachesClient` (cachedContents).
        connections: at most this many connections open at once (None: aiohttp's 100).
        timeout: seconds a call may take, instead of the job's ``limits.timeout_seconds``.
    """
    model, limits, retry = (
        (job.model, job.limits, job.retry) if isinstance(job, Job)
        else (job, LimitsSpec(), RetrySpec())
    )  # fmt: skip
    async with open_session(connections) as session:
        yield kind(Transport(
            session, model, api_key,
            limits.timeout_seconds if timeout is None else timeout,
            max_response_bytes=limits.max_response_bytes,
            max_server_delay=retry.max_server_delay_seconds,
        ))  # fmt: skip
