"""The event lake on disk: Parquet files by date, and per Kafka partition a manifest of its files and offset.

Layout of ``lake_dir``::

    lake_dir/
      events/date=2026-12-03/p0003-000000001234-000000001999-3f2a9c.parquet
      catalog/date=2026-12-03/p0000-000000000000-000000000412-0b1d7e.parquet
      _manifests/events/p0003.json    {"next_offset", "files": [{path, date, rows, bytes,
                                        first_offset, last_offset, min_ts, max_ts}, ...]}

Exactly once: a partition's manifest lists the files that hold its archived rows and the next
Kafka offset to read; it is replaced atomically (write, fsync, rename) *after* the files it
adds are written and fsynced. A crash before the rename leaves files no manifest lists
(orphans, deleted when the partition is opened again) and the archiver resumes at the old
``next_offset``; a crash after it has nothing left to redo. Readers take the file list from the
manifests, never from a directory listing. Each file's name also carries the partition and the
offset range of its rows. One writer per partition (the archiver's owner of that partition).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.lake.schema import date_keys

__all__ = ["LakeFile", "Manifest", "LakePartition", "manifest_path", "read_manifest", "lake_manifests",
           "TABLES"]

log = logging.getLogger(__name__)

TABLES = ("events", "catalog")
"""The lake's tables: the ``events`` topic and the ``catalog`` topic's change log."""


@dataclass(frozen=True)
class LakeFile:
    """One Parquet file of one partition and one date; ``path`` is relative to ``lake_dir``."""

    path: str
    date: str
    rows: int
    bytes: int
    first_offset: int
    last_offset: int
    min_ts: float
    max_ts: float


@dataclass
class Manifest:
    """What a partition has archived: its files and the next Kafka offset to read."""

    table: str
    partition: int
    next_offset: int = 0
    files: list[LakeFile] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps({"table": self.table, "partition": self.partition, "next_offset": self.next_offset,
                           "files": [asdict(f) for f in self.files]}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        d = json.loads(data)
        return cls(d["table"], int(d["partition"]), int(d["next_offset"]), [LakeFile(**f) for f in d["files"]])

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


def manifest_path(lake_dir: Path, table: str, partition: int) -> Path:
    return Path(lake_dir) / "_manifests" / table / f"p{partition:04d}.json"


def read_manifest(lake_dir: Path, table: str, partition: int) -> Manifest | None:
    """The partition's manifest, or ``None`` when it has archived nothing yet."""
    path = manifest_path(lake_dir, table, partition)
    return Manifest.from_json(path.read_bytes()) if path.exists() else None


