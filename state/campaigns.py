"""Campaigns of the API: what each one serves, stored in the API's own RocksDB.

Key layout (raw mode): ``c:`` + campaign_id -> Campaign (version byte + msgpack, ``state/codec.py``).

One writer at a time, several readers: API worker processes share the directory. Every access
takes a file lock (``<path>.lock``), opens the database, reads or writes, and closes it, so the
RocksDB lock is never held by two processes. A write also bumps ``<path>.generation`` (a file
whose content is a counter); each worker keeps all campaigns in memory and re-reads them when
the generation it sees changes (``CampaignStore.changed``, a ``stat`` call), so a campaign
written through one worker is served by the others within the check interval. Campaigns are
few and admin writes rare, which is what makes open-per-call cheap enough.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
from filelock import FileLock
from rocksdict import Options, Rdict

from state.codec import decode_value, encode_value

__all__ = ["Arm", "BanditConfig", "Campaign", "CampaignStore"]

_PREFIX = b"c:"


class Arm(msgspec.Struct, frozen=True):
    """One alternative the optimizer chooses between: a strategy with its parameters."""

    name: str
    strategy: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class BanditConfig(msgspec.Struct, frozen=True):
    """Optimizer knobs of one campaign (see ``api/optimizer.py``)."""

    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    floor: float = 0.0
    half_life_s: float | None = None
    segment_param: str | None = None
    segments: tuple[str, ...] = ()
    """The values of ``segment_param`` learned apart; any other value counts for segment ``""``."""


class Campaign(msgspec.Struct, frozen=True):
    """A campaign: scenario, arms, IQL filter and boosters, list length, goal and fallback.

    ``window_s`` is the attribution window of the goal (seconds after serving);
    ``control_share`` the share of users (by hash) held out on the fallback arm ``control``.
    ``created_ts``/``updated_ts`` are epoch seconds; ``version`` counts updates.
    """

    campaign_id: str
    scenario: str
    arms: list[Arm]
    filter: str = ""
    boosters: str = ""
    n: int = 10
    goal: str = "click"
    window_s: float = 86400.0
    fallback: str = "popular"
    control_share: float = 0.0
    optimizer: BanditConfig = msgspec.field(default_factory=BanditConfig)
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    created_ts: float = 0.0
    updated_ts: float = 0.0
    version: int = 1


class CampaignStore:
    """Campaigns by id in ``path`` (see module docstring for the multi-process rule).

    Parameters
    ----------
    path : Path
        Database directory (created on first write).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock")
        self._generation_file = Path(str(self.path) + ".generation")

    def _open(self) -> Rdict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return Rdict(str(self.path), options=Options(raw_mode=True))

    def generation(self) -> int:
        """Counter bumped by every write (0 before the first)."""
        try:
            return int(self._generation_file.read_text() or 0)
        except FileNotFoundError:
            return 0

    def load_all(self) -> tuple[int, dict[str, Campaign]]:
        """(generation, every campaign by id), read under the lock."""
        with self._lock:
            gen = self.generation()
            if not (self.path / "CURRENT").exists():
                return gen, {}
            db = self._open()
            try:
                out: dict[str, Campaign] = {}
                it = db.iter()
                it.seek(_PREFIX)
                while it.valid() and it.key().startswith(_PREFIX):
                    c = decode_value(it.key(), it.value(), Campaign)
                    out[c.campaign_id] = c
                    it.next()
                return gen, out
            finally:
                db.close()

    def put(self, campaign: Campaign) -> int:
        """Insert or replace; returns the new generation."""
        return self._write(campaign.campaign_id, encode_value(campaign))

    def delete(self, campaign_id: str) -> int:
        """Remove (no error if absent); returns the new generation."""
        return self._write(campaign_id, None)

    def _write(self, campaign_id: str, value: bytes | None) -> int:
        with self._lock:
            db = self._open()
            try:
                key = _PREFIX + campaign_id.encode()
                if value is None:
                    db.delete(key)
                else:
                    db[key] = value
                db.flush()
            finally:
                db.close()
            gen = self.generation() + 1
            tmp = self._generation_file.with_suffix(".tmp")
            tmp.write_text(str(gen))
            os.replace(tmp, self._generation_file)
            return gen
