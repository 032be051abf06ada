"""Object-store locations (``s3://bucket/key``, ``gs://bucket/key``) among the job's paths.

A job's paths are :class:`~pathlib.Path` values, and a ``Path`` folds ``s3://b/k`` into
``s3:/b/k``; :func:`store_url` reads either form back as the URL. A local path never starts
with a scheme and a colon, so nothing local is taken for a URL.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

# The stores pyarrow.fs opens from a URL (S3 and GCS when pyarrow is built with them, as the
# wheels are); "gcs" is pyarrow's other name for "gs".
SCHEMES = ("s3", "gs", "gcs")
# Never shown: masked in any store error that would repeat one.
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_URL = re.compile(rf"^({'|'.join(SCHEMES)}):/+(?=[^/])")


def store_url(path: Path | str) -> str | None:
    """``scheme://rest`` when ``path`` names an object in a store, else None."""
    text = str(path)
    match = _URL.match(text)
    if match is None:
        return None
    return f"{match.group(1)}://{text[match.end() :]}"


class StoreError(Exception):
    """A store could not be reached or refused: its text is one line without secrets."""


def open_store(url: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``url`` (configured the store's standard way: for S3 ``AWS_*``
    variables or ~/.aws; for GCS application default credentials) and the path in it."""
    try:
        fs, inner = pafs.FileSystem.from_uri(url)
        return fs, str(inner)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise StoreError(said(exc)) from None


def said(exc: BaseException | str) -> str:
    """A store's error as one line, with any secret from the environment masked."""
    text = " ".join(str(exc).split())
    for name in SECRET_VARIABLES:
        secret = os.environ.get(name)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def read_bytes(path: Path) -> bytes:
    """A whole (small) file, local or in a store: a job's schema_file, say."""
    url = store_url(path)
    if url is None:
        return path.read_bytes()
    fs, inner = open_store(url)
    try:
        with fs.open_input_stream(inner) as stream:
            return bytes(stream.read())
    except (pa.ArrowException, OSError) as exc:
        raise StoreError(said(exc)) from None
