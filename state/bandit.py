"""Optimizer state: per-arm Beta-Bernoulli counts with time discount, and its RocksDB snapshot.

Key layout of the bandit database (raw mode, values as in ``state/codec.py``):

=================================  ==================================================
key                                value
=================================  ==================================================
``a:`` campaign NUL arm NUL seg    ArmStats
``i:`` request_id                  served list still inside its attribution window
                                   (msgpack of the caller's struct, version byte first)
``r:`` request_id                  epoch seconds the list was rewarded (float64 BE)
``o:`` topic NUL partition         next Kafka offset the snapshot reflects (int64 BE)
``p:`` request_id                  feedback events parked until that list is read
                                   (encoded by the caller, version byte first)
``f:``                             the fold's counters and clocks (encoded by the caller)
``v:``                             format version of the store (int64 BE,
                                   ``FORMAT_VERSION``)
=================================  ==================================================

A store without ``v:`` but with other keys is of version 1 (before parked events and the fold's
counters were kept): ``load`` reports that version and the caller rejects it (its state would
differ from a fold of the topics); the writer's first full snapshot replaces it.

(Snapshots of earlier versions also held windowed popularity under ``w:`` and
``c:popularity``; those keys are ignored and go with the first full snapshot: the flow
publishes windowed popularity now.)

One writer: API worker processes share the directory, and every worker folds the same topics
into the same state, so any of them may write it. The first to take the file lock
(``<path>.lock``, non-blocking ``try_own``) becomes the writer for its lifetime: it replaces
the stored snapshot once, then commits deltas (changed arms, opened and closed lists, offsets)
in one write batch each. The others read the snapshot read-only at start and retry
``try_own`` now and then, so the role moves when the writer exits.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from filelock import FileLock
from rocksdict import AccessType, Options, Rdict, WriteBatch

from state.codec import decode_value, encode_value

__all__ = ["ArmKey", "ArmStats", "BanditSnapshot", "BanditStore", "FORMAT_VERSION"]

ArmKey = tuple[str, str, str]  # (campaign_id, arm, segment)

_ARM, _IMPRESSION, _REWARDED, _OFFSET, _PARKED = b"a:", b"i:", b"r:", b"o:", b"p:"
_COUNTERS, _VERSION = b"f:", b"v:"
FORMAT_VERSION = 2
"""Version of the stored snapshot: 2 added the parked feedback events (``p:``) and the fold's counters (``f:``)."""
_F64 = struct.Struct(">d")
_I64 = struct.Struct(">q")


class ArmStats(msgspec.Struct, array_like=True):
    """Counts of one (campaign, arm, segment).

    ``pulls`` and ``rewards`` are discounted (as of ``last_ts``, epoch seconds); ``total_pulls``
    and ``total_rewards`` are plain counts for display.
    """

    pulls: float = 0.0
    rewards: float = 0.0
    last_ts: float = 0.0
    total_pulls: int = 0
    total_rewards: int = 0

    def decayed(self, now_ts: float, half_life_s: float | None) -> tuple[float, float]:
        """(pulls, rewards) discounted to ``now_ts``; unchanged without a half-life."""
        if half_life_s is None or now_ts <= self.last_ts:
            return self.pulls, self.rewards
        f = 0.5 ** ((now_ts - self.last_ts) / half_life_s)
        return self.pulls * f, self.rewards * f

    def add(self, ts: float, half_life_s: float | None, pulls: int = 0, rewards: int = 0) -> None:
        """Count ``pulls``/``rewards`` observed at ``ts`` (a late one is discounted to ``last_ts``)."""
        if half_life_s is not None and ts < self.last_ts:
            f = 0.5 ** ((self.last_ts - ts) / half_life_s)
            self.pulls += pulls * f
            self.rewards += rewards * f
        else:
            self.pulls, self.rewards = self.decayed(ts, half_life_s)
            self.pulls += pulls
            self.rewards += rewards
            self.last_ts = max(self.last_ts, ts)
        self.total_pulls += pulls
        self.total_rewards += rewards


@dataclass
class BanditSnapshot:
    """Everything the optimizer feed needs to resume: arms, open lists, rewarded lists, parked
    feedback events, the fold's counters and the offsets they reflect.

    ``impressions`` and ``parked`` values and ``counters`` are raw encoded structs (the caller owns
    their types; ``counters`` is empty when none were stored). ``version`` is the format the
    snapshot was stored in (``FORMAT_VERSION`` unless read from an older store).
    """

    arms: dict[ArmKey, ArmStats] = field(default_factory=dict)
    impressions: dict[str, bytes] = field(default_factory=dict)
    rewarded: dict[str, float] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    parked: dict[str, bytes] = field(default_factory=dict)
    counters: bytes = b""
    version: int = FORMAT_VERSION


def _arm_key(k: ArmKey) -> bytes:
    return _ARM + "\x00".join(k).encode()


