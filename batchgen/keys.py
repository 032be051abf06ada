"""64-bit keys of row ids and request hashes: how done state and the id check stay compact.

A resumed run must know which of millions of rows are done. Python sets of strings cost ~100
bytes a row; a sorted NumPy array of 64-bit keys costs 8, and membership of a whole record batch
is one vectorised ``searchsorted``. Two different ids share a key with probability ~n²/2⁶⁵
(about 1 in 10¹⁰ at two million rows); where that would matter (the duplicate-id check) the
strings themselves are compared before anything is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b

import numpy as np
import numpy.typing as npt
import pyarrow as pa

Keys = npt.NDArray[np.uint64]
EMPTY: Keys = np.zeros(0, dtype=np.uint64)
_NULL = bytes(8)  # a null id's digest: key 0


def key_of(text: str) -> int:
    """The 64-bit key of one id (blake2b: stable across processes, unlike ``hash``)."""
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "little")


def keys_of(values: pa.Array | pa.ChunkedArray | Iterable[str | None]) -> Keys:
    """The keys of many ids, in order (a null id gets key 0); the same as :func:`key_of` of
    each, read as one buffer of little-endian digests (~1.3x faster than an int per id)."""
    items = values.to_pylist() if isinstance(values, pa.Array | pa.ChunkedArray) else values
    digests = b"".join(
        blake2b(str(v).encode(), digest_size=8).digest() if v is not None else _NULL for v in items
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def contains(table: Keys, keys: Keys) -> npt.NDArray[np.bool_]:
    """For each of ``keys``, whether it is in the sorted ``table`` (bisection, vectorised)."""
    if not len(table) or not len(keys):
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(table, keys)
    at[at == len(table)] = 0
    found: npt.NDArray[np.bool_] = table[at] == keys
    return found


def count_contained(table: Keys, keys: Keys, upto: int | None = None) -> int:
    """How many of the first ``upto`` of ``keys`` are in the sorted ``table``, a block at a
    time (bisection's temporaries stay a few MB at any size)."""
    end = len(keys) if upto is None else min(upto, len(keys))
    step = 1 << 18
    blocks = (keys[i : min(end, i + step)] for i in range(0, end, step))
    return sum(int(contains(table, block).sum()) for block in blocks)
