"""A ``str -> bytes`` table whose values live in an unlinked file on local disk: only positions stay in memory.

The API's catalog table held each item's packed JSON in a dict: at 1M items ~167 MB of ``bytes``
objects and ~31 MB of dict per worker (bench/RESULTS.md, "Memory per API worker at 1M items").
``SpilledValues`` keeps the same mapping with the values appended to a temporary file (unlinked at
once: nothing is left behind, even after ``kill -9``) and, in memory, the keys (the same ``str``
objects the caller passes, shared with whoever else holds them), their ``IdIndex`` and two small
arrays per key: where the value is in the file (offset and length in one ``int64``) and when the
key was last added (so ``items`` keeps a dict's order). ~42 B per key instead of ~200 (42 MB at 1M keys).

It answers as the dict it replaces: ``get``, ``in``, ``len``, ``items`` / ``keys`` / ``values`` in
the dict's order (first insertion; a key deleted and set again moves to the end; a replaced value
keeps its place), ``pop`` and ``del``. A read is an ``IdIndex`` probe and one ``os.pread`` (the
kernel's page cache; ~2 µs). A changed value is appended (the old bytes stay until a compaction),
and once the file holds ``compact_ratio`` times the live bytes (and at least ``compact_min_bytes``
more), the live values are copied to a new file in one pass.

Concurrency: one writer; ``get`` and ``items`` may run on other threads meanwhile. The file and the
location array are one tuple replaced whole (a compaction, a growth), a value's location is one
``int64`` written after its bytes, and a file is never overwritten in place, so a reader sees the
value before or after a change, never a mix.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from numpy.typing import NDArray

from operators.id_index import IdIndex

__all__ = ["SpilledValues"]

_LEN_BITS = 28
_LEN_MASK = (1 << _LEN_BITS) - 1
"""A location is ``offset << 28 | length``: values up to 256 MB, files up to 32 GB."""
_ABSENT = -1
_COPY_BYTES = 1 << 20  # a compaction writes the live values in chunks of about this size


class SpilledValues:
    """``key -> value bytes`` with the values in a file under ``directory`` (a dict's mapping and order).

    Parameters
    ----------
    directory : Path
        Where the temporary file is made (created if missing); local disk, not a RAM filesystem, or
        the values are held in memory again.
    compact_ratio : float
        Compact once the file is this many times the live values' bytes (changed and deleted values
        are dead bytes until then).
    compact_min_bytes : int
        ... and at least this many bytes are dead.

    Raises
    ------
    ValueError
        From ``__setitem__``, if a value is 256 MB or longer.

    Examples
    --------
    >>> import tempfile
    >>> t = SpilledValues(Path(tempfile.mkdtemp()))
    >>> t["a"], t["b"] = b"1", b"2"
    >>> del t["a"]
    >>> t["a"] = b"3"
    >>> list(t.items()), t.get("z"), len(t)
    ([('b', b'2'), ('a', b'3')], None, 2)
    """

    def __init__(self, directory: Path, *, compact_ratio: float = 2.0, compact_min_bytes: int = 64 << 20) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.compact_ratio, self.compact_min_bytes = compact_ratio, compact_min_bytes
        self._keys: list[str] = []
        self._index = IdIndex(self._keys)
        self._state: tuple[IO[bytes], NDArray[np.int64]] = (self._new_file(), np.full(64, _ABSENT, dtype=np.int64))
        self._order = np.zeros(64, dtype=np.int64)  # position -> when its key was last added (dict order)
        self._added = 0
        self._end = 0  # bytes written to the current file
        self._live_bytes = 0
        self._n_live = 0
        self.n_compactions = 0

    def _new_file(self) -> IO[bytes]:
        """An unlinked temporary file (closed when the last reader drops it)."""
        return tempfile.TemporaryFile(dir=self.directory, prefix="spilled-")

    # ---- reads (any thread) ------------------------------------------------------------------------

    def get(self, key: str, default: bytes | None = None) -> bytes | None:
        """The value of ``key``, or ``default``."""
        pos = self._index.get(key)
        if pos is None:
            return default
        file, loc = self._state
        at = int(loc[pos]) if pos < len(loc) else _ABSENT
        return default if at < 0 else _read(file, at)

    def __getitem__(self, key: str) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        pos = self._index.get(key)
        loc = self._state[1]
        return pos is not None and pos < len(loc) and loc[pos] >= 0

    def __len__(self) -> int:
        return self._n_live

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def _live_positions(self) -> tuple[IO[bytes], NDArray[np.int64], NDArray[np.int64]]:
        """(file, locations, live positions in the dict's order) as of now."""
        file, loc = self._state
        order = self._order
        n = min(len(self._keys), len(loc), len(order))
        live = np.flatnonzero(loc[:n] >= 0)
        return file, loc, live[np.argsort(order[live], kind="stable")]

    def keys(self) -> Iterator[str]:
        """Keys held, in the dict's order."""
        keys = self._keys
        return (keys[p] for p in self._live_positions()[2].tolist())

    def items(self) -> Iterator[tuple[str, bytes]]:
        """(key, value) of every key held, in the dict's order (values read as the iteration reaches them; a
        key changed meanwhile gives its value as of the last change)."""
        file, loc, positions = self._live_positions()
        keys = self._keys
        for p in positions.tolist():
            at = int(loc[p])
            if at >= 0:
                yield keys[p], _read(file, at)

    def values(self) -> Iterator[bytes]:
        """Values held, in the dict's order."""
        return (v for _, v in self.items())

    # ---- writes (one thread) -----------------------------------------------------------------------

    def __setitem__(self, key: str, value: bytes) -> None:
        n = len(value)
        if n > _LEN_MASK:
            raise ValueError(f"value of {key!r}: {n} bytes; at most {_LEN_MASK} can be spilled")
        pos = self._index.add(key)
        file, loc = self._state
        if pos >= len(loc):
            loc = self._grow(pos + 1)
        os.pwrite(file.fileno(), value, self._end)  # the bytes first: a reader that finds the location reads them
        old = int(loc[pos])
        loc[pos] = (self._end << _LEN_BITS) | n
        self._end += n
        self._live_bytes += n
        if old >= 0:
            self._live_bytes -= old & _LEN_MASK
        else:
            self._n_live += 1
            self._order[pos] = self._added
            self._added += 1
        self._maybe_compact()

    def pop(self, key: str, default: bytes | None = None) -> bytes | None:
        """Remove ``key``; its value, or ``default`` if it was not held."""
        pos = self._index.get(key)
        file, loc = self._state
        if pos is None or pos >= len(loc) or loc[pos] < 0:
            return default
        at = int(loc[pos])
        value = _read(file, at)
        loc[pos] = _ABSENT
        self._live_bytes -= at & _LEN_MASK
        self._n_live -= 1
        self._maybe_compact()
        return value

    def __delitem__(self, key: str) -> None:
        if self.pop(key) is None:
            raise KeyError(key)

    def _grow(self, size: int) -> NDArray[np.int64]:
        """Room for ``size`` positions (capacity doubled): new arrays, the state replaced whole."""
        file, loc = self._state
        cap = max(size, 2 * len(loc))
        grown = np.full(cap, _ABSENT, dtype=np.int64)
        grown[: len(loc)] = loc
        order = np.zeros(cap, dtype=np.int64)
        order[: len(self._order)] = self._order
        self._order = order
        self._state = (file, grown)
        return grown

    def _maybe_compact(self) -> None:
        dead = self._end - self._live_bytes
        if dead >= self.compact_min_bytes and self._end > self.compact_ratio * self._live_bytes:
            self.compact()

    def compact(self) -> None:
        """Copy the live values to a new file (in position order) and read from it from now on."""
        file, loc = self._state
        new_file, new_loc = self._new_file(), np.full(len(loc), _ABSENT, dtype=np.int64)
        fd, end, chunk = new_file.fileno(), 0, bytearray()
        for p in np.flatnonzero(loc >= 0).tolist():
            at = int(loc[p])
            value = _read(file, at)
            new_loc[p] = ((end + len(chunk)) << _LEN_BITS) | len(value)
            chunk += value
            if len(chunk) >= _COPY_BYTES:
                os.pwrite(fd, chunk, end)
                end += len(chunk)
                chunk = bytearray()
        if chunk:
            os.pwrite(fd, chunk, end)
            end += len(chunk)
        self._state = (new_file, new_loc)  # the old file closes when its last reader drops it
        self._end = self._live_bytes = end
        self.n_compactions += 1

    @property
    def file_bytes(self) -> int:
        """Bytes in the current file (live values and the dead ones not compacted yet)."""
        return self._end


def _read(file: IO[bytes], at: int) -> bytes:
    """The value at location ``at`` of ``file``."""
    n = at & _LEN_MASK
    value = os.pread(file.fileno(), n, at >> _LEN_BITS)
    if len(value) != n:  # never for a location the table wrote
        raise OSError(f"spilled value: {len(value)} of {n} bytes read at offset {at >> _LEN_BITS}")
    return value