class BanditStore:
    """Snapshot persistence of the optimizer in one RocksDB directory (see module docstring).

    Parameters
    ----------
    path : Path
        Database directory; created by the writer.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock")
        self._db: Rdict | None = None

    @property
    def is_writer(self) -> bool:
        return self._db is not None

    def try_own(self) -> bool:
        """Become the writer if no other process is (non-blocking); True if this store writes."""
        if self._db is not None:
            return True
        try:
            self._lock.acquire(timeout=0)
        except TimeoutError:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(self.path), options=Options(raw_mode=True))
        return True

    def load(self) -> BanditSnapshot:
        """The stored snapshot (empty if none); read-only unless this store is the writer."""
        if self._db is not None:
            return _read(self._db)
        if not (self.path / "CURRENT").exists():
            return BanditSnapshot()
        db = Rdict(str(self.path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            return _read(db)
        finally:
            db.close()

    def new_batch(self) -> WriteBatch:
        return WriteBatch(raw_mode=True)

    def stage_arm(self, batch: WriteBatch, key: ArmKey, stats: ArmStats) -> None:
        batch.put(_arm_key(key), encode_value(stats))

    def stage_impression(self, batch: WriteBatch, request_id: str, raw: bytes | None) -> None:
        """Store an open list (``raw`` encoded by the caller) or, with None, drop it."""
        k = _IMPRESSION + request_id.encode()
        batch.put(k, raw) if raw is not None else batch.delete(k)

    def stage_rewarded(self, batch: WriteBatch, request_id: str, ts: float | None) -> None:
        """Mark a list rewarded at ``ts`` or, with None, forget it (past its window)."""
        k = _REWARDED + request_id.encode()
        batch.put(k, _F64.pack(ts)) if ts is not None else batch.delete(k)

    def stage_offset(self, batch: WriteBatch, topic: str, partition: int, offset: int) -> None:
        batch.put(_OFFSET + f"{topic}\x00{partition}".encode(), _I64.pack(offset))

    def stage_parked(self, batch: WriteBatch, request_id: str, raw: bytes | None) -> None:
        """Store the feedback events parked for a list not read yet (``raw`` encoded by the caller) or,
        with None, drop them (attributed or evicted)."""
        k = _PARKED + request_id.encode()
        batch.put(k, raw) if raw is not None else batch.delete(k)

    def stage_counters(self, batch: WriteBatch, raw: bytes) -> None:
        """Store the fold's counters and clocks (``raw`` encoded by the caller)."""
        batch.put(_COUNTERS, raw)

    def commit(self, batch: WriteBatch) -> None:
        """Write a staged batch atomically (writer only)."""
        if self._db is None:
            raise RuntimeError(f"bandit store {self.path}: commit without being the writer; call try_own() first")
        self._db.write(batch)

    def replace(self, snap: BanditSnapshot) -> None:
        """Make the stored snapshot exactly ``snap`` (one batch; writer only)."""
        if self._db is None:
            raise RuntimeError(f"bandit store {self.path}: replace without being the writer; call try_own() first")
        batch = self.new_batch()
        for k in list(self._db.keys()):
            batch.delete(k)
        for ak, st in snap.arms.items():
            self.stage_arm(batch, ak, st)
        for rid, raw in snap.impressions.items():
            self.stage_impression(batch, rid, raw)
        for rid, ts in snap.rewarded.items():
            self.stage_rewarded(batch, rid, ts)
        for (topic, part), off in snap.offsets.items():
            self.stage_offset(batch, topic, part, off)
        for rid, raw in snap.parked.items():
            self.stage_parked(batch, rid, raw)
        if snap.counters:
            self.stage_counters(batch, snap.counters)
        batch.put(_VERSION, _I64.pack(FORMAT_VERSION))
        self._db.write(batch)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._lock.release()


def _read(db: Rdict) -> BanditSnapshot:
    snap = BanditSnapshot()
    version: int | None = None
    it = db.iter()
    it.seek_to_first()
    while it.valid():
        k, v = it.key(), it.value()
        if version is None:
            version = 1  # a store with keys but no version key predates FORMAT_VERSION 2
        if k.startswith(_ARM):
            c, a, s = k[len(_ARM):].decode().split("\x00")
            snap.arms[(c, a, s)] = decode_value(k, v, ArmStats)
        elif k.startswith(_IMPRESSION):
            snap.impressions[k[len(_IMPRESSION):].decode()] = v
        elif k.startswith(_REWARDED):
            snap.rewarded[k[len(_REWARDED):].decode()] = _F64.unpack(v)[0]
        elif k.startswith(_OFFSET):
            topic, part = k[len(_OFFSET):].decode().rsplit("\x00", 1)
            snap.offsets[(topic, int(part))] = _I64.unpack(v)[0]
        elif k.startswith(_PARKED):
            snap.parked[k[len(_PARKED):].decode()] = v
        elif k == _COUNTERS:
            snap.counters = v
        elif k == _VERSION:
            version = _I64.unpack(v)[0]
        it.next()
    snap.version = FORMAT_VERSION if version is None else version
    return snap
