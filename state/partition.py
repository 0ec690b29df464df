"""One RocksDB per Kafka partition: the single writer commits state and offset in one batch.

The exactly-once rule (DESIGN.md, "State and recovery"): every change a batch of events
makes is staged into one ``WriteBatch`` together with the next Kafka offset (``meta`` column
family); ``commit`` writes it atomically. After ``kill -9`` the database holds either the whole
batch and its offset or neither, so the worker resumes at the stored offset: nothing lost,
nothing applied twice.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from rocksdict import AccessType, Options, Rdict, WriteBatch, WriteOptions

from state import keys
from state.errors import PartitionOwned
from state.options import StoreOptions

__all__ = ["PartitionDB", "partition_path", "read_stored_offset", "list_partitions", "check_not_owned", "OWNER_FILE"]


OWNER_FILE = "OWNER"
"""In a partition's directory: ``<pid> <host>`` of the process that last opened it for writing."""


def _owner(path: Path) -> str | None:
    try:
        return (Path(path) / OWNER_FILE).read_text().strip().replace(" ", " on ", 1) or None
    except OSError:
        return None


def check_not_owned(path: Path) -> None:
    """Raise ``PartitionOwned`` at once if another process holds the database's lock (RocksDB's
    ``LOCK`` file, a POSIX record lock); a no-op for a database that does not exist yet.

    Call it before this process opens the database (closing the probe would drop a lock this
    process held on the same file).

    Raises
    ------
    PartitionOwned
        Naming the partition and the owner's pid (from the ``OWNER`` file).
    """
    lock = Path(path) / "LOCK"
    if not lock.exists():
        return
    with open(lock, "rb+") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise PartitionOwned(str(path), _owner(Path(path))) from exc
        fcntl.lockf(f, fcntl.LOCK_UN)


def partition_path(state_dir: Path, topic: str, partition: int) -> Path:
    """``state_dir/<topic>/p0003``: where the database of one Kafka partition lives."""
    return Path(state_dir) / topic / f"p{partition:04d}"


def list_partitions(state_dir: Path, topic: str) -> list[int]:
    """Partitions that have a database under ``state_dir`` for ``topic``, sorted."""
    root = Path(state_dir) / topic
    if not root.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in root.iterdir() if p.name.startswith("p") and (p / "CURRENT").exists())


class PartitionDB:
    """The database of one Kafka partition, opened by its single writer (or read-only).

    Parameters
    ----------
    path : Path
        Directory of the database; created if missing (writer only).
    options : StoreOptions
    read_only : bool
        Open without taking the writer's lock (sees the data as of opening).
    """

    def __init__(self, path: Path, options: StoreOptions | None = None, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.options = options or StoreOptions()
        cf = {"meta": Options(raw_mode=True)}
        if read_only:
            self._db = Rdict(str(self.path), options=Options(raw_mode=True),
                             column_families=cf, access_type=AccessType.read_only())
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = Rdict(str(self.path), options=self.options.to_rocksdict(), column_families=cf)
            except Exception as exc:  # rocksdict raises a bare Exception; a held LOCK means another writer
                if "LOCK" in str(exc):
                    raise PartitionOwned(str(self.path), _owner(self.path)) from exc
                raise
            (self.path / OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
        self._meta = self._db.get_column_family("meta")
        self._meta_handle = self._db.get_column_family_handle("meta")
        self._write_opts = WriteOptions()
        self._write_opts.sync = self.options.sync_writes

    # reads -------------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def get_many(self, keys_: list[bytes]) -> list[bytes | None]:
        """Values of ``keys_`` in order (``None`` where absent), one RocksDB multi-get."""
        if not keys_:
            return []
        return self._db[keys_]

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs whose key starts with ``prefix``, in key order."""
        it = self._db.iter()
        it.seek(prefix)
        while it.valid():
            k = it.key()
            if not k.startswith(prefix):
                break
            yield k, it.value()
            it.next()

    def stored_offset(self) -> int | None:
        """Next Kafka offset to read, or ``None`` if nothing was ever committed."""
        raw = self._meta.get(keys.META_OFFSET)
        return None if raw is None else keys.decode_int(raw)

    def get_meta(self, key: bytes) -> bytes | None:
        return self._meta.get(key)

    # writes ------------------------------------------------------------------------------
    def new_batch(self) -> WriteBatch:
        return WriteBatch(raw_mode=True)

    def stage_meta(self, batch: WriteBatch, key: bytes, value: bytes) -> None:
        batch.put(key, value, self._meta_handle)

    def commit(self, batch: WriteBatch, next_offset: int) -> None:
        """Write ``batch`` plus ``next_offset`` atomically (one RocksDB write)."""
        batch.put(keys.META_OFFSET, keys.encode_int(next_offset), self._meta_handle)
        self._db.write(batch, self._write_opts)

    def reset_offset(self, next_offset: int, meta_key: bytes | None = None) -> int:
        """Commit ``next_offset`` below the stored one (the topic was recreated) and count it.

        With ``meta_key``, the offset of another topic read into this database is set instead
        of the main one. Returns the number of such resets of this partition so far
        (``meta:offset_resets``, written in the same batch as the offset).
        """
        raw = self._meta.get(keys.META_OFFSET_RESETS)
        n = (0 if raw is None else keys.decode_int(raw)) + 1
        batch = self.new_batch()
        self.stage_meta(batch, keys.META_OFFSET_RESETS, keys.encode_int(n))
        if meta_key is None:
            self.commit(batch, next_offset)
        else:
            self.stage_meta(batch, meta_key, keys.encode_int(next_offset))
            self._db.write(batch, self._write_opts)
        return n

    def close(self) -> None:
        """Release the database (and its lock). The ``meta`` view holds a reference, so drop it first."""
        self._meta = None  # type: ignore[assignment]
        self._meta_handle = None
        self._db.close()

    def __enter__(self) -> PartitionDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _column_families(path: Path) -> list[str]:
    """The column families of the database at ``path`` (raises a bare ``Exception`` on IO races)."""
    return Rdict.list_cf(str(path), Options(raw_mode=True))


def read_stored_offset(state_dir: Path, topic: str, partition: int, attempts: int = 20,
                       key: bytes = keys.META_OFFSET) -> int | None:
    """The committed offset of one partition, read without the writer's lock; ``None`` if no DB.

    ``key`` names another offset kept in the ``meta`` column family (e.g. of a second input topic).

    A read-only open (and the column-family listing before it) races with the writer's
    compactions (the MANIFEST or a file it names can be gone a moment later); both are retried
    up to ``attempts`` times, 50 ms apart.
    """
    path = partition_path(state_dir, topic, partition)
    for attempt in range(attempts):
        try:
            if not (path / "CURRENT").exists() or "meta" not in _column_families(path):
                return None  # no database, or one being created: nothing committed yet
            db = PartitionDB(path, read_only=True)
        except Exception:  # rocksdict raises a bare Exception for IO/corruption races
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)
            continue
        try:
            raw = db.get_meta(key)
            return None if raw is None else keys.decode_int(raw)
        finally:
            db.close()
    return None
