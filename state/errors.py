"""Errors of state/: one root, ``StateError``."""

from __future__ import annotations

__all__ = ["StateError", "StateCorrupted", "PartitionNotAssigned", "PartitionOwned"]


class StateError(Exception):
    """Root of every error raised by ``state/``."""


class StateCorrupted(StateError):
    """A stored value could not be decoded; the message names the key.

    What to do: the partition's database is damaged or was written by a newer version.
    Stop the worker, move the partition directory aside and replay the partition from Kafka.
    """

    def __init__(self, key: bytes, reason: str) -> None:
        super().__init__(f"state value at key {key!r} is corrupt: {reason}")
        self.key, self.reason = key, reason


class PartitionNotAssigned(StateError):
    """A store was asked for a partition that this worker does not own."""


class PartitionOwned(StateError):
    """Another process holds the partition database's lock (one writer per RocksDB).

    What to do: stop the other process (its pid is in the message, from the database's ``OWNER``
    file), or give this one another ``state_dir``. Typical cause: a second flow started on the
    same state directory.
    """

    def __init__(self, path: str, owner: str | None) -> None:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        part = int(name[1:]) if name.startswith("p") and name[1:].isdigit() else name
        who = f"pid {owner}" if owner else "pid unknown"
        super().__init__(f"partition {part} is owned by another process ({who}): its database {path} is locked; "
                         f"stop that process or use another state_dir")
        self.path, self.owner = path, owner
