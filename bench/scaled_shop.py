"""A vectorised synthetic shop for benches at catalog sizes ``SyntheticShop`` cannot build (1M items).

``simulators.SyntheticShop`` wires each item's co-visitation successors one item at a time (a
NumPy copy of the item's whole (category, brand) group per item: O(n_items x group size), hours
at 1M items) and generates sessions event by event in Python. ``ScaledShop`` builds the same
kind of data with array operations only:

* a catalog with the attributes the API benches filter and boost on (``category``, ``brand``,
  ``price``, ``on_sale``, ``tags``, ``created_ts``, a ``title`` and a 16-float ``vector``), item ids
  ``simulators.catalog.item_id_of`` (``i000123``);
* a training log (``InteractionLog``) of sessions that walk co-visitation successors within an
  item's (category, brand) group or jump to a popular item, for a co-visitation model;
* live events (``view``) of ``n_users`` users for the ingest load.

Item popularity is log-normal, as in ``simulators/catalog.py``. Deterministic for a seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from numpy.typing import NDArray

from models.base import InteractionLog
from operators.model_registry import write_card
from operators.model_version import point_latest
from operators.schema import Event
from operators.settings import Settings
from operators.training import fit_model, log_card, train_covisitation, weighted_types, write_fitted
from simulators.catalog import item_id_of
from simulators.shop import SyntheticShop
from simulators.tastes import user_id_of

__all__ = ["ScaledShop", "BenchData", "SCALED_FROM"]

SCALED_FROM = 100_000
"""From this many items on, the data come from ``bench.scaled_shop.ScaledShop`` (array operations)
instead of ``SyntheticShop`` (whose per-item successor wiring takes hours at 1M items)."""

_CATEGORIES = ("shoes", "kitchen", "books", "toys", "garden", "beauty", "sports", "music", "office", "pets",
               "jewelry", "outdoor", "baby", "tools", "grocery", "games", "lighting", "bags", "watches", "bedding")
_TAGS = ("bestseller", "limited", "gift", "bundle", "organic", "imported", "handmade", "refurbished")
_BRANDS_PER_CATEGORY = 6
_VECTOR_DIM = 16
_SESSION_LEN = 6
_FOLLOW_P = 0.7
"""Probability that a session's next item is a co-visitation successor of the current one."""


