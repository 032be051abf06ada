"""The write-ahead journal: every outcome on disk as it arrives, before any part file exists.

A segment is one file, ``journal/<run>-<seq>.wal``: a header line (``BGJ1``, the format) and
then frames. A frame is one Arrow IPC stream (schema and one record batch) of one kind of rows
(results, failure records or ledger entries), written with one ``write`` call and framed::

    kind (1 byte) | payload length (uint32 LE) | CRC-32 of the payload (uint32 LE) | payload

Arrow IPC keeps the rows typed exactly as the part files will hold them (no re-parsing of JSON
into timestamps and structs at compaction), and a frame of a few hundred rows costs one
conversion, not one per row. The length and checksum find a frame torn by a kill or a crash:
the reader keeps every whole frame before it and drops the rest.

Durability: a written frame survives the process being killed (it is in the kernel's page
cache); ``sync`` (fsync) makes it survive the machine, and the writer calls it in group commits.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from batchgen.atomic import fsync_dir
from batchgen.store.files import linked

MAGIC = b"BGJ1\n"
SUFFIX = ".wal"
_HEAD = struct.Struct("<cII")
KINDS = {b"r": "results", b"e": "errors", b"u": "usage"}
_CODES = {name: code for code, name in KINDS.items()}


class JournalFormatError(Exception):
    """A segment written by a newer batchgen, or not a journal at all."""


def encode(kind: str, table: pa.Table) -> bytes:
    """One frame holding ``table`` as rows of ``kind`` (results, errors or usage)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload: bytes = sink.getvalue().to_pybytes()
    return _HEAD.pack(_CODES[kind], len(payload), zlib.crc32(payload)) + payload


@dataclass
class Segment:
    """What a segment holds: its whole frames by kind, and whether a torn tail was dropped."""

    tables: dict[str, list[pa.Table]] = field(default_factory=dict)
    torn: bool = False

    def table(self, kind: str) -> pa.Table | None:
        """The rows of one kind, in the order written (None when there are none)."""
        tables = self.tables.get(kind)
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="default")


def read_segment(path: Path) -> Segment:
    """Every whole frame of a segment; a torn or corrupt tail is dropped (``torn``)."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):  # killed while writing the header: nothing in it yet
            return Segment(torn=bool(data))
        if data.startswith(MAGIC[:3]):  # BGJ2 and later: refuse rather than guess
            raise JournalFormatError(
                f"{path}: journal format {data[:4].decode(errors='replace')} is newer than this "
                "batchgen reads; upgrade batchgen to resume this output"
            )
        raise JournalFormatError(f"{path}: not a batchgen journal segment; move it aside")
    segment = Segment()
    for kind, payload in _frames(data, len(MAGIC)):
        if payload is None:
            segment.torn = True
            break
        segment.tables.setdefault(kind, []).append(pa.ipc.open_stream(payload).read_all())
    return segment


def _frames(data: bytes, at: int) -> Iterator[tuple[str, bytes | None]]:
    """(kind, payload) of each frame; payload None at a torn or corrupt frame."""
    while at < len(data):
        if at + _HEAD.size > len(data):
            yield "", None
            return
        code, length, crc = _HEAD.unpack_from(data, at)
        start = at + _HEAD.size
        payload = data[start : start + length]
        if code not in KINDS or len(payload) < length or zlib.crc32(payload) != crc:
            yield "", None
            return
        yield KINDS[code], payload
        at = start + length


class JournalWriter:
    """Appends frames to numbered segments of one run; ``roll`` closes one and starts the next."""

    def __init__(self, folder: Path, run_id: str) -> None:
        self.folder = folder
        self.run_id = run_id
        self.seq = 0
        self._fd: int | None = None
        self.path: Path | None = None
        self.dirty = False  # written since the last sync

    def append(self, frames: list[bytes]) -> None:
        """Write frames (one ``write`` each) to the open segment, opening one if needed."""
        if self._fd is None:
            self._open()
        assert self._fd is not None
        for frame in frames:
            view = memoryview(frame)
            while view:  # os.write may write less than asked
                view = view[os.write(self._fd, view) :]
        self.dirty = True

    def sync(self) -> None:
        """Make what was written durable (fsync)."""
        if self._fd is not None and self.dirty:
            os.fsync(self._fd)
            self.dirty = False

    def roll(self) -> Path | None:
        """Sync and close the open segment; return it (None when nothing was written)."""
        if self._fd is None:
            return None
        self.sync()
        os.close(self._fd)
        self._fd = None
        closed, self.path = self.path, None
        return closed

    def _open(self) -> None:
        self.seq += 1
        self.path = self.folder / f"{self.run_id}-{self.seq:05d}{SUFFIX}"
        try:  # O_EXCL: a new segment, never a link planted under its name
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except FileExistsError:
            if self.path.is_symlink():
                raise linked(self.path) from None
            raise
        os.write(self._fd, MAGIC)
        fsync_dir(self.folder)  # the segment's name survives a crash, not only its bytes
