"""Per-user state of one partition: recent history, counts per event type, recent event ids."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from rocksdict import WriteBatch

from state import keys
from state.codec import decode_value, encode_value
from state.partition import PartitionDB

__all__ = ["UserState", "UserStore"]


class UserState(msgspec.Struct, omit_defaults=True):
    """What the stream knows about one user (mutable; copied on read from RocksDB).

    Attributes
    ----------
    items, ts, types : list of str / float / str
        Recent history, oldest first, at most ``history_len`` entries; ``ts`` in epoch seconds.
    counts : dict of str to int
        Applied events per event type.
    recent_event_ids, recent_event_ts : list of str, list of float
        Event ids applied recently and their event times (dedupe of producer retries,
        ``operators/dedupe.py``); ``recent_event_ts`` may be shorter in states written before it.
    last_ts : float
        Epoch seconds of the newest applied event.
    session_id : str or None
        Session of the newest event.
    sketch_cols, sketch_vals, sketch_version, sketch_ts
        The EMDE input sketch of the history (sparse), see ``operators/sketch_state.py``.
    """

    items: list[str] = msgspec.field(default_factory=list)
    ts: list[float] = msgspec.field(default_factory=list)
    types: list[str] = msgspec.field(default_factory=list)
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    recent_event_ids: list[str] = msgspec.field(default_factory=list)
    recent_event_ts: list[float] = msgspec.field(default_factory=list)
    last_ts: float = 0.0
    session_id: str | None = None
    sketch_cols: bytes = b""  # EMDE raw input sketch, sparse: sorted int32 columns ...
    sketch_vals: bytes = b""  # ... and their float32 values (operators/sketch_state.py)
    sketch_version: str | None = None  # model version the sketch was built with
    sketch_ts: float = 0.0  # epoch seconds of the newest event in the sketch
    embedding: bytes = b""  # M'.Q user embedding, raw float32, unnormalised (operators/user_embedding.py)
    embedding_version: str | None = None


class UserStore:
    """Users of one Kafka partition, in that partition's RocksDB (key ``u:`` + user_id)."""

    def __init__(self, db: PartitionDB) -> None:
        self.db = db

    def get_many(self, user_ids: Sequence[str]) -> list[UserState | None]:
        ks = [keys.user_key(u) for u in user_ids]
        return [None if raw is None else decode_value(k, raw, UserState) for k, raw in zip(ks, self.db.get_many(ks))]

    def get(self, user_id: str) -> UserState | None:
        return self.get_many([user_id])[0]

    def stage(self, batch: WriteBatch, user_id: str, state: UserState) -> None:
        batch.put(keys.user_key(user_id), encode_value(state))

    def all(self) -> dict[str, UserState]:
        """Every user of the partition (tests and tools; not for the hot path)."""
        return {keys.strip_prefix(k, keys.USER): decode_value(k, v, UserState) for k, v in self.db.scan(keys.USER)}
