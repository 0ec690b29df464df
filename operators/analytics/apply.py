"""Apply a batch of one partition's messages to the analytics database (exactly once).

Like ``operators/user_update.py`` for the real-time state: ``AnalyticsApplier.apply`` stages
every change (users' join state, counters, group stats, item counts, dead-letter counts) into
one ``WriteBatch`` and returns the rows to publish; the caller publishes them, then ``commit``s
the batch together with the next offset. Replayed messages (offset below the stored one) are
skipped, duplicates by ``event_id`` are skipped by the join.
"""

from __future__ import annotations

import heapq
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from rocksdict import WriteBatch

from operators.analytics.join import (
    COUNTER_FIELDS,
    GROUP_FIELDS,
    AnalyticsUser,
    Increments,
    JoinRules,
    apply_event,
    apply_served,
    decode_user,
    encode_user,
)
from operators.analytics.topic import CounterRow, GroupRow, OpsRow, Record, TopItemsRow
from operators.schema import DeadLetter, Event
from state import analytics as keys
from state.analytics import AnalyticsStore
from state.keys import decode_int, encode_int
from state.partition import PartitionDB

__all__ = ["AnalyticsApplied", "AnalyticsApplier", "SERVED_OFFSET", "SERVED_WM"]

SERVED_OFFSET = b"served_offset"
"""Meta key: next offset of the partition's served-list topic, committed with the state."""
SERVED_WM = b"served_wm"
"""Meta key: the newest served list's ``ts`` read so far (float64 big-endian): events wait for it."""


@dataclass
class AnalyticsApplied:
    """What one ``apply`` staged: the batch, the next offset, the rows to publish and counts."""

    batch: WriteBatch
    next_offset: int
    served_next_offset: int = 0
    served_wm: float = 0.0
    rows: list[Record] = field(default_factory=list)
    n_applied: int = 0
    n_dead: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


