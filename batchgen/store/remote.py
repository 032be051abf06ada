"""An output in an object store (``s3://bucket/out``, ``gs://…``): a local mirror that is the
working copy, and the store that holds the output.

A store has no append and no fsync, so the write-ahead journal cannot live there. The run works
on a local staging directory (``$BATCHGEN_CACHE_DIR/outputs/<hash of the URL>``, else
``~/.cache/batchgen/outputs/…``) that is an ordinary output directory (journal, lock, parts,
``job.json``, ``runs.jsonl``: every local guarantee holds there), and after each compaction the
store is made to mirror it (:meth:`MirroredOutput.publish`): new and grown files are uploaded
whole, files removed locally (error parts folded into one, an output moved aside by ``--fresh``)
are deleted. Part files are immutable and uniquely named, so an upload is never half seen: an
object appears whole when its PUT ends. The journal and the local lock are never uploaded.

Before a run (and for ``status`` and ``report``) the store's files are pulled into the mirror:
the done state is read from the store's parts, as a fresh machine sees it. A kill loses at most
the journal's uncompacted tail on this machine (``output.flush_rows``/``flush_seconds``): a rerun
here folds and uploads it; a rerun elsewhere buys those rows again.

The lock (:class:`StoreLock`): an object ``.lock`` created only if absent, where the store can
(S3's conditional ``PUT`` with ``If-None-Match: *``, through boto3, the ``s3`` extra); else a
best-effort lock with a warning that two runs started at the same moment could both write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from batchgen.atomic import write_bytes_atomically
from batchgen.errors import BatchgenWarning, CheckpointError
from batchgen.job.location import StoreError, open_store, said, store_url
from batchgen.store.layout import JOB_FILE, JOURNAL_DIR, LOCK_FILE
from batchgen.store.lock import left_by_dead_run, lock_record, output_lock
from batchgen.store.outdir import OutputDir

CACHE_ENV = "BATCHGEN_CACHE_DIR"
_LOCAL_ONLY = (JOURNAL_DIR, LOCK_FILE)  # never uploaded
_STORE_ERRORS = (pa.ArrowException, OSError, StoreError)


def staging_dir(url: str) -> Path:
    """The local mirror of the output at ``url``."""
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "batchgen"
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:20]
    return Path(base) / "outputs" / digest


class Store:
    """The output's folder in the store: list, download, upload, delete."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        try:
            self.fs, root = open_store(self.url)
        except StoreError as exc:
            raise CheckpointError(f"{self.url}: cannot open the store: {exc}") from None
        self.root = root.rstrip("/")
        bucket = self.root.split("/", 1)[0]
        if self._info(bucket).type == pafs.FileType.NotFound:
            raise CheckpointError(
                f"{self.url}: the bucket {bucket!r} does not exist (or these credentials "
                "cannot see it); create it or fix the output URL"
            )

    def _info(self, path: str) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(path)
        except _STORE_ERRORS as exc:
            raise self.error("cannot read", exc) from None

    def error(self, doing: str, exc: BaseException) -> CheckpointError:
        return CheckpointError(f"{self.url}: {doing}: {said(exc)}")

    def listing(self) -> dict[str, int]:
        """Relative path → size of every file under the output."""
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except _STORE_ERRORS as exc:
            raise self.error("cannot list", exc) from None
        start = len(self.root) + 1
        return {i.path[start:]: i.size or 0 for i in infos if i.type == pafs.FileType.File}

    def download(self, relative: str, target: Path) -> None:
        try:
            with self.fs.open_input_stream(f"{self.root}/{relative}") as stream:
                data = bytes(stream.read())
        except _STORE_ERRORS as exc:
            raise self.error(f"cannot read {relative}", exc) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(target, data)

    def upload(self, source: Path, relative: str) -> None:
        try:
            data = source.read_bytes()
            with self.fs.open_output_stream(f"{self.root}/{relative}") as stream:
                stream.write(data)
        except FileNotFoundError:
            return  # removed meanwhile (a part folded away): the next publish deletes it
        except _STORE_ERRORS as exc:
            raise self.error(
                f"cannot write {relative} (the answers stay in the local mirror; rerun to "
                "upload them)",
                exc,
            ) from None

    def delete(self, relative: str) -> None:
        try:
            self.fs.delete_file(f"{self.root}/{relative}")
        except FileNotFoundError:
            pass
        except _STORE_ERRORS as exc:
            raise self.error(f"cannot delete {relative}", exc) from None

    def read_text(self, relative: str) -> str | None:
        try:
            with self.fs.open_input_stream(f"{self.root}/{relative}") as stream:
                return bytes(stream.read()).decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        except _STORE_ERRORS as exc:
            raise self.error(f"cannot read {relative}", exc) from None


def _local_files(root: Path) -> dict[str, int]:
    """Relative path → size of the mirror's files that belong in the store."""
    found = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        top = relative.split("/", 1)[0]
        if top in _LOCAL_ONLY or path.name.startswith(".") or not path.is_file():
            continue
        found[relative] = path.stat().st_size
    return found


