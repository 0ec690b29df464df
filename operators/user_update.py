"""Apply a batch of one Kafka partition's messages to that partition's state (exactly once).

``PartitionApplier.apply`` stages every change into one RocksDB ``WriteBatch``; the caller
publishes the outputs, then ``commit``s the batch together with the next offset. Replayed
messages (offset below the stored one) and duplicate ``event_id``s are skipped, so a
restart after ``kill -9`` neither loses nor double-applies an event.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field

from rocksdict import WriteBatch

from operators.dedupe import DEFAULT_KEEP_MAX, DEFAULT_KEEP_MIN, DEFAULT_WINDOW_S, remember_event
from operators.item_links import new_item_links
from operators.schema import DeadLetter, Event
from operators.sketch_state import SketchUpdater
from operators.user_embedding import EmbeddingUpdater
from state import keys
from state.item_links import ItemLinkStore
from state.partition import PartitionDB
from state.popularity import PopularityStore
from state.users import UserState, UserStore
from state.window_popularity import WindowStore

__all__ = ["Applied", "PartitionApplier", "apply_event"]


@dataclass
class Applied:
    """What one ``apply`` did: changed users (new state), dead letters, offsets and counts."""

    batch: WriteBatch
    next_offset: int
    users: dict[str, UserState] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    n_applied: int = 0
    n_duplicates: int = 0
    n_replayed: int = 0
    max_event_ts: float = 0.0
    links: dict[str, dict[str, int] | None] = field(default_factory=dict)
    """New items whose co-occurrence counts changed: their whole row (to publish); ``None``:
    the row was deleted (the trained version now knows the item)."""


def apply_event(state: UserState, event: Event, history_len: int, record_items: bool = True,
                dedupe_window_s: float = DEFAULT_WINDOW_S, dedupe_max_ids: int = DEFAULT_KEEP_MAX) -> bool:
    """Add ``event`` to ``state`` in place; returns False for a duplicate ``event_id``.

    A duplicate is an ``event_id`` applied to this user within ``dedupe_window_s`` of event time
    (or among the user's last 64 events; at most ``dedupe_max_ids`` remembered;
    ``operators/dedupe.py``). With ``record_items=False`` (event types of weight 0: served lists,
    impressions, searches) only the counts, the dedupe ids and the times change, not the item
    history.
    """
    if not remember_event(state.recent_event_ids, state.recent_event_ts, event.event_id, event.ts,
                          max(state.last_ts, event.ts), dedupe_window_s, DEFAULT_KEEP_MIN, dedupe_max_ids):
        return False
    state.counts[event.type] = state.counts.get(event.type, 0) + 1
    for item_id in event.item_ids() if record_items else ():
        state.items.append(item_id)
        state.ts.append(event.ts)
        state.types.append(event.type)
    if len(state.items) > history_len:
        cut = len(state.items) - history_len
        del state.items[:cut], state.ts[:cut], state.types[:cut]
    state.last_ts = max(state.last_ts, event.ts)
    if event.session_id is not None:
        state.session_id = event.session_id
    return True


def _needs_rebuild(st: UserState, sketcher: SketchUpdater | None, embedder: EmbeddingUpdater | None) -> bool:
    """True when the user's sketch or M′·Q embedding is of another model version (or none yet)."""
    return (sketcher is not None and st.sketch_version != sketcher.version.version) or (
        embedder is not None and st.embedding_version != embedder.version.version)


