"""Co-occurrence counts of new items (unknown to the trained model) with known items, per partition.

They are the adjacency row M′ of a new item in Cleora's inductive step: the catalog overlay
sums every partition's counts and codes the item by M′·Q (``models.emde.cold_start``). The
rows are mirrored in memory (new items are few) and staged into the partition's write batch,
so they change exactly once per event, like the rest of the state.
"""

from __future__ import annotations

from collections.abc import Container

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
        Links kept per new item: when a row reaches ``2 * max_links``, it is cut back to the
        ``max_links`` strongest (count desc, then id asc), so a row holds up to
        ``2 * max_links - 1``. A pure function of the event sequence: a replay after a crash
        gives the same rows whatever the batch sizes.
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

    def stage(self, batch: WriteBatch) -> dict[str, dict[str, int] | None]:
        """Put every row changed since the last ``stage`` into ``batch`` (deleted rows as
        deletes); returns copies of those rows, ``None`` for a deleted one."""
        out: dict[str, dict[str, int] | None] = {}
        for item_id in sorted(self._changed):
            row = self._rows.get(item_id)
            if row is None:
                batch.delete(keys.links_key(item_id))
                out[item_id] = None
            else:
                batch.put(keys.links_key(item_id), encode_value(ItemLinks(row)))
                out[item_id] = dict(row)
        self._changed.clear()
        return out

    def forget(self, known: Container[str]) -> int:
        """Delete the rows of items in ``known`` (a newer trained version learnt them) at the
        next ``stage``; returns how many."""
        gone = [i for i in self._rows if i in known]
        for item_id in gone:
            del self._rows[item_id]
        self._changed.update(gone)
        return len(gone)

    def get(self, item_id: str) -> dict[str, int]:
        return dict(self._rows.get(item_id, {}))

    def __len__(self) -> int:
        return len(self._rows)
