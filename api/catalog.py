"""The catalog as the request path sees it: IQL index and vector index, fed by the catalog topic.

Two phases. **Initial load** (``initial_load=True``, how ``api.services`` wires it): while the
``catalog`` TopicTable reads the topic up to its end, the view keeps nothing (the table holds
each item as its JSON bytes). When the table has caught up, its reader thread calls
``load_initial``, which bulk-builds a new index and vector index from those bytes, 20,000
items decoded at a time, builds the vector index's first inverted lists (from ``vector_exact_below``
vectors), and queues the finished pair. **Live**: the reader thread queues each
later change (``on_update``). ``sync()``, called at the start of a request on the event-loop
thread, takes the built pair (an O(1) swap) and applies the queued changes in order, so the
indexes are changed and read by one thread at a time (the reader thread only before handing
them over) and every change is visible on the next request. ``sync_forever`` (a task on the
loop) also applies the queue in slices between requests, and ``max_queue`` makes the reader
wait for it, so a re-published catalog is never queued whole. An item is its record's key, whatever
``item_id`` the value names (as the table holds it, and as a tombstone deletes it).

Each value goes through the catalog rule's ``check_item`` first (operators/catalog_rule.py, as
``fusionrec catalog`` applies it), whoever published it: ``"deleted": true`` deletes the item as a
tombstone does, ``"deleted": false`` is dropped, any other ``deleted`` rejects the item, and so does
a vector that is not a flat array of finite numbers (of ``vector_dim`` numbers when set), and so does an
item over a size limit (``check_size`` with ``limits``: checked on the reader thread, at the initial load
and for a live change in ``on_update``, never on the event loop; both measure the item without ``deleted``
as compact JSON, the record's length standing in only when the item cannot be over), and so is an item
that would bring the catalog's distinct attribute names beyond ``limits.max_attribute_names``
(``CatalogIndex``'s ``max_attribute_names``, applied as the item is indexed).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from api.filter_cache import BitmapCache, in_bitmap
from api.id_bridge import IdBridge
from api.iql import CatalogIndex, CatalogSchemaError, IQLEngine
from api.iql.index import BUILD_CHUNK_ITEMS
from api.vector_index import VectorIndex
from operators.catalog_rule import (
    DELETED,
    CatalogLimits,
    CatalogSizeError,
    CatalogValueError,
    check_item,
    check_size,
    check_vector,
)
from operators.settings import ApiSettings

__all__ = ["CatalogView", "sync_forever"]

log = logging.getLogger(__name__)

_NEVER = 2**62  # a VectorIndex exact_below that is never reached
_BUILT = "\0built"  # queue key of a (CatalogIndex, VectorIndex, rejected) built by ``load_initial``


class _TooLarge(str):
    """A queued change ``on_update`` found over a size limit: the reason (``sync`` rejects the item)."""


class CatalogView:
    """CatalogIndex + IQLEngine (+ a cache of its results) + VectorIndex, updated from a queue of catalog changes.

    Parameters
    ----------
    vector_attribute : str
        Attribute holding an item's dense vector.
    exclude : iterable of str
        Attributes IQL does not index (modality payloads); the vector attribute is always excluded.
    hidden_attribute, in_stock_attribute, stock_attribute : str or None
        The availability rule: an item with ``hidden == true``, ``in_stock == false`` or
        ``stock <= 0`` is never served (None switches a rule off). Their types are fixed (bool, bool,
        number) whatever value comes first, on the bulk and live paths alike (``CatalogIndex``):
        ``"hidden": "true"`` hides the item, ``"hidden": "maybe"`` rejects it.
    attributes_cache_items : int
        Items whose attributes ``item_attributes`` keeps between catalog changes (LRU).
    max_queue : int or None
        Changes queued at most: at this length ``on_update`` (the reader thread) waits, up to
        ``max_wait_s``, for ``sync`` to make room, so a re-published catalog never waits as 1M
        decoded items (with ``sync_forever`` running on the loop; None = unbounded).
    max_wait_s : float
        The longest ``on_update`` waits for room before queueing anyway (a loop that stopped
        syncing must not stop the reader).
    initial_load : bool
        Ignore ``on_update`` until ``load_initial`` has built the catalog read so far (the
        TopicTable holds it); ``initial_built`` is False until then. False: every change is queued
        from the start (no initial phase).
    vector_exact_below : int
        Live vectors below which the visual arm's queries are exact (``api.vector_exact_below``;
        ``VectorIndex``'s ``exact_below``).
    vector_dim : int or None
        Length of every vector (``api.vector_dim``); None: the first vector's length.
    vector_n_probe : int
        Inverted lists a visual query ranks exactly first (``api.vector_n_probe``; ``VectorIndex``'s
        ``n_probe``).
    vector_build_gate : threading.Event or None
        A background build of the vector index ``load_initial`` builds waits for it (at most ``vector_gate_wait_s``)
        before laying out its inverted lists (``VectorIndex``'s ``build_gate``): the app sets it once the model
        version has loaded (``api.app``). The first lists of a catalog that has ``vector_exact_below`` vectors at
        its initial load are built in line, before the swap, and never wait; the gate holds a build that starts
        later (a catalog that reaches the size by live changes) until the version is in. None: no wait.
    vector_gate_wait_s : float
        The longest that build waits (``api.vector_build_waits_for_model_s``).
    limits : CatalogLimits, optional
        The size rule (``api.catalog_max_*``): an item over a limit is rejected; None: no limit.
    """

    def __init__(self, vector_attribute: str = "vector", exclude: Iterable[str] = (), *,
                 hidden_attribute: str | None = "hidden", in_stock_attribute: str | None = "in_stock",
                 stock_attribute: str | None = "stock", attributes_cache_items: int = 20_000,
                 initial_load: bool = False, max_queue: int | None = None, max_wait_s: float = 10.0,
                 vector_exact_below: int = 50_000, vector_dim: int | None = None, vector_n_probe: int = 48,
                 vector_build_gate: threading.Event | None = None, vector_gate_wait_s: float = 120.0,
                 limits: CatalogLimits | None = None) -> None:
        self.vector_attribute = vector_attribute
        self.limits = limits
        self._index_options: dict[str, Any] = dict(
            exclude=set(exclude) | {vector_attribute}, hidden_attribute=hidden_attribute,
            in_stock_attribute=in_stock_attribute, stock_attribute=stock_attribute,
            # objects and lists of numbers are kept in the item, not indexed: the catalog rule's ``unindexed``
            # (fusionrec catalog publishes them), never a reason to reject the item
            skip_unsupported=True,
            max_attribute_names=None if limits is None else limits.max_attribute_names)
        self.vector_dim, self.vector_n_probe = vector_dim, vector_n_probe
        self.vector_build_gate, self.vector_gate_wait_s = vector_build_gate, vector_gate_wait_s
        self._use(CatalogIndex(**self._index_options),
                  VectorIndex(vector_dim, exact_below=vector_exact_below, n_probe=vector_n_probe))
        self._queue: deque[tuple[str, object | None]] = deque()
        self.max_queue, self.max_wait_s = max_queue, max_wait_s
        self.build_chunk_items = BUILD_CHUNK_ITEMS  # items load_initial decodes and indexes together
        self._room = threading.Event()  # set by sync after it has taken changes off the queue
        self._loading = initial_load  # reader thread: drop changes until load_initial has run
        self.initial_built = not initial_load  # set by the reader thread once load_initial has queued its result
        self.n_rejected = 0  # catalog messages rejected by the schema rule so far
        self.rejected: dict[str, str] = {}  # item_id -> reason, for items whose latest version was rejected
        self.version = 0  # bumped by every sync that applied a change (caches key on it)
        self.attributes_cache_items = attributes_cache_items
        self._attributes: OrderedDict[str, Mapping[str, Any] | None] = OrderedDict()
        self._attributes_version = 0

    def _use(self, index: CatalogIndex, vectors: VectorIndex) -> None:
        """Serve from ``index`` and ``vectors`` (with a new engine and filter cache over them)."""
        self.index, self.vectors = index, vectors
        self.engine = IQLEngine(index)
        self.bitmaps = BitmapCache(index)
        self.id_bridge = IdBridge()  # model / vector positions -> this index's item_idx

    def on_update(self, item_id: str, item: object | None) -> None:
        """TopicTable callback (reader thread): queue the change (dropped during the initial load:
        ``load_initial`` reads it from the table)."""
        if self._loading:
            return
        if self.limits is not None and isinstance(item, dict) and item.get(DELETED) is not True:
            try:  # here, not in ``sync``: encoding the item to measure it is no work for the event loop
                # measured as check_item leaves it (``deleted`` is a command, never an attribute), as load_initial does
                check_size({k: v for k, v in item.items() if k != DELETED} if DELETED in item else item, self.limits)
            except CatalogSizeError as exc:
                item = _TooLarge(exc)
        q = self._queue
        q.append((item_id, item))
        if self.max_queue is not None and len(q) >= self.max_queue:
            deadline = time.monotonic() + self.max_wait_s
            self._room.clear()
            while len(q) >= self.max_queue and time.monotonic() < deadline:
                self._room.wait(0.05)

    @classmethod
    def from_settings(cls, a: ApiSettings, **kwargs: Any) -> CatalogView:
        """The view the API serves from, configured by the ``[api]`` settings (vector attribute, excluded
        attributes, serving rules, ``vector_exact_below``, ``vector_dim``, ``vector_n_probe``; with
        ``vector_build_waits_for_model_s`` > 0 a ``vector_build_gate`` that ``load_initial``'s build waits for;
        the size limits ``catalog_max_*``);
        ``kwargs`` are the other constructor arguments (``initial_load``, ``max_queue``, ...)."""
        gate = threading.Event() if a.vector_build_waits_for_model_s > 0 else None
        return cls(a.vector_attribute, a.catalog_exclude, hidden_attribute=a.hidden_attribute,
                   in_stock_attribute=a.in_stock_attribute, stock_attribute=a.stock_attribute,
                   vector_exact_below=a.vector_exact_below, vector_dim=a.vector_dim,
                   vector_n_probe=a.vector_n_probe, vector_build_gate=gate,
                   vector_gate_wait_s=a.vector_build_waits_for_model_s, limits=CatalogLimits.from_settings(a),
                   **kwargs)

    def load_initial(self, items: Iterable[tuple[str, bytes]], decode: Callable[[bytes], object],
                     deleted: Iterable[str] = ()) -> None:
        """Bulk-build the index and vector index from a table's held values and queue them for ``sync``.

        Called once, on the TopicTable's reader thread, when it has caught up (``on_caught_up``);
        changes it reads later are queued behind the built pair, so none is lost or applied twice.
        The items are decoded a chunk at a time (``build_chunk_items``, 20,000): the
        decoded catalog is never held whole. Items are rejected as ``sync`` rejects them.

        Parameters
        ----------
        items : iterable of (key, JSON bytes)
            The latest value of each catalog key (``TopicTable.raw_items()``).
        decode : callable bytes -> object
            The table's decoder (``orjson.loads``).
        deleted : iterable of str
            Keys whose latest record deletes them (``TopicTable.tombstoned_keys()``): known to the index
            and never served, as the live path leaves a deleted item, so a restarted or new node does
            not serve again an item the catalog deleted (while the topic still holds the tombstone).
        """
        # inverted lists trained once, after the last row (below): trained while rows arrive, at 50k, 200k and
        # 800k rows, then added to row by row, 1M sets took ~5x longer
        t0 = time.monotonic()
        vectors = VectorIndex(self.vector_dim, exact_below=_NEVER, n_probe=self.vector_n_probe,
                              build_gate=self.vector_build_gate, gate_wait_s=self.vector_gate_wait_s)
        rejected: dict[str, str] = {}
        gone: list[str] = list(deleted)  # tombstones, and records that delete themselves

        def reject(item: Mapping[str, Any], exc: Exception) -> None:
            key = str(item["item_id"])  # the record's key (see ``decoded``)
            rejected[key] = str(exc)
            vectors.delete(key)
            log.warning("catalog item rejected: %s", exc)

        def decoded() -> Iterable[Mapping[str, Any]]:
            for key, raw in items:
                item = decode(raw)
                if not isinstance(item, dict):
                    rejected[key] = "not a JSON object"
                    log.warning("catalog item %r is not a JSON object; rejected", key)
                    continue
                try:
                    checked, vec = self._check(item, len(raw))
                except CatalogValueError as exc:
                    rejected[key] = str(exc)
                    log.warning("catalog item %r rejected: %s", key, exc)
                    continue
                if checked is None:  # "deleted": true: as a tombstone
                    gone.append(key)
                    continue
                if vec is not None:
                    vectors.set(key, vec)
                yield {**checked, "item_id": key}  # an item is its record's key (``sync``'s rule)

        index = CatalogIndex.build(decoded(), on_reject=reject, chunk_items=self.build_chunk_items,
                                   **self._index_options)
        # the serving value (api.vector_exact_below): the first lists are built here, on the reader thread, before
        # the pair is queued: the index is served with its lists from the first request (no exact scans of every
        # row), and their layout (~100 MB beside the row matrix at 1M rows, which it then replaces) is over before
        # the model version loads (api.app; bench/RESULTS.md, issue 14)
        vectors.set_exact_below(self.vectors.exact_below, in_line=True)
        for key in (*rejected, *gone):
            index.withdraw(key)
        self._queue.append((_BUILT, (index, vectors, rejected)))
        log.info("catalog index built: %d items (%d rejected, %d with vectors) in %.1f s",
                 len(index), len(rejected), len(vectors), time.monotonic() - t0)
        self._loading = False
        self.initial_built = True

    def sync(self, max_items: int | None = None) -> int:
        """Apply queued changes (call on the thread that serves requests); returns how many.

        ``max_items`` bounds one call (``sync_forever``'s slices); without it, a call applies what was
        queued when it started (at most ``max_queue``): not the changes the reader thread adds meanwhile,
        which a bulk re-publish would otherwise feed into one request for as long as it lasts."""
        q = self._queue
        if q:
            self.version += 1
        n = 0
        limit = len(q) if max_items is None else max_items
        while q and n < limit:
            n += 1
            item_id, item = q.popleft()
            if item_id == _BUILT and isinstance(item, tuple):
                index, vectors, rejected = item
                self._use(index, vectors)
                self.rejected = dict(rejected)
                self.n_rejected += len(rejected)
                continue
            vec = None
            if isinstance(item, _TooLarge):  # on_update's size rule
                self._reject(item_id, str(item))
                continue
            if isinstance(item, dict):
                try:  # the catalog rule's command and vector: "deleted": true is a tombstone
                    item, vec = self._check(item)
                except CatalogValueError as exc:
                    self._reject(item_id, str(exc))
                    continue
            if item is None:  # a tombstone or "deleted": true: known and never served (load_initial's rule)
                self.index.withdraw(item_id)
                self.vectors.delete(item_id)
                self.rejected.pop(item_id, None)
                continue
            if not isinstance(item, Mapping):
                self._reject(item_id, "not a JSON object")
                continue
            try:
                # an item is its record's key: a value naming another id (or the same id written
                # another way) is indexed, deleted and rejected under the key, as the table holds it
                self.index.upsert({**item, "item_id": item_id})
            except CatalogSchemaError as exc:
                # the catalog rule (operators/catalog_rule.py): a value that does not fit even after
                # coercion rejects the whole item, so nothing serves it with a value the filter cannot see
                self._reject(item_id, str(exc))
                continue
            self.rejected.pop(item_id, None)
            if vec is not None:
                self.vectors.set(item_id, vec)
            else:
                self.vectors.delete(item_id)
        if n:
            self._room.set()
        return n

    def _check(self, item: Mapping[str, Any], record_bytes: int | None = None
               ) -> tuple[Mapping[str, Any] | None, NDArray[np.float32] | None]:
        """The catalog rule for one value: ``check_item``'s ``deleted`` command (None: a tombstone), and
        the vector as ``check_vector`` returns it (None: no vector), so ``VectorIndex.set`` gets it checked
        once; with ``record_bytes`` (the record's size, at the initial load) the size rule too, measuring the
        kept item as ``on_update`` does for a live change (``check_size``: compact JSON; the record's size only
        when the item cannot be over). Raises ``CatalogValueError`` as they do."""
        kept = check_item(item)
        if kept is not None and record_bytes is not None and self.limits is not None:
            check_size(kept, self.limits, record_bytes)
        vec = None if kept is None or self.vector_attribute is None else kept.get(self.vector_attribute)
        return kept, None if vec is None else check_vector(self.vector_attribute, vec, self.vector_dim)

    def _reject(self, item_id: str, reason: str) -> None:
        """``sync``'s step for a value the catalog rule rejects: counted, known but never served."""
        self.n_rejected += 1
        self.rejected[item_id] = reason
        self.index.withdraw(item_id)
        self.vectors.delete(item_id)
        log.warning("catalog item %r rejected: %s", item_id, reason)

    def item_attributes(self, item_id: str) -> Mapping[str, Any] | None:
        """``index.get(item_id)`` (the item's indexed attributes, None if unknown or deleted), kept until the
        catalog changes: a request's ``context.item`` without rebuilding it from every column. The mapping
        is shared by later requests: read it, never change it. Call ``sync()`` first."""
        cache = self._attributes
        if self._attributes_version != self.version:
            cache.clear()
            self._attributes_version = self.version
        try:
            found = cache[item_id]
        except KeyError:
            found = cache[item_id] = self.index.attributes(item_id)  # attributes read as the request asks for them
            if len(cache) > self.attributes_cache_items:
                cache.popitem(last=False)
            return found
        cache.move_to_end(item_id)
        return found

    def intern_ids(self, item_ids: list[str]) -> bool:
        """``ModelWatcher``'s ``intern_ids``: once a catalog is in use (``index.capacity > 0``), replace in place each
        id of ``item_ids`` (a model version's) the catalog knows by the catalog's own equal string and return True;
        False until then, so the watcher tries again at its next check (a version is often loaded before the
        catalog is built: ``/metrics`` asks for it). Call on the thread that serves requests (it reads the index)."""
        if self.index.capacity == 0:
            return False
        n = self.index.intern_ids(item_ids)
        log.info("model item ids: %d of %d share the catalog's strings", n, len(item_ids))
        return True

    @property
    def n_items(self) -> int:
        """Items in the catalog as applied so far: indexed (hidden and out-of-stock ones included) plus
        rejected by the catalog rule; deleted ones (a tombstone or ``"deleted": true``) are not counted,
        though the topic may still hold a record for them. Call ``sync()`` first for the newest count."""
        return len(self.index.existing) + len(self.rejected)

    def item_idx(self, names: Sequence[str], positions: NDArray[np.integer], root: Sequence[str] | None = None
                 ) -> NDArray[np.int64]:
        """item_idx (int64; -1 unknown) of ``names[positions]``, where ``names`` is an append-only id list (a
        model version's ``item_ids``, the vector index's ``ids``; ``root``: the list it extends, see
        ``IdBridge.item_idx``): ``index.lookup`` without a string per position once it was read before
        (``api.id_bridge.IdBridge``). Call ``sync()`` first."""
        return self.id_bridge.item_idx(self.index, names, positions, root)

    def servable(self, item_ids: Sequence[str]) -> NDArray[np.bool_]:
        """Mask over ``item_ids``: False for items the catalog has deleted, hidden or marked out of stock.

        Ids the catalog never held are kept (a shop may serve without publishing a catalog). Cost
        O(len(item_ids)): one dict lookup and one bitmap probe per id. Call ``sync()`` first.
        """
        if self.index.capacity == 0:
            return np.ones(len(item_ids), dtype=bool)
        idx = self.index.lookup(item_ids)
        return (idx < 0) | in_bitmap(self.index.live, idx)


async def sync_forever(view: CatalogView, interval_s: float = 0.05, max_items: int = 1_000) -> None:
    """Apply the view's queued changes on the app's event loop, a bounded slice at a time, until
    cancelled: the initial build is swapped in and a re-published catalog applied without waiting for
    requests, and ``on_update`` finds room (``max_queue``). A slice of 1,000 changes holds the loop
    ~20 ms; a full slice yields at once."""
    while True:
        n = view.sync(max_items)
        await asyncio.sleep(0 if n >= max_items else interval_s)
