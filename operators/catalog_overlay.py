"""New catalog items on top of a trained EMDE version: an extended ModelVersion for scoring.

The ``catalog`` topic (key = item_id, value = item dict with a ``title``) is read into memory
(``operators.topic_table.TopicTable``). Items it holds that the trained version does not know
get codes at once from their titles (``models.emde.cold_start.extend_emde``: each borrows the
codes of its nearest known item by hashed title vector), so they are recommendable and
findable by ``similar_items`` within about a second, without retraining.

Once a new item has interactions, its graph modalities get their own codes by Cleora's M′·Q:
each partition of the stream counts the item's co-occurrences with known items in users'
recent histories (``operators.item_links``, exactly once in its RocksDB) and publishes its
row to the compacted ``item-links`` topic (key ``<item_id>@<partition>``); the overlay sums
the partitions' rows into M′ and codes the item with the modality's DLSH codebook
(``models.emde.cold_start.inductive_codes``). An item with interactions but no title match
joins too.

Only **scoring** uses the extended version (the readout over items, ``similar_items``). The
per-user sketches in the stream are folded with the **base** version's item_index, so the
state never depends on when the catalog was read (exactly-once state, ``kill -9`` test): an
event on a new item is kept in the user's history but adds nothing to the sketch until a
trained version knows the item (the lazy rebuild on a version change then folds it).

The extended version has its own version string, ``<base>+<n_new>.<hash of their ids and
codes>``, so anything cached per version (the API's candidate cache) sees the change; its
manifest keeps ``base_version``, ``catalog_items`` and ``linked_items`` (items coded by M′·Q).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
import scipy.sparse as sp

from operators.catalog_rule import CatalogValueError, check_item
from operators.id_index import IdIndex
from operators.model_version import ModelVersion, ModelWatcher

__all__ = ["CatalogItems", "CatalogOverlay", "CatalogModelWatcher", "supports_extension", "supports_links",
           "links_key", "encode_links"]

log = logging.getLogger(__name__)


class CatalogItems(Protocol):
    """What the overlay reads from the catalog (``TopicTable`` satisfies it)."""

    n_messages: int

    def items(self) -> list[tuple[str, object]]: ...


def supports_extension(version: ModelVersion | None) -> bool:
    """True when the version's model has EMDE item code tables that new items can join."""
    m = None if version is None else version.model
    return m is not None and all(hasattr(m, a) for a in ("item_in_cols_", "item_out_cols_", "codes_", "n_items_"))


def supports_links(version: ModelVersion | None) -> bool:
    """True when new items can also get graph codes by M′·Q (the EMDE keeps its graph vectors)."""
    return supports_extension(version) and bool(getattr(version.model, "graph_vectors_", None))  # type: ignore[union-attr]


def links_key(item_id: str, partition: int) -> bytes:
    """Key of one partition's row of a new item on the ``item-links`` topic."""
    return f"{item_id}@{partition}".encode()


def encode_links(item_id: str, counts: dict[str, int]) -> bytes:
    """Value on the ``item-links`` topic: ``{"item_id": ..., "links": {known item id: count}}``."""
    return orjson.dumps({"item_id": item_id, "links": counts})