class AnalyticsApplier:
    """The single writer of one partition's analytics database.

    Parameters
    ----------
    db : PartitionDB
        ``state_dir/analytics/<topic>/p0003``.
    partition : int
        Kafka partition of ``events`` this database belongs to.
    rules : JoinRules
    top_items : int
        Items kept in each published top list.
    """

    def __init__(self, db: PartitionDB, partition: int, rules: JoinRules, top_items: int = 20) -> None:
        self.db, self.partition, self.rules, self.top_items = db, partition, rules, top_items
        self.store = AnalyticsStore(db)
        stored = db.stored_offset()
        self.next_offset = 0 if stored is None else stored
        raw = db.get_meta(SERVED_OFFSET)
        self.served_next_offset = 0 if raw is None else decode_int(raw)
        raw = db.get_meta(SERVED_WM)
        self.served_wm = 0.0 if raw is None else struct.unpack(">d", raw)[0]
        self.n_applied_total = self.store.applied()
        self.max_event_ts = 0.0
        self._tops: dict[tuple[str, str], dict[str, int]] = {}

    def apply(self, messages: Sequence[tuple[int, Event | DeadLetter]],
              served: Sequence[tuple[int, Event | DeadLetter]] = (),
              received_ts: Mapping[int, float] | None = None) -> AnalyticsApplied:
        """Stage the effect of ``(offset, parsed message)`` pairs of ``events`` and of the served-list
        topic (``served``, registered first), each in offset order; nothing is written yet.
        ``received_ts`` maps an ``events`` offset to its record's Kafka timestamp (epoch s): last touch
        takes no list served after it (``operators.attribution.attribution_ts``)."""
        received = received_ts or {}
        out = AnalyticsApplied(batch=self.db.new_batch(), next_offset=self.next_offset,
                               served_next_offset=self.served_next_offset, served_wm=self.served_wm)
        fresh = [(o, m) for o, m in messages if o >= self.next_offset]
        lists = [(o, m) for o, m in served if o >= self.served_next_offset]
        if not fresh and not lists:
            return out
        events = [m for _, m in fresh if isinstance(m, Event)] + [m for _, m in lists if isinstance(m, Event)]
        uids = list(dict.fromkeys(e.user_id for e in events))
        users = {u: (AnalyticsUser() if raw is None else decode_user(raw))
                 for u, raw in zip(uids, self.store.get_users(uids), strict=True)}
        inc = Increments()
        dead: dict[str, int] = {}
        for _, m in lists:
            if isinstance(m, Event):
                apply_served(users[m.user_id], m, self.rules, inc)
                out.served_wm = max(out.served_wm, m.ts)
        if lists:
            out.served_next_offset = lists[-1][0] + 1
        for o, m in fresh:
            if isinstance(m, DeadLetter):
                dead[m.reason] = dead.get(m.reason, 0) + 1
                continue
            if apply_event(users[m.user_id], m, self.rules, inc, received.get(o)):
                out.n_applied += 1
                self.max_event_ts = max(self.max_event_ts, m.ts)
        b = out.batch
        for u, st in users.items():
            self.store.stage_user(b, u, encode_user(st))
        out.rows += self._stage_counters(b, inc)
        out.rows += self._stage_groups(b, inc)
        out.rows += self._stage_items(b, inc)
        dead_total = self._stage_dead(b, dead)
        self.n_applied_total += out.n_applied
        self.store.stage_applied(b, self.n_applied_total)
        if fresh:
            out.next_offset = fresh[-1][0] + 1
        self.db.stage_meta(b, SERVED_OFFSET, encode_int(out.served_next_offset))
        self.db.stage_meta(b, SERVED_WM, struct.pack(">d", out.served_wm))
        out.n_dead = sum(dead.values())
        out.skipped = inc.skipped
        out.rows.append(OpsRow(self.partition, out.next_offset, self.n_applied_total, dead_total,
                               self.max_event_ts, time.time()))
        return out

    def commit(self, applied: AnalyticsApplied) -> None:
        """Write the staged batch and its next offset atomically."""
        self.db.commit(applied.batch, applied.next_offset)
        self.next_offset = applied.next_offset
        self.served_next_offset, self.served_wm = applied.served_next_offset, applied.served_wm

    # ------------------------------------------------------------------------------------------
    def _stage_counters(self, b: WriteBatch, inc: Increments) -> list[Record]:
        ks = list(inc.counters)
        dbk = [keys.counter_key(*k) for k in ks]
        rows: list[Record] = []
        for k, key, old in zip(ks, dbk, self.store.get_vectors(dbk, len(COUNTER_FIELDS)), strict=True):
            new = old + np.asarray(inc.counters[k])
            self.store.stage_vector(b, key, new)
            rows.append(CounterRow(self.partition, k[0], k[1], k[2], k[3], new.tolist()))
        return rows

    def _stage_groups(self, b: WriteBatch, inc: Increments) -> list[Record]:
        ks = list(inc.groups)
        dbk = [keys.group_key(*k) for k in ks]
        rows: list[Record] = []
        for k, key, old in zip(ks, dbk, self.store.get_vectors(dbk, len(GROUP_FIELDS)), strict=True):
            new = old + np.asarray(inc.groups[k])
            self.store.stage_vector(b, key, new)
            rows.append(GroupRow(self.partition, k[0], k[1], k[2], new.tolist()))
        return rows

    def _stage_items(self, b: WriteBatch, inc: Increments) -> list[Record]:
        """Stage item counts; republish the top lists of the campaigns whose items changed.

        Counts only grow, so a campaign's new top list is the top of (its previous top list and the
        items that changed): one scan of the campaign's items on first use, then no scans.
        """
        ks = list(inc.items)
        dbk = [keys.item_key(*k) for k in ks]
        changed: dict[tuple[str, str], dict[str, int]] = {}
        for k, key, old in zip(ks, dbk, self.store.get_ints(dbk), strict=True):
            self.store.stage_int(b, key, old + inc.items[k])
            changed.setdefault((k[0], k[1]), {})[k[2]] = old + inc.items[k]
        rows: list[Record] = []
        for campaign in sorted({c for c, _ in changed}):
            tops = []
            for kind in ("impressed", "clicked"):
                top = self._top(campaign, kind)
                top.update(changed.get((campaign, kind), {}))
                best = heapq.nlargest(self.top_items, top.items(), key=lambda kv: (kv[1], kv[0]))
                self._tops[(campaign, kind)] = dict(best)
                tops.append(best)
            rows.append(TopItemsRow(self.partition, campaign, tops[0], tops[1]))
        return rows

    def _top(self, campaign: str, kind: str) -> dict[str, int]:
        """The committed top list of (campaign, kind), scanned from the database the first time."""
        if (campaign, kind) not in self._tops:
            prefix = keys.item_prefix(campaign, kind)
            counts = ((k[len(prefix):].decode(), n) for k, n in self.store.scan_ints(prefix))
            self._tops[(campaign, kind)] = dict(heapq.nlargest(self.top_items, counts, key=lambda kv: (kv[1], kv[0])))
        return dict(self._tops[(campaign, kind)])

    def _stage_dead(self, b: WriteBatch, dead: dict[str, int]) -> dict[str, int]:
        total = {k[len(keys.DEAD):].decode(): n
                 for k, n in self.store.scan_ints(keys.DEAD)}
        for reason, n in dead.items():
            total[reason] = total.get(reason, 0) + n
            self.store.stage_int(b, keys.DEAD + reason.encode(), total[reason])
        return total
