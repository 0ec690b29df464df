"""Users of the synthetic shop: latent tastes and the ground truth derived from them.

A user's taste is a preference over categories (most mass on 2-3 of them), a few favourite
brands and an activity level. Their affinity to item ``i`` is::

    a[u, i] = category_pref[u, category[i]] * (brand_boost if brand[i] in favourite_brands[u] else 1) * popularity[i]

The **ground truth** ("items the user would buy") is a Poisson sample of the catalog with
inclusion probability ``min(1, wish_size * a[u, i] / sum_j a[u, j])`` (the sum taken over the
catalog when the user appeared), so new items enter existing users' ground truth at the same
density. Sessions and baskets draw mostly from it (see ``shop.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from simulators.catalog import Catalog

__all__ = ["TasteSpec", "Users", "user_id_of"]

_CHUNK_USERS = 1024


def user_id_of(user_idx: int) -> str:
    """The shop's string id of dense user index ``user_idx``."""
    return f"u{user_idx:06d}"


@dataclass(frozen=True, slots=True)
class TasteSpec:
    """Shape of users' tastes."""

    min_categories: int = 2
    max_categories: int = 3
    off_taste: float = 0.03
    """Share of category preference spread over the categories outside the preferred ones."""
    brands_per_user: int = 3
    brand_boost: float = 4.0
    wish_size: float = 40.0
    """Expected ground-truth items per user (before new items arrive)."""
    n_stores: int = 10


class Users:
    """A growing set of users with latent tastes and ground-truth item sets.

    Attributes
    ----------
    category_pref : ndarray of shape (n_users, n_categories), float64
        Rows sum to 1.
    favourite_brands : ndarray of shape (n_users, brands_per_user), int32
    activity : ndarray of shape (n_users,), float64
        Relative visit rate (log-normal).
    home_store : ndarray of shape (n_users,), int32
    created_ts : ndarray of shape (n_users,), float64
        Epoch seconds the user appeared (``-inf`` for the initial users).
    wish : list of list of int
        Per user, the sorted item indices of their ground truth.
    wish_cdf : list of list of float
        Per user, the cumulative affinity over ``wish`` (for sampling with ``bisect``).
    wish_sets : list of set of int
        Per user, ``wish`` as a set (for membership tests).
    """

    def __init__(self, spec: TasteSpec, catalog: Catalog, rng: np.random.Generator) -> None:
        self.spec = spec
        self._catalog = catalog
        self._rng = rng
        c = catalog.spec.n_categories
        self.category_pref = np.empty((0, c), np.float64)
        self.favourite_brands = np.empty((0, spec.brands_per_user), np.int32)
        self.activity = np.empty(0, np.float64)
        self.home_store = np.empty(0, np.int32)
        self.created_ts = np.empty(0, np.float64)
        self._norm = np.empty(0, np.float64)
        self.wish: list[list[int]] = []
        self.wish_cdf: list[list[float]] = []
        self.wish_sets: list[set[int]] = []

    def __len__(self) -> int:
        return len(self.activity)

    def affinity(self, users: NDArray[np.int_], items: NDArray[np.int_] | None = None) -> NDArray[np.float64]:
        """Latent affinity of ``users`` to ``items`` (all items when omitted).

        Returns
        -------
        ndarray of shape (len(users), len(items)), float64, non-negative.
        """
        cat = self._catalog
        items = np.arange(len(cat)) if items is None else np.asarray(items)
        users = np.asarray(users)
        a = self.category_pref[users][:, cat.category[items]]
        fav = (self.favourite_brands[users][:, :, None] == cat.brand[items][None, None, :]).any(axis=1)
        return a * np.where(fav, self.spec.brand_boost, 1.0) * cat.popularity[items][None, :]

    def add_users(self, n: int, created_ts: float = -np.inf) -> NDArray[np.int64]:
        """Create ``n`` users with fresh tastes and ground truth; returns their indices."""
        rng, spec, cat = self._rng, self.spec, self._catalog
        c = cat.spec.n_categories
        start = len(self)
        pref = np.full((n, c), spec.off_taste / c)
        k = rng.integers(spec.min_categories, spec.max_categories + 1, n)
        for j in range(n):
            chosen = rng.choice(c, k[j], replace=False)
            pref[j, chosen] += (1.0 - spec.off_taste) * rng.dirichlet(np.full(k[j], 2.0))
        # favourite brands: drawn from brands of the categories the user likes
        bpc = cat.spec.brands_per_category
        fav_cat = np.array([rng.choice(c, spec.brands_per_user, p=pref[j]) for j in range(n)]).reshape(n, -1)
        fav = fav_cat * bpc + rng.integers(0, bpc, fav_cat.shape)
        self.category_pref = np.concatenate([self.category_pref, pref])
        self.favourite_brands = np.concatenate([self.favourite_brands, fav.astype(np.int32)])
        self.activity = np.concatenate([self.activity, rng.lognormal(0.0, 0.8, n)])
        self.home_store = np.concatenate(
            [self.home_store, rng.integers(0, spec.n_stores, n).astype(np.int32)]
        )
        self.created_ts = np.concatenate([self.created_ts, np.full(n, created_ts)])
        new = np.arange(start, start + n)
        norms = np.empty(n)
        for lo in range(0, n, _CHUNK_USERS):
            block = new[lo : lo + _CHUNK_USERS]
            a = self.affinity(block)
            norms[lo : lo + len(block)] = a.sum(axis=1)
            p = np.minimum(1.0, spec.wish_size * a / norms[lo : lo + len(block), None])
            take = rng.random(a.shape) < p
            for r in range(len(block)):
                items = np.flatnonzero(take[r])
                if len(items) == 0:  # everyone wants something: their top item
                    items = np.array([int(np.argmax(a[r]))])
                self.wish.append(items.tolist())
                self.wish_cdf.append(np.cumsum(a[r, items]).tolist())
                self.wish_sets.append(set(self.wish[-1]))
        self._norm = np.concatenate([self._norm, norms])
        return new

    def redraw(self) -> None:
        """Every user's tastes (category preference, brands, activity, home store) and ground truth
        are drawn again from the current catalog; ids and creation times stay."""
        n, created = len(self), self.created_ts.copy()
        c = self._catalog.spec.n_categories
        self.category_pref = np.empty((0, c), np.float64)
        self.favourite_brands = np.empty((0, self.spec.brands_per_user), np.int32)
        self.activity, self.home_store = np.empty(0, np.float64), np.empty(0, np.int32)
        self.created_ts, self._norm = np.empty(0, np.float64), np.empty(0, np.float64)
        self.wish, self.wish_cdf, self.wish_sets = [], [], []
        self.add_users(n)
        self.created_ts = created

    def add_items(self, items: NDArray[np.int_]) -> None:
        """Let new catalog ``items`` enter existing users' ground truth at the usual density."""
        items = np.asarray(items)
        n = len(self)
        for lo in range(0, n, _CHUNK_USERS):
            block = np.arange(lo, min(n, lo + _CHUNK_USERS))
            a = self.affinity(block, items)
            p = np.minimum(1.0, self.spec.wish_size * a / self._norm[block, None])
            rows, cols = np.nonzero(self._rng.random(a.shape) < p)
            for r, col in zip(rows.tolist(), cols.tolist(), strict=True):
                u, i = int(block[r]), int(items[col])
                self.wish[u].append(i)
                self.wish_cdf[u].append(self.wish_cdf[u][-1] + float(a[r, col]))
                self.wish_sets[u].add(i)