class CatalogOverlay:
    """``apply(base)``: the base version plus the catalog's unknown items (EMDE only).

    Rebuilt at most once per ``min_interval_s`` and only when the catalog or the item links
    (their message counts) changed; otherwise the last extended version is returned as is. A
    new base version is extended at once, on the caller's thread. Other rebuilds run on a
    background thread (``background=True``): ``apply`` never waits for them and returns the
    last extension of the same base meanwhile, so neither the API's event loop nor the flow's
    batches stall on a rebuild. Title neighbours are cached per item and title, so a rebuild
    for changed links recomputes only M′·Q. Thread-safe.

    Parameters
    ----------
    catalog : CatalogItems
        The catalog read into memory, values item dicts.
    links : CatalogItems, optional
        The ``item-links`` topic read into memory (values from :func:`encode_links`); without
        it new items keep their title codes until the next training.
    min_links : float, default 3
        Co-occurrences (summed over partitions) before an item's graph codes are its own: one
        shopper's single co-view does not replace what its title says.
    min_interval_s : float, default 1.0
        Debounce of rebuilds while the catalog or the links change.
    background : bool, default True
        Rebuild for a changed catalog or links on a background thread (False: on the caller's).
    title_field : str, default "title"
    k, dim, seed, min_cosine
        Passed to :func:`models.emde.cold_start.extend_emde`.
    clock : callable, default time.monotonic
    """

    def __init__(self, catalog: CatalogItems, *, links: CatalogItems | None = None, min_links: float = 3.0,
                 min_interval_s: float = 1.0, background: bool = True, title_field: str = "title", k: int = 1,
                 dim: int = 512, seed: int = 0, min_cosine: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.catalog = catalog
        self.links = links
        self.min_links = min_links
        self.min_interval_s = min_interval_s
        self.background = background
        self.title_field = title_field
        self.extend_kw: dict[str, Any] = {"k": k, "dim": dim, "seed": seed, "min_cosine": min_cosine}
        self.clock = clock
        self._lock = threading.Lock()  # guards the fields below (held briefly)
        self._build_lock = threading.Lock()  # one build at a time
        self._base: ModelVersion | None = None  # newest base seen
        self._extended: ModelVersion | None = None
        self._extended_base: ModelVersion | None = None  # the base _extended was built from
        self._building = False
        self._seen = -1  # catalog + links message counts at the last build
        self._built_s = -float("inf")
        self._known_titles: list[str | None] | None = None
        self._known_vectors: np.ndarray | None = None
        self._title_cache: dict[str, tuple[str | None, np.ndarray, np.ndarray]] = {}  # id -> (title, idx, cos)
        self.n_builds = 0
        self._logged: tuple[str, int, int] = ("", -1, -1)

    def _n_messages(self) -> int:
        return self.catalog.n_messages + (0 if self.links is None else self.links.n_messages)

    def _for(self, base: ModelVersion) -> ModelVersion:
        """The newest extension of ``base`` (``base`` itself while none is built)."""
        return self._extended if self._extended_base is base and self._extended is not None else base

    def apply(self, base: ModelVersion | None) -> ModelVersion | None:
        """The version to score with: ``base`` extended by the catalog's new items.

        Non-EMDE versions and ``None`` are returned unchanged.
        """
        if not supports_extension(base):
            return base
        assert base is not None
        with self._lock:
            n = self._n_messages()
            if base is self._base:
                due = n != self._seen and not self._building and self.clock() - self._built_s >= self.min_interval_s
                if not due:
                    return self._for(base)
                self._seen, self._built_s = n, self.clock()
                if self.background:
                    self._building = True
                    threading.Thread(target=self._rebuild, args=(base, True), name="catalog-overlay",
                                     daemon=True).start()
                    return self._for(base)
            else:
                self._base, self._seen, self._built_s = base, n, self.clock()
        self._rebuild(base, False)
        with self._lock:
            return self._for(base)

    def _rebuild(self, base: ModelVersion, background: bool) -> None:
        with self._build_lock:
            ext: ModelVersion | None = None
            failed = False
            if base is self._base:  # else a newer base arrived meanwhile: this build is obsolete
                try:
                    ext = self._build(base)
                except Exception:  # keep scoring with what we have; the error is logged
                    log.exception("cannot extend model version %s with the catalog", base.version)
                    failed = True
            with self._lock:
                if background:
                    self._building = False
                if failed and base is self._base:
                    self._seen = -1  # retry after the debounce interval, even if nothing changes
                if base is self._base and (ext is not None or self._extended_base is not base):
                    self._extended, self._extended_base = ext or base, base

    def _titles(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item_id, item in self._items():
            title = item.get(self.title_field)
            if isinstance(title, str) and title.strip():
                out[item_id] = title
        return out

    def _items(self) -> list[tuple[str, dict[str, Any]]]:
        """The catalog's items as the API's index takes them (the catalog rule's ``check_item``, its ``deleted``
        command): a value that deletes itself (``"deleted": true``), has another ``deleted`` than a bool, or is
        not a JSON object is no item."""
        out = []
        for item_id, item in self.catalog.items():
            if not isinstance(item, dict):
                continue
            try:
                if check_item(item) is not None:
                    out.append((item_id, item))
            except CatalogValueError:
                continue
        return out

    def _links(self, base: ModelVersion, new_ids: list[str]) -> sp.csr_array | None:
        """M′ before normalisation: (len(new_ids), n_items) co-occurrence counts summed over
        partitions; rows under ``min_links`` in total are emptied. None without a links table."""
        if self.links is None:
            return None
        row_of = {i: r for r, i in enumerate(new_ids)}
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for _, v in self.links.items():  # rows that are not what encode_links writes are skipped
            item = v.get("item_id") if isinstance(v, dict) else None
            r = row_of.get(item) if isinstance(item, str) else None
            if r is None or not isinstance(v.get("links"), dict):  # type: ignore[union-attr]
                continue
            for known, count in v["links"].items():  # type: ignore[index]
                c = base.item_index.get(known)
                if (c is not None and isinstance(count, int | float) and not isinstance(count, bool)
                        and math.isfinite(count) and count > 0):
                    rows.append(r)
                    cols.append(c)
                    vals.append(min(float(count), 1e9))
        m = sp.csr_array(sp.coo_array((np.asarray(vals, np.float32), (np.asarray(rows, np.int64),
                                                                          np.asarray(cols, np.int64))),
                                      shape=(len(new_ids), len(base.item_ids))))  # partitions' rows summed
        m.sum_duplicates()
        weak = np.asarray(m.sum(axis=1)).ravel() < self.min_links
        return sp.csr_array(sp.diags_array((~weak).astype(np.float32)) @ m)

    def _title_neighbours(self, base: ModelVersion, titles: dict[str, str], new_ids: list[str]
                          ) -> tuple[np.ndarray, np.ndarray]:
        """``nearest_known`` of the new items' titles, cached per (item, title) for this base."""
        from models.emde.cold_start import nearest_known, title_vectors  # imported (with torch) only for EMDE
        known = [titles.get(i) for i in base.item_ids]
        if base is not self._extended_base or known != self._known_titles or self._known_vectors is None:
            self._known_titles = known
            self._known_vectors = title_vectors(known, self.extend_kw["dim"], self.extend_kw["seed"])
            self._title_cache = {}
        todo = [i for i in new_ids if i not in self._title_cache or self._title_cache[i][0] != titles.get(i)]
        if todo:
            idx, cos = nearest_known(title_vectors([titles.get(i) for i in todo], self.extend_kw["dim"],
                                                   self.extend_kw["seed"]), self._known_vectors, self.extend_kw["k"])
            self._title_cache.update((i, (titles.get(i), idx[j], cos[j])) for j, i in enumerate(todo))
        self._title_cache = {i: self._title_cache[i] for i in new_ids}  # items that left the catalog go
        cached = [self._title_cache[i] for i in new_ids]
        k = min(self.extend_kw["k"], len(base.item_ids))
        return (np.array([c[1] for c in cached], np.int32).reshape(len(new_ids), k),
                np.array([c[2] for c in cached], np.float32).reshape(len(new_ids), k))

    def _build(self, base: ModelVersion) -> ModelVersion:
        """Extend ``base`` with the catalog items it does not know (sorted by id) that have a
        title match or links."""
        from models.emde.cold_start import extend_emde  # imported (with torch) only for EMDE versions

        self.n_builds += 1
        titles = self._titles()
        new_ids = sorted(i for i, _ in self._items() if i not in base.item_index)
        if not new_ids:
            return base
        neighbours = self._title_neighbours(base, titles, new_ids)
        links = self._links(base, new_ids) if supports_links(base) else None
        model, _, added_mask = extend_emde(base.model, [titles.get(i) for i in new_ids], self._known_vectors,  # type: ignore[arg-type]
                                           links=links, new_ids=new_ids, title_neighbours=neighbours,
                                           **self.extend_kw)
        added = [i for i, ok in zip(new_ids, added_mask) if ok]
        if not added:
            return base
        n_linked = 0 if links is None else int((np.diff(links.indptr) > 0)[added_mask].sum())
        h = hashlib.blake2b("\n".join(added).encode(), digest_size=3)
        for name in sorted(model.codes_):
            h.update(np.ascontiguousarray(model.codes_[name][len(base.item_ids):]).tobytes())
        nb = getattr(model, "neighbours_", None)
        if nb is not None:  # knn views: the new items' neighbour rows (from links) change scores too
            rows = sp.csr_array(nb[len(base.item_ids):])
            h.update(rows.indices.tobytes() + rows.data.tobytes() + rows.indptr.tobytes())
        item_ids = list(base.item_ids) + added
        counts = (base.version, len(added), n_linked)
        log.log(logging.INFO if counts[:2] != self._logged[:2] else logging.DEBUG,  # INFO when the item set grows
                "model version %s: %d new catalog items scorable (%d with enough interactions for M′·Q, "
                "%d without title match or links)", base.version, len(added), n_linked, len(new_ids) - len(added))
        self._logged = counts
        return replace(base, version=f"{base.version}+{len(added)}.{h.hexdigest()}", model=model,
                       item_ids=item_ids, item_index=IdIndex(item_ids),
                       root_item_ids=base.root_item_ids or base.item_ids,
                       manifest={**base.manifest, "base_version": base.version, "catalog_items": len(added),
                                 "linked_items": n_linked})


class CatalogModelWatcher(ModelWatcher):
    """A :class:`ModelWatcher` whose ``current()`` is extended by a :class:`CatalogOverlay`.

    For readers that only score (the API): ``current()`` = ``overlay.apply(newest trained version)``.
    """

    def __init__(self, model_dir: Path, overlay: CatalogOverlay, check_every_s: float = 2.0,
                 intern_ids: Callable[[list[str]], bool] | None = None) -> None:
        super().__init__(model_dir, check_every_s, intern_ids)
        self.overlay = overlay

    def current(self) -> ModelVersion | None:
        return self.overlay.apply(super().current())