def lake_manifests(lake_dir: Path, table: str) -> list[Manifest]:
    """Every partition's manifest of ``table`` (sorted by partition)."""
    root = Path(lake_dir) / "_manifests" / table
    return [Manifest.from_json(p.read_bytes()) for p in sorted(root.glob("p*.json"))] if root.is_dir() else []


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LakePartition:
    """The single writer of one (table, partition): append batches, compact, apply retention.

    Opening it deletes the files of this partition that its manifest does not list (left by a
    crash between writing them and committing the manifest), and drops from the manifest the files
    it lists that are gone (deleted by hand, or with the lake directory while the archiver ran):
    their rows are lost either way, and compacting or reading a file that does not exist would
    fail at every flush, so the archiver would never archive again.
    """

    def __init__(self, lake_dir: Path, table: str, partition: int, *, compression: str = "zstd") -> None:
        if table not in TABLES:
            raise ValueError(f"table: must be one of {TABLES}; got {table!r}")
        self.lake_dir, self.table, self.partition = Path(lake_dir), table, partition
        self.compression = compression
        self.manifest = read_manifest(self.lake_dir, table, partition) or Manifest(table, partition)
        self._drop_missing()
        self._remove_orphans()

    @property
    def next_offset(self) -> int:
        return self.manifest.next_offset

    def _prefix(self) -> str:
        return f"p{self.partition:04d}-"

    def _drop_missing(self) -> None:
        """Commit the manifest without the files it lists that do not exist (logged as an error)."""
        missing = [f for f in self.manifest.files if not (self.lake_dir / f.path).exists()]
        if not missing:
            return
        log.error("lake: %d files listed by the manifest of %s partition %d are gone (%d rows lost, e.g. %s); "
                  "dropped from the manifest", len(missing), self.table, self.partition, sum(f.rows for f in missing),
                  missing[0].path)
        gone = {f.path for f in missing}
        self._commit(Manifest(self.table, self.partition, self.manifest.next_offset,
                              [f for f in self.manifest.files if f.path not in gone]))

    def _remove_orphans(self) -> None:
        listed = {f.path for f in self.manifest.files}
        root = self.lake_dir / self.table
        if not root.is_dir():
            return
        for path in root.glob(f"date=*/*{self._prefix()}*"):
            rel = path.relative_to(self.lake_dir).as_posix()
            if rel not in listed and (path.name.startswith(self._prefix()) or path.name.startswith(".tmp-")):
                log.info("lake: removing %s (not in the manifest of %s partition %d)", rel, self.table,
                         self.partition)
                path.unlink()

    def _write_file(self, table: pa.Table, date: str) -> LakeFile:
        """Write ``table`` (one date, sorted by offset) as a new fsynced file; not yet in the manifest."""
        offsets = table.column("kafka_offset")
        first, last = pc.min(offsets).as_py(), pc.max(offsets).as_py()
        ts = table.column("ts")
        d = self.lake_dir / self.table / f"date={date}"
        d.mkdir(parents=True, exist_ok=True)
        name = f"{self._prefix()}{first:012d}-{last:012d}-{uuid.uuid4().hex[:6]}.parquet"
        tmp = d / f".tmp-{name}"
        pq.write_table(table, tmp, compression=self.compression)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.rename(tmp, d / name)
        _fsync_dir(d)
        return LakeFile(path=(d / name).relative_to(self.lake_dir).as_posix(), date=date, rows=table.num_rows,
                        bytes=(d / name).stat().st_size, first_offset=first, last_offset=last,
                        min_ts=pc.min(ts).as_py(), max_ts=pc.max(ts).as_py())

    def _commit(self, manifest: Manifest) -> None:
        path = manifest_path(self.lake_dir, self.table, self.partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(manifest.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        self.manifest = manifest

    def append(self, table: pa.Table, next_offset: int) -> list[LakeFile]:
        """Archive ``table`` (rows of this partition) and move the partition to ``next_offset``, atomically.

        Rows are split by the UTC date of ``ts``; one file per date. ``next_offset`` may be past
        the last row (messages that were not archived, e.g. dead letters).

        Raises
        ------
        ValueError
            If ``next_offset`` goes backwards or a row's offset is below the stored next offset.
        """
        if next_offset < self.manifest.next_offset:
            raise ValueError(f"next_offset: must not go back from {self.manifest.next_offset}; got {next_offset}")
        new: list[LakeFile] = []
        if table.num_rows:
            low = pc.min(table.column("kafka_offset")).as_py()
            if low < self.manifest.next_offset:
                raise ValueError(f"kafka_offset: {low} is already archived (next offset {self.manifest.next_offset})")
            table = table.sort_by("kafka_offset")
            dates = date_keys(table.column("ts").to_numpy())
            for date in np.unique(dates):
                new.append(self._write_file(table.filter(pa.array(dates == date)), str(date)))
        if new or next_offset != self.manifest.next_offset:
            self._commit(Manifest(self.table, self.partition, next_offset, self.manifest.files + new))
        return new

    def reset(self, next_offset: int) -> None:
        """Move the partition to ``next_offset`` of a recreated log (its offsets start again; the files
        archived from the old log stay): the one way ``next_offset`` may go back."""
        self._commit(Manifest(self.table, self.partition, next_offset, self.manifest.files))

    def _replace(self, old: list[LakeFile], new: list[LakeFile]) -> None:
        """Commit a manifest without ``old`` and with ``new``, then delete ``old``'s files."""
        gone = {f.path for f in old}
        files = [f for f in self.manifest.files if f.path not in gone] + new
        self._commit(Manifest(self.table, self.partition, self.manifest.next_offset,
                              sorted(files, key=lambda f: (f.date, f.first_offset))))
        for f in old:
            (self.lake_dir / f.path).unlink(missing_ok=True)

    def _read(self, files: list[LakeFile]) -> pa.Table:
        return pa.concat_tables([pq.read_table(self.lake_dir / f.path) for f in files]).sort_by("kafka_offset")

    def compact(self, min_files: int, small_rows: int) -> int:
        """Merge each date's small files (< ``small_rows`` rows) into one once there are ``min_files``.

        Returns the number of files removed.
        """
        removed = 0
        by_date: dict[str, list[LakeFile]] = {}
        for f in self.manifest.files:
            if f.rows < small_rows:
                by_date.setdefault(f.date, []).append(f)
        for date, files in sorted(by_date.items()):
            if len(files) < min_files:
                continue
            merged = self._write_file(self._read(files), date)
            self._replace(files, [merged])
            removed += len(files)
            log.info("lake: compacted %d files of %s partition %d, %s", len(files), self.table, self.partition, date)
        return removed

    def retain(self, retention_days: float) -> int:
        """Drop dates older than ``retention_days`` before this partition's newest row.

        ``events`` files of those dates are deleted. The ``catalog`` change log is folded
        instead: its old files become one file holding each item's last record before the cut,
        so the catalog as of any kept date stays readable. Returns the number of files removed.
        """
        if not self.manifest.files:
            return 0
        newest = max(f.max_ts for f in self.manifest.files)
        cut = str(date_keys([newest - retention_days * 86400.0])[0])
        old = [f for f in self.manifest.files if f.date < cut]
        if not old or (self.table == "catalog" and len(old) == 1):
            return 0
        new: list[LakeFile] = []
        if self.table == "catalog":
            t = self._read(old)
            ids = t.column("item_id").to_numpy(zero_copy_only=False)
            _, first_rev = np.unique(ids[::-1], return_index=True)
            keep = np.sort(len(ids) - 1 - first_rev)  # the last row of every item
            snap = t.take(pa.array(keep))
            snap = snap.filter(pc.is_valid(snap.column("record")))  # deleted items need no row
            if snap.num_rows:
                new.append(self._write_file(snap, max(f.date for f in old)))
        self._replace(old, new)
        log.info("lake: retention removed %d files of %s partition %d (before %s)", len(old), self.table,
                 self.partition, cut)
        return len(old)
