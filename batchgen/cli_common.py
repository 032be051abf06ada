"""What the commands that call the API share: where to send the job, and with which key."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace

from batchgen.errors import JobError
from batchgen.job import Job

EMULATOR_KEY = "emulator-key"  # what --emulator sends when the key's variable is unset


@contextlib.contextmanager
def api_target(job: Job, emulator: bool, alternative: str) -> Iterator[tuple[Job, str]]:
    """The job and its key: the built-in emulator on 127.0.0.1, or the API with the key from
    the environment variable the job names (a JobError saying ``alternative`` when unset)."""
    if not emulator:
        key = os.environ.get(job.model.api_key_env, "").strip()
        if not key:
            raise JobError(
                f"{job.path}: no API key: set ${job.model.api_key_env} (model.api_key_env), "
                f"or {alternative}"
            )
        yield job, key
        return
    from batchgen.emulator import EmulatorThread

    with EmulatorThread() as server:
        local = replace(job, model=replace(job.model, base_url=server.base_url))
        yield local, os.environ.get(job.model.api_key_env) or EMULATOR_KEY
