"""Co-occurrence counts of new items (unknown to the trained model) with known items, per partition.

They are the adjacency row M′ of a new item in Cleora's inductive step: the catalog overlay
sums every partition's counts and codes the item by M′·Q (``models.emde.cold_start``). The
rows are mirrored in memory (new items are few) and staged into the partition's write batch,
so they change exactly once per event, like the rest of the state.
"""

from __future__ import annotations

import msgspec
from rocksdict import WriteBatch

from state import keys
from state.codec import decode_value, encode_value
from state.partition import PartitionDB

__all__ = ["ItemLinks", "ItemLinkStore"]


class ItemLinks(msgspec.Struct, array_like=True):
    """Known item id -> times it co-occurred with this new item in a user's recent history."""

    counts: dict[str, int]


class ItemLinkStore:
    """The ``l:`` rows of one partition: ``add`` in memory, ``stage`` the changed rows.

    Parameters
    ----------
    db : PartitionDB
    max_links : int, default 100
        Links kept per new item. When a row reaches twice this many, it is cut back to the
        ``max_links`` strongest (count desc, then id asc): a pure function of the event
        sequence, so a replay after a crash gives the same rows whatever the batch sizes.
    """

    def __init__(self, db: PartitionDB, max_links: int = 100) -> None:
        if max_links < 1:
            raise ValueError(f"max_links must be >= 1; got {max_links}")
        self.db = db
        self.max_links = max_links
        self._rows: dict[str, dict[str, int]] = {
            keys.strip_prefix(k, keys.LINKS): decode_value(k, v, ItemLinks).counts for k, v in db.scan(keys.LINKS)}
        self._changed: set[str] = set()

    def add(self, new_item: str, known_item: str) -> None:
        """Count one co-occurrence of ``new_item`` with ``known_item``."""
        row = self._rows.setdefault(new_item, {})
        row[known_item] = row.get(known_item, 0) + 1
        if len(row) >= 2 * self.max_links:
            keep = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_links]
            self._rows[new_item] = dict(keep)
        self._changed.add(new_item)

    def stage(self, batch: WriteBatch) -> dict[str, dict[str, int]]:
        """Put every row changed since the last ``stage`` into ``batch``; returns those rows."""
        out = {i: self._rows[i] for i in sorted(self._changed)}
        for item_id, counts in out.items():
            batch.put(keys.links_key(item_id), encode_value(ItemLinks(counts)))
        self._changed.clear()
        return out

    def get(self, item_id: str) -> dict[str, int]:
        return dict(self._rows.get(item_id, {}))

    def __len__(self) -> int:
        return len(self._rows)