class PartitionApplier:
    """Owns the stores of one partition database and applies message batches to them.

    Parameters
    ----------
    db : PartitionDB
        The partition's database (this object is its single writer).
    type_weights : dict of str to float
        Weight of each event type in item popularity (0 = does not count).
    history_len : int
        Recent items kept per user.
    half_life_s : float
        Popularity decay half-life, seconds.
    dedupe_window_s, dedupe_max_ids
        Duplicate ``event_id``s are skipped within this much event time per user, up to this
        many ids per user (``operators/dedupe.py``).
    links_window, links_max_gap_s, links_per_item
        New items' links (``operators.item_links``, ``state.item_links``): previous items of
        the user an event's item is paired with, their maximum age (seconds), and the links
        kept per item.
    window_bucket_s, window_horizon_s, window_shards
        Windowed popularity (``state.window_popularity``): bucket width and horizon (seconds),
        and the pieces a bucket is published in.
    """

    def __init__(self, db: PartitionDB, type_weights: dict[str, float], history_len: int,
                 half_life_s: float, links_window: int = 5, links_max_gap_s: float = 1800.0,
                 links_per_item: int = 100, dedupe_window_s: float = DEFAULT_WINDOW_S,
                 dedupe_max_ids: int = DEFAULT_KEEP_MAX, window_bucket_s: float = 3600.0,
                 window_horizon_s: float = 30 * 86400.0, window_shards: int = 8) -> None:
        self.db = db
        self.dedupe_window_s, self.dedupe_max_ids = dedupe_window_s, dedupe_max_ids
        self.users = UserStore(db)
        self.popularity = PopularityStore(db, half_life_s)
        self.window = WindowStore(db, window_bucket_s, window_horizon_s, window_shards)
        self.links = ItemLinkStore(db, links_per_item)
        self.links_window = links_window
        self.links_max_gap_s = links_max_gap_s
        self._links_known: Container[str] | None = None  # the known_items the link rows were last pruned by
        self.type_weights = type_weights
        self.history_len = history_len
        stored = db.stored_offset()
        self.next_offset = 0 if stored is None else stored
        raw = db.get_meta(keys.META_APPLIED)
        self.n_applied_total = 0 if raw is None else keys.decode_int(raw)
        raw = db.get_meta(keys.META_DUPLICATES)
        self.n_duplicates_total = 0 if raw is None else keys.decode_int(raw)
        self.dead_totals = {keys.strip_prefix(k, keys.DEAD): keys.decode_int(v) for k, v in db.scan(keys.DEAD)}
        pending = [keys.strip_prefix(k, keys.DIRTY) for k, _ in db.scan(keys.DIRTY)]
        self.dirty: dict[str, UserState] = {
            u: st for u, st in zip(pending, self.users.get_many(pending)) if st is not None}
        """Users changed since they were last scored (persisted as ``r:`` keys, so a restart
        rescores what a crash left pending)."""

    def apply(self, messages: Sequence[tuple[int, Event | DeadLetter]],
              sketcher: SketchUpdater | None = None, embedder: EmbeddingUpdater | None = None,
              known_items: Container[str] | None = None) -> Applied:
        """Stage the effect of ``(offset, parsed message)`` pairs, in offset order.

        With a ``sketcher`` (an EMDE model version is active) each changed user's sketch is
        updated with the user's new events, once per user and batch; with an ``embedder`` (the
        version has Cleora item vectors) the user's M′·Q embedding likewise. With
        ``known_items`` (the trained version's items, when its model codes new items by M′·Q),
        items outside it count their co-occurrences with known ones (``operators.item_links``);
        when it changes (a new version), rows of items it now knows are deleted.
        Nothing is written until :meth:`commit`.
        """
        out = Applied(batch=self.db.new_batch(), next_offset=self.next_offset)
        fresh = [(o, m) for o, m in messages if o >= self.next_offset]
        out.n_replayed = len(messages) - len(fresh)
        if not fresh:
            return out
        if known_items is not None and known_items is not self._links_known:  # a new trained version
            self.links.forget(known_items)
            self._links_known = known_items
        events = [m for _, m in fresh if isinstance(m, Event)]
        user_ids = list(dict.fromkeys(e.user_id for e in events))
        states = dict(zip(user_ids, self.users.get_many(user_ids)))
        dead_counts: dict[str, int] = {}
        fresh_items: dict[str, tuple[list[str], list[str], list[float]]] = {}
        before_batch: dict[str, UserState] = {}
        for _, msg in fresh:
            if isinstance(msg, DeadLetter):
                out.dead.append(msg)
                dead_counts[msg.reason] = dead_counts.get(msg.reason, 0) + 1
                continue
            st = states.get(msg.user_id) or UserState()
            states[msg.user_id] = st
            if msg.user_id not in before_batch and _needs_rebuild(st, sketcher, embedder):
                # the history before this batch: what a version's first fold rebuilds from (the
                # batch may cut it to history_len, which must not depend on where batches end)
                before_batch[msg.user_id] = UserState(items=list(st.items), ts=list(st.ts), types=list(st.types))
            w = self.type_weights.get(msg.type, 0.0)
            if known_items is not None and w > 0:
                before, before_ts = st.items[-self.links_window:], st.ts[-self.links_window:]
            else:
                before = before_ts = None
            if not apply_event(st, msg, self.history_len, record_items=w > 0,
                               dedupe_window_s=self.dedupe_window_s, dedupe_max_ids=self.dedupe_max_ids):
                out.n_duplicates += 1
                continue
            out.users[msg.user_id] = st
            out.n_applied += 1
            out.max_event_ts = max(out.max_event_ts, msg.ts)
            if w > 0:  # weight-0 types (served lists, impressions) neither shape nor rescore the user
                new = fresh_items.setdefault(msg.user_id, ([], [], []))
                for item_id in msg.item_ids():
                    new[0].append(item_id), new[1].append(msg.type), new[2].append(msg.ts)
                    self.popularity.add(item_id, w, msg.ts)
                    self.window.add(item_id, w, msg.ts)
                if before is not None:
                    for new_item, known_item in new_item_links(
                            before, msg.item_ids(), known_items, self.links_window,  # type: ignore[arg-type]
                            before_ts=before_ts, ts=msg.ts, max_gap_s=self.links_max_gap_s):
                        self.links.add(new_item, known_item)
        for uid, st in out.users.items():
            new = fresh_items.get(uid)
            if new is not None:
                base = before_batch.get(uid)
                if sketcher is not None:
                    sketcher.fold(st, *new, before=base)
                if embedder is not None:
                    embedder.fold(st, *new, before=None if base is None else base.items)
                if uid not in self.dirty:
                    out.batch.put(keys.dirty_key(uid), b"")
            if new is not None or uid in self.dirty:
                self.dirty[uid] = st  # the newest state is what gets scored
            self.users.stage(out.batch, uid, st)
        self.popularity.stage(out.batch)
        self.window.stage(out.batch)
        out.links = self.links.stage(out.batch)
        for reason, n in dead_counts.items():
            k = keys.dead_key(reason)
            old = self.db.get(k)
            out.batch.put(k, keys.encode_int((0 if old is None else keys.decode_int(old)) + n))
            self.dead_totals[reason] = self.dead_totals.get(reason, 0) + n
        self.n_applied_total += out.n_applied
        self.db.stage_meta(out.batch, keys.META_APPLIED, keys.encode_int(self.n_applied_total))
        if out.n_duplicates:
            self.n_duplicates_total += out.n_duplicates
            self.db.stage_meta(out.batch, keys.META_DUPLICATES, keys.encode_int(self.n_duplicates_total))
        out.next_offset = fresh[-1][0] + 1
        return out

    def commit(self, applied: Applied) -> None:
        """Write the staged batch and its next offset atomically."""
        self.db.commit(applied.batch, applied.next_offset)
        self.next_offset = applied.next_offset

    def take_dirty(self, batch: WriteBatch) -> dict[str, UserState]:
        """The users awaiting rescoring; their markers are deleted in ``batch`` (commit it after
        publishing their lists)."""
        taken, self.dirty = self.dirty, {}
        for uid in taken:
            batch.delete(keys.dirty_key(uid))
        return taken

    def dead_counts(self) -> dict[str, int]:
        """Dead letters by reason: committed ones plus those of the batch applied last (as ``n_applied_total``)."""
        return dict(self.dead_totals)
