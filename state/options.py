"""Tuning knobs of the partition databases, with units in the names."""

from __future__ import annotations

from dataclasses import dataclass

from rocksdict import Options

__all__ = ["StoreOptions"]


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """RocksDB options for one partition database.

    ``sync_writes`` fsyncs the WAL on every commit (survives power loss, not only ``kill -9``;
    a process crash alone never loses a committed batch since the WAL is written before return).
    """

    write_buffer_bytes: int = 32 * 1024 * 1024
    block_cache_bytes: int = 64 * 1024 * 1024
    sync_writes: bool = False

    def to_rocksdict(self) -> Options:
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        opts.set_write_buffer_size(self.write_buffer_bytes)
        return opts