class ScaledShop:
    """Catalog columns, co-visitation successors and sessions drawn with array operations.

    Parameters
    ----------
    n_items, n_users : int
        Catalog size and number of users of the live events.
    seed : int
        Seed of the one ``np.random.default_rng`` everything is drawn from.
    start_ts : float
        Epoch seconds: the training sessions end here.
    """

    def __init__(self, n_items: int, n_users: int, seed: int = 0, *, start_ts: float = 1_700_000_000.0) -> None:
        if n_items < 10 or n_users < 1:
            raise ValueError(f"n_items must be >= 10 and n_users >= 1; got {n_items}, {n_users}")
        self.n_items, self.n_users, self.start_ts = n_items, n_users, start_ts
        rng = self._rng = np.random.default_rng(seed)
        c = len(_CATEGORIES)
        self.category = rng.integers(0, c, n_items).astype(np.int32)
        bw = 1.0 / np.arange(1, _BRANDS_PER_CATEGORY + 1)
        self.brand = (self.category * _BRANDS_PER_CATEGORY
                      + rng.choice(_BRANDS_PER_CATEGORY, n_items, p=bw / bw.sum())).astype(np.int32)
        base = np.exp(rng.uniform(1.5, 5.0, c))
        brand_price = np.exp(rng.normal(0.0, 0.3, c * _BRANDS_PER_CATEGORY))
        self.price = np.round(base[self.category] * brand_price[self.brand] * rng.lognormal(0.0, 0.4, n_items), 2)
        self.on_sale = rng.random(n_items) < 0.1
        self.tag_mask = rng.random((n_items, len(_TAGS))) < 0.15
        self.created_ts = start_ts - rng.uniform(0.0, 365 * 86400.0, n_items)
        centroid = rng.normal(size=(c, _VECTOR_DIM))
        centroid /= np.linalg.norm(centroid, axis=1, keepdims=True)
        offset = 0.3 * rng.normal(size=(c * _BRANDS_PER_CATEGORY, _VECTOR_DIM)) / np.sqrt(_VECTOR_DIM)
        self.vector = (centroid[self.category] + offset[self.brand]
                       + 0.6 * rng.normal(size=(n_items, _VECTOR_DIM)) / np.sqrt(_VECTOR_DIM)).astype(np.float32)
        pop = rng.lognormal(0.0, 1.0, n_items)
        self.popularity_p = pop / pop.sum()
        self.brand_names = [f"Brand{b}" for b in range(c * _BRANDS_PER_CATEGORY)]
        self.successors = self._wire_successors(rng)

    def _wire_successors(self, rng: np.random.Generator) -> NDArray[np.int64]:
        """Three random members of each item's (category, brand) group (itself excluded when the group has others)."""
        order = np.argsort(self.brand, kind="stable")
        groups = self.brand[order]
        start = np.searchsorted(groups, self.brand, side="left")
        size = np.searchsorted(groups, self.brand, side="right") - start
        pos_of = np.empty(self.n_items, dtype=np.int64)
        pos_of[order] = np.arange(self.n_items)
        own = pos_of - start  # the item's own position in its group
        draw = (rng.random((self.n_items, 3)) * np.maximum(size - 1, 1)[:, None]).astype(np.int64)
        draw += (draw >= own[:, None]) & (size[:, None] > 1)  # skip the item itself
        return order[start[:, None] + np.minimum(draw, size[:, None] - 1)]

    def item_id(self, item_idx: int) -> str:
        """The string id of dense item index ``item_idx`` (``simulators.catalog.item_id_of``)."""
        return item_id_of(item_idx)

    def catalog(self, *, vectors: bool = True, chunk: int = 50_000) -> Iterator[dict]:
        """Item records in item-index order, built a chunk of columns at a time (``SyntheticShop.catalog``'s fields)."""
        for lo in range(0, self.n_items, chunk):
            hi = min(lo + chunk, self.n_items)
            cat, brand = self.category[lo:hi].tolist(), self.brand[lo:hi].tolist()
            price, sale = self.price[lo:hi].tolist(), self.on_sale[lo:hi].tolist()
            created = np.round(self.created_ts[lo:hi], 3).tolist()
            vecs = np.round(self.vector[lo:hi].astype(np.float64), 5).tolist() if vectors else None
            tags = self.tag_mask[lo:hi]
            for j in range(hi - lo):
                rec = {"item_id": item_id_of(lo + j), "title": f"{self.brand_names[brand[j]]} {_CATEGORIES[cat[j]]} {lo + j}",
                       "category": _CATEGORIES[cat[j]], "brand": self.brand_names[brand[j]], "price": price[j],
                       "on_sale": sale[j], "tags": [t for t, m in zip(_TAGS, tags[j], strict=True) if m],
                       "created_ts": created[j]}
                if vecs is not None:
                    rec["vector"] = vecs[j]
                yield rec

    def _walks(self, n_sessions: int, length: int) -> NDArray[np.int64]:
        """Item index of each step of ``n_sessions`` sessions, shape (n_sessions, length)."""
        rng = self._rng
        items = np.empty((n_sessions, length), dtype=np.int64)
        items[:, 0] = rng.choice(self.n_items, n_sessions, p=self.popularity_p)
        for t in range(1, length):
            follow = rng.random(n_sessions) < _FOLLOW_P
            which = rng.choice(3, n_sessions, p=[0.6, 0.3, 0.1])
            jump = rng.choice(self.n_items, n_sessions, p=self.popularity_p)
            items[:, t] = np.where(follow, self.successors[items[:, t - 1], which], jump)
        return items

    def interaction_log(self, n_events: int, event_types: tuple[str, ...] = ("view",)) -> InteractionLog:
        """``n_events`` (rounded down to whole sessions of 6) training views over the 30 days before ``start_ts``.

        Every catalog item is in the log's item space (``item_ids`` = the catalog's ids, in order),
        with or without events.
        """
        n_sessions = max(n_events // _SESSION_LEN, 1)
        items = self._walks(n_sessions, _SESSION_LEN)
        t0 = self.start_ts - self._rng.uniform(0.0, 30 * 86400.0, n_sessions)
        ts = t0[:, None] + 60.0 * np.arange(_SESSION_LEN)[None, :]
        sess = np.repeat(np.arange(n_sessions, dtype=np.int32), _SESSION_LEN)
        return InteractionLog(session_idx=sess, item_idx=items.ravel().astype(np.int32), ts=ts.ravel(),
                              n_items=self.n_items, event_type=np.zeros(len(sess), dtype=np.int8),
                              event_types=event_types, item_ids=tuple(map(item_id_of, range(self.n_items))))

    def events(self, n_events: int, *, start_ts: float, rate_per_s: float) -> list[Event]:
        """``n_events`` live views of random users (sessions of 6 steps, users drawn uniformly), ``1 / rate_per_s`` apart."""
        n_sessions = -(-n_events // _SESSION_LEN)
        items = self._walks(n_sessions, _SESSION_LEN)
        users = self._rng.integers(0, self.n_users, n_sessions)
        # sessions interleave: session s's step t is event t * n_sessions + s
        flat_items = items.T.ravel()[:n_events].tolist()
        flat_users = np.tile(users, _SESSION_LEN)[:n_events].tolist()
        return [Event(event_id=f"scaled-{i}", ts=round(start_ts + i / rate_per_s, 3), type="view",
                      user_id=user_id_of(u), item_id=item_id_of(it))
                for i, (u, it) in enumerate(zip(flat_users, flat_items, strict=True))]


class BenchData:
    """The catalog, the trained model version and the live events of one bench run.

    ``build`` uses ``SyntheticShop`` below ``SCALED_FROM`` items (as this bench always did) and
    ``ScaledShop`` from there on (array operations; its co-visitation model is fitted on 6
    training views per item and saved without Cleora vectors).
    """

    def __init__(self, n_items: int, item_id: Callable[[int], str], records: Iterable[dict], ids: list[str] | None,
                 events: Callable[[int, float], list[Event]]) -> None:
        self.n_items, self.item_id, self.records, self.ids, self.events = n_items, item_id, records, ids, events

    @classmethod
    def build(cls, n_items: int, seed: int, s: Settings) -> BenchData:
        """Train and save the model version under ``s.stream.model_dir``; records are sent by the caller."""
        if n_items < SCALED_FROM:
            shop = SyntheticShop(n_items=n_items, n_users=max(100, n_items // 10), seed=seed)
            train_covisitation(shop.history(max(20_000, n_items * 6)), s)
            catalog = shop.catalog()
            ids = [d["item_id"] for d in catalog]

            def events(n: int, rate: float) -> list[Event]:
                return list(shop.events(n, rate_per_s=rate, warm_up=False))

            return cls(len(catalog), ids.__getitem__, catalog, ids, events)
        big = ScaledShop(n_items, max(100, n_items // 10), seed)
        types = weighted_types(s)[0]
        il = big.interaction_log(n_items * 6, event_types=(types[0],))
        rec, fit_s = fit_model(il, s, "covisit", type_weights=(1.0,))
        path = write_fitted(rec, il, s, "covisit", fit_s, cleora_dim=0, promote=False)
        write_card(path, log_card(il, "covisit", fit_s, source="bench.scaled_shop"))
        point_latest(s.stream.model_dir, path.name, reason="bench/api.py")

        def scaled_events(n: int, rate: float) -> list[Event]:
            return big.events(n, start_ts=time.time(), rate_per_s=rate)

        return cls(n_items, big.item_id, big.catalog(), None, scaled_events)