class MirroredOutput(OutputDir):
    """An output in a store, worked on through its local mirror (an :class:`OutputDir`)."""

    def __init__(self, url: str) -> None:
        self.store = Store(url)
        self.url = self.store.url
        self._publishing = threading.Lock()  # the writer's thread and the batch steps both publish
        super().__init__(staging_dir(self.url))

    def __str__(self) -> str:
        return self.url

    def pull(self) -> None:
        """Bring the store's files into the mirror (the store's copy wins for a file in both)."""
        remote = self.store.listing()
        if JOB_FILE not in remote and (self.path / JOB_FILE).exists():
            # the output was removed from the store: what the mirror holds is not its past
            _clear(self.path)
        local = _local_files(self.path) if self.path.exists() else {}
        for relative, size in remote.items():
            top = relative.split("/", 1)[0]
            if top in _LOCAL_ONLY or relative.rsplit("/", 1)[-1].startswith("."):
                continue
            if local.get(relative) != size:
                self.store.download(relative, self.path / relative)

    def publish(self) -> None:
        """Make the store mirror the local copy: upload new or changed files, delete gone ones."""
        with self._publishing:
            self._publish()

    def _publish(self) -> None:
        remote = self.store.listing()
        local = _local_files(self.path)
        for relative, size in sorted(local.items()):
            if remote.get(relative) != size:
                self.store.upload(self.path / relative, relative)
        for relative in remote:
            top = relative.split("/", 1)[0]
            if relative not in local and top not in _LOCAL_ONLY and not top.startswith("."):
                self.store.delete(relative)

    def named(self, exc: CheckpointError) -> CheckpointError:
        local = str(self.path)
        parts = [p.replace(local, self.url) if isinstance(p, str) else p for p in exc.parts]
        return CheckpointError(*parts)

    def compact(self, segment: Path) -> dict[str, int]:
        counts = super().compact(segment)
        self.publish()
        return counts

    def compact_errors(self, run_id: str) -> None:
        super().compact_errors(run_id)
        self.publish()

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return _both(StoreLock(self.store), output_lock(self.path))


def _clear(folder: Path) -> None:
    """Empty the mirror, but for its lock (held by this run, or by a run here now)."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.parent == folder and path.name.startswith(LOCK_FILE):
            continue
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()


@contextlib.contextmanager
def _both(
    first: contextlib.AbstractContextManager[None], second: contextlib.AbstractContextManager[None]
) -> Iterator[None]:
    with first, second:
        yield


def open_output(directory: Path, pull: bool = True) -> OutputDir:
    """The output at ``directory``: a local directory, or a store's output through its mirror
    (pulled first unless ``pull`` is False, so that what it holds is the store's)."""
    url = store_url(directory)
    if url is None:
        return OutputDir(directory)
    out = MirroredOutput(url)
    out.path.mkdir(parents=True, exist_ok=True)
    if pull:
        out.pull()
    return out


def local_view(directory: Path) -> Path:
    """Where to read the output at ``directory``: itself, or a store output's pulled mirror."""
    return open_output(directory).path


def store_lock_holder(directory: Path) -> dict[str, Any] | None:
    """The lock record of a store's output (its writer's pid, host, start), or None when there
    is none or it is a killed run's on this host (another host's is taken as live)."""
    url = store_url(directory)
    if url is None:
        return None
    text = Store(url).read_text(LOCK_FILE)
    try:
        holder = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(holder, dict):
        return None
    return None if left_by_dead_run(holder) else holder


class StoreLock:
    """The output's ``.lock`` object in the store; see the module's docstring for what it can
    promise."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.key = f"{store.root}/{LOCK_FILE}"
        self.me = {
            **lock_record(),
            "token": uuid.uuid4().hex,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def __enter__(self) -> None:
        body = json.dumps(self.me).encode()
        conditional = _conditional_put(self.store.url)
        for _ in range(2):
            if conditional is not None:
                if conditional(self.key, body):
                    return
            elif self.store.read_text(LOCK_FILE) is None:
                warnings.warn(
                    BatchgenWarning(
                        f"{self.store.url}: this store cannot create an object only if it is "
                        "absent, so its lock is best effort: two runs started at the same "
                        "moment could both write; start one run per output"
                    ),
                    stacklevel=2,
                )
                self._write(body)
                return
            self._refuse_or_clear()
        raise CheckpointError(f"{self.store.url}/{LOCK_FILE}: could not take the lock; retry")

    def _write(self, body: bytes) -> None:
        try:
            with self.store.fs.open_output_stream(self.key) as stream:
                stream.write(body)
        except _STORE_ERRORS as exc:
            raise self.store.error("cannot write the lock", exc) from None

    def _refuse_or_clear(self) -> None:
        """A lock is there: take it over when it is this host's and its process is gone."""
        text = self.store.read_text(LOCK_FILE)
        if text is None:
            return  # released meanwhile
        try:
            holder = json.loads(text)
        except ValueError:
            holder = {}
        pid, host = holder.get("pid"), holder.get("host")
        if left_by_dead_run(holder):
            self.store.delete(LOCK_FILE)
            return
        raise CheckpointError(
            f"{self.store.url}: another run (pid {pid} on {host}, since {holder.get('at')}) is "
            f"writing this output; wait for it, or delete {self.store.url}/{LOCK_FILE} if "
            "that run is gone"
        )

    def __exit__(self, *exc: object) -> None:
        text = self.store.read_text(LOCK_FILE)
        with contextlib.suppress(ValueError):
            if text is not None and json.loads(text).get("token") == self.me["token"]:
                self.store.delete(LOCK_FILE)


def _conditional_put(url: str) -> Any:
    """A function (key, body) → created?, for a store that can create only if absent (S3 with
    boto3 installed); else None."""
    if not url.startswith("s3://"):
        return None
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        return None
    client = boto3.client("s3")

    def put(key: str, body: bytes) -> bool:
        bucket, name = key.split("/", 1)
        try:
            client.put_object(Bucket=bucket, Key=name, Body=body, IfNoneMatch="*")
        except botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412):
                return False
            raise CheckpointError(f"{url}: cannot write the lock: {said(exc)}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise CheckpointError(f"{url}: cannot write the lock: {said(exc)}") from None
        return True

    return put
