"""A compacted topic materialised on local disk: one RocksDB per API process (like a Kafka Streams global table).

=================  ======================  ===============================================
column family      key                     value
=================  ======================  ===============================================
default            key of the message      the message's value, raw (decoded when read)
meta               ``o:`` + partition      next offset to read (int64 big-endian)
=================  ======================  ===============================================

One writer: the process's reader thread. The values and the offsets they reflect are written in
one batch, so a restarted process resumes from its stored offsets and reads only the tail.
Writes skip the write-ahead log (the topic is the log: a cold load of 1M lists spent 40 % of
its write time there) and both column families are flushed atomically, so after a crash the
store is the state of some earlier batch, values and offsets alike, and the reader re-reads the
topic from those offsets; a clean close flushes the memtables.
Memory is bounded by the block cache and the write buffers, whatever the number of keys.
A store that starts empty (a new node) is filled in bulk-load mode (``begin_bulk_load``): no
automatic compactions and larger write buffers until its reader has caught up, then the
configured ones again, and RocksDB compacts the loaded files in its background threads (a cold
load of 1M lists: ~5 s of CPU, mostly flushes waiting on compactions, down to ~2.5 s).
Several processes on one host each take a free slot directory (``slot-0``, ``slot-1``, ...,
held by a ``flock``), so a restarted worker reuses a slot another one left.

A store can be copied as files: ``checkpoint`` writes a consistent copy (RocksDB's checkpoint:
memtables flushed atomically, SST files hard-linked; values and offsets of the same batch) and
``restore`` makes an empty store that copy (a new node starts from another node's files and
reads only the topic's tail: ``api/topn_checkpoint.py``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    Checkpoint,
    DbClosedError,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from state import keys

__all__ = ["ServingOptions", "ServingStore", "OFFSET"]

OFFSET = b"o:"


@dataclass(frozen=True, slots=True)
class ServingOptions:
    """Memory knobs of a serving store (bytes): the block cache holds hot values, the write buffers recent
    writes; index and filter blocks stay with their open files (about 1-2 % of the data: kept out of the
    cache, where a cache smaller than the data made every lookup re-read an index block, ~0.3 ms)."""

    block_cache_bytes: int = 64 * 1024 * 1024
    write_buffer_bytes: int = 16 * 1024 * 1024
    max_write_buffers: int = 2
    bulk_write_buffer_bytes: int = 64 * 1024 * 1024
    """Write buffer size while an empty store is bulk-loaded (``ServingStore.begin_bulk_load``)."""
    bulk_max_write_buffers: int = 4

    def to_rocksdict(self) -> Options:
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        opts.set_write_buffer_size(self.write_buffer_bytes)
        opts.set_max_write_buffer_number(self.max_write_buffers)
        opts.set_atomic_flush(True)  # values and offsets (two column families) reach disk together: no WAL needed
        table = BlockBasedOptions()
        table.set_block_cache(Cache(self.block_cache_bytes))
        table.set_cache_index_and_filter_blocks(False)  # index / filters held per open file (~1-2 % of the data), not thrashed
        table.set_bloom_filter(10, False)
        opts.set_block_based_table_factory(table)
        return opts


class ServingStore:
    """Latest value per key of one topic, on disk, with the offsets it reflects.

    Parameters
    ----------
    root : Path
        Directory under which the slot directories live (e.g. ``serving_dir/<topic>``).
    options : ServingOptions, optional

    Raises
    ------
    RuntimeError
        If 64 slots are all held by other processes.
    """

    def __init__(self, root: Path, options: ServingOptions | None = None) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = -1
        for slot in range(64):
            fd = os.open(root / f"slot-{slot}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._lock_fd, self.path = fd, root / f"slot-{slot}"
            break
        else:
            raise RuntimeError(f"{root}: all 64 serving-store slots are held by other processes")
        self._options = options or ServingOptions()
        self._write_opts = WriteOptions()
        self._write_opts.disable_wal = True  # a crash loses at most the unflushed tail, values and offsets alike
        self._open()
        self.bulk_loading = False

    def _open(self) -> None:
        cf = {"meta": Options(raw_mode=True)}
        self._db = Rdict(str(self.path), options=self._options.to_rocksdict(), column_families=cf,
                         access_type=AccessType.read_write())
        self._meta = self._db.get_column_family("meta")
        self._meta_handle = self._db.get_column_family_handle("meta")

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._db.get(key)
        except DbClosedError:  # ``restore`` is replacing the files: not ready, nothing to serve yet
            return None

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Stored (key, value) pairs whose key starts with ``prefix``, in key order."""
        it = self._db.iter()
        it.seek(prefix)
        while it.valid() and it.key().startswith(prefix):
            yield it.key(), it.value()
            it.next()

    def offsets(self) -> dict[int, int]:
        """Next offset to read per partition, as last written."""
        out = {}
        it = self._meta.iter()
        it.seek(OFFSET)
        while it.valid() and it.key().startswith(OFFSET):
            out[int(it.key()[len(OFFSET):])] = keys.decode_int(it.value())
            it.next()
        return out

    def write(self, changes: Iterable[tuple[bytes, bytes | None]], offsets: dict[int, int]) -> None:
        """Put (or, for ``None``, delete) values and set the partitions' next offsets, in one batch."""
        batch = WriteBatch(raw_mode=True)
        for k, v in changes:
            if v is None:
                batch.delete(k)
            else:
                batch.put(k, v)
        for p, off in offsets.items():
            batch.put(OFFSET + str(p).encode(), keys.encode_int(off), self._meta_handle)
        self._db.write(batch, self._write_opts)

    def is_empty(self) -> bool:
        """Nothing stored yet: no value and no offset (a new node's store)."""
        it = self._db.iter()
        it.seek_to_first()
        return not it.valid() and not self.offsets()

    def begin_bulk_load(self) -> None:
        """Until ``end_bulk_load``: no automatic compactions, ``bulk_*`` write buffers (a first fill)."""
        o = self._options
        self._db.set_options({"disable_auto_compactions": "true", "write_buffer_size": str(o.bulk_write_buffer_bytes),
                              "max_write_buffer_number": str(o.bulk_max_write_buffers)})
        self.bulk_loading = True

    def end_bulk_load(self) -> None:
        """Back to the configured write buffers and automatic compactions (run in RocksDB's background threads)."""
        if not self.bulk_loading:
            return
        o = self._options
        self._db.set_options({"write_buffer_size": str(o.write_buffer_bytes),
                              "max_write_buffer_number": str(o.max_write_buffers), "disable_auto_compactions": "false"})
        self.bulk_loading = False

    def checkpoint(self, target: Path) -> dict[int, int]:
        """Write a consistent copy of the store to the new directory ``target``; returns its offsets.

        Call on the writer's thread (between two ``write``s): the memtables of both column families
        are flushed atomically first, so the copy holds the values of every write so far and the
        offsets they reflect. The SST files are hard links (same filesystem: no data copied).

        Raises
        ------
        Exception
            RocksDB's error if ``target`` exists or cannot be written.
        """
        offsets = self.offsets()
        Checkpoint(self._db).create_checkpoint(str(target))
        return offsets

    def restore(self, source: Path) -> None:
        """Make this (empty) store the copy in ``source`` (a ``checkpoint``): the files are moved
        into the store's directory and it is opened again; returns once it serves them.

        Call on the writer's thread. ``get`` answers None while the files are swapped.

        Raises
        ------
        ValueError
            If the store is not empty (a restore never replaces data a reader wrote).
        Exception
            RocksDB's error if ``source`` is not a store (the empty store is opened again first).
        """
        if not self.is_empty():
            raise ValueError(f"{self.path}: restore into a store that is not empty")
        bulk = self.bulk_loading
        self._meta = None  # type: ignore[assignment]
        self._meta_handle = None
        self._db.close()
        shutil.rmtree(self.path)
        try:
            os.replace(source, self.path)
            self._open()
        except Exception:
            shutil.rmtree(self.path, ignore_errors=True)
            self._open()  # empty again: the reader fills it from the topic
            raise
        if bulk:
            self.bulk_loading = False
            self.begin_bulk_load()

    def estimated_len(self) -> int:
        """RocksDB's estimate of the number of keys (exact after a compaction)."""
        try:
            raw = self._db.property_int_value("rocksdb.estimate-num-keys")
        except DbClosedError:  # ``restore`` is replacing the files
            return 0
        return int(raw or 0)

    def close(self) -> None:
        self._meta = None  # type: ignore[assignment]
        self._meta_handle = None
        self._db.close()
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1
