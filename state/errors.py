"""Errors of state/: one root, ``StateError``."""

from __future__ import annotations

__all__ = ["StateError", "StateCorrupted", "PartitionNotAssigned"]


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
