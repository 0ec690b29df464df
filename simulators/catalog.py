"""The synthetic catalog: categories, brands, prices, titles from per-category words, vectors, co-visitation.

Items are column arrays indexed by a dense ``item_idx`` (``int``); the shop's string id is
``item_id = f"i{item_idx:06d}"``. Every signal a recommender may learn is planted here:

- **text**: a title is ``brand + words drawn from its category's vocabulary + one generic word``,
  so title words predict the category;
- **image-like vector**: ``category centroid + brand offset + noise`` (float32, unit-free);
- **co-visitation**: each item has ``n_successors`` successors among items of its own
  (category, brand) group; a session's next item is often one of them (see ``shop.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["CatalogSpec", "Catalog", "item_id_of", "SUCCESSOR_WEIGHTS"]

_CATEGORY_NAMES = (
    "shoes",
    "kitchen",
    "books",
    "toys",
    "garden",
    "beauty",
    "sports",
    "music",
    "office",
    "pets",
    "jewelry",
    "outdoor",
    "baby",
    "tools",
    "grocery",
    "games",
    "lighting",
    "bags",
    "watches",
    "bedding",
)
_GENERIC_WORDS = ("new", "classic", "pro", "mini", "max", "eco", "deluxe", "basic", "smart", "original")
_TAGS = ("bestseller", "limited", "gift", "bundle", "organic", "imported", "handmade", "refurbished")
_CONSONANTS = "bcdfgklmnprstvz"
_VOWELS = "aeiou"

SUCCESSOR_WEIGHTS: tuple[float, ...] = (0.6, 0.3, 0.1)
"""Probability of moving to an item's 1st, 2nd, 3rd successor when a session follows co-visitation."""


def item_id_of(item_idx: int) -> str:
    """The shop's string id of dense item index ``item_idx``."""
    return f"i{item_idx:06d}"


@dataclass(frozen=True, slots=True)
class CatalogSpec:
    """Shape of the synthetic catalog."""

    n_categories: int = 20
    brands_per_category: int = 6
    words_per_category: int = 24
    title_words: int = 2
    vector_dim: int = 16
    vector_noise: float = 0.6
    n_successors: int = len(SUCCESSOR_WEIGHTS)


def _make_words(rng: np.random.Generator, n: int, syllables: tuple[int, int], taken: set[str]) -> list[str]:
    """``n`` distinct pronounceable words (not in ``taken``; adds them to it)."""
    out: list[str] = []
    while len(out) < n:
        k = int(rng.integers(syllables[0], syllables[1] + 1))
        cs = rng.integers(0, len(_CONSONANTS), k)
        vs = rng.integers(0, len(_VOWELS), k)
        w = "".join(_CONSONANTS[c] + _VOWELS[v] for c, v in zip(cs, vs, strict=True))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


class Catalog:
    """A growing catalog of items with planted category, brand, text, vector and co-visitation signal.

    Parameters
    ----------
    spec : CatalogSpec
        Shape of the catalog.
    rng : numpy.random.Generator
        The shop's generator; the catalog draws from it (so one seed fixes everything).

    Attributes
    ----------
    category, brand : ndarray of shape (n_items,), int32
        Category index and global brand index of each item.
    price : ndarray of shape (n_items,), float64
        Price in currency units, rounded to cents.
    popularity : ndarray of shape (n_items,), float64
        Latent appeal (log-normal); scales how often users are drawn to the item.
    vector : ndarray of shape (n_items, vector_dim), float32
        Image-like dense vector correlated with category and brand.
    successors : ndarray of shape (n_items, n_successors), int32
        Co-visitation successors (item indices in the same (category, brand) group).
    created_ts : ndarray of shape (n_items,), float64
        Epoch seconds the item was listed (the initial catalog: up to a year before the shop's start).
    """

    def __init__(self, spec: CatalogSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self._rng = rng
        taken: set[str] = set()
        c = spec.n_categories
        self.category_names = [
            _CATEGORY_NAMES[k] if k < len(_CATEGORY_NAMES) else f"category{k}" for k in range(c)
        ]
        self.brand_names = [
            w.capitalize() for w in _make_words(rng, c * spec.brands_per_category, (2, 3), taken)
        ]
        self.words = [_make_words(rng, spec.words_per_category, (2, 3), taken) for _ in range(c)]
        ranks = np.arange(1, spec.words_per_category + 1, dtype=np.float64)
        self._word_p = (1.0 / ranks) / (1.0 / ranks).sum()
        self._base_price = np.exp(rng.uniform(1.5, 5.0, c))
        self._brand_price = np.exp(rng.normal(0.0, 0.3, c * spec.brands_per_category))
        centroids = rng.normal(size=(c, spec.vector_dim))
        self._centroid = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        self._brand_offset = (
            0.3 * rng.normal(size=(c * spec.brands_per_category, spec.vector_dim)) / np.sqrt(spec.vector_dim)
        )
        self.category = np.empty(0, np.int32)
        self.brand = np.empty(0, np.int32)
        self.price = np.empty(0, np.float64)
        self.popularity = np.empty(0, np.float64)
        self.on_sale = np.empty(0, bool)
        self.vector = np.empty((0, spec.vector_dim), np.float32)
        self.successors = np.empty((0, spec.n_successors), np.int32)
        self.created_ts = np.empty(0, np.float64)
        self.titles: list[str] = []
        self.item_ids: list[str] = []
        self._by_brand: dict[int, list[int]] = {}
        self._by_category: dict[int, list[int]] = {}
        self.tags: list[list[str]] = []

    def __len__(self) -> int:
        return len(self.category)

    def add_items(
        self, n: int, created_ts: float | NDArray[np.float64], category: NDArray[np.int_] | None = None
    ) -> NDArray[np.int64]:
        """Append ``n`` new items (vectorised) and wire them into the co-visitation structure.

        Parameters
        ----------
        n : int
            Number of items to add.
        created_ts : float or ndarray of shape (n,)
            Epoch seconds they appear (listed).
        category : ndarray of shape (n,), optional
            Categories to use; drawn uniformly when omitted.

        Returns
        -------
        ndarray of shape (n,), int64: the new item indices.
        """
        rng, spec = self._rng, self.spec
        start = len(self)
        new = np.arange(start, start + n)
        cat = rng.integers(0, spec.n_categories, n) if category is None else np.asarray(category)
        # brands within a category are Zipf-ish: a few big brands, a long tail
        bw = 1.0 / np.arange(1, spec.brands_per_category + 1)
        brand = cat * spec.brands_per_category + rng.choice(spec.brands_per_category, n, p=bw / bw.sum())
        price = np.round(self._base_price[cat] * self._brand_price[brand] * rng.lognormal(0.0, 0.4, n), 2)
        vec = (
            self._centroid[cat]
            + self._brand_offset[brand]
            + spec.vector_noise * rng.normal(size=(n, spec.vector_dim)) / np.sqrt(spec.vector_dim)
        )
        words = rng.choice(spec.words_per_category, (n, spec.title_words), p=self._word_p)
        generic = rng.integers(0, len(_GENERIC_WORDS), n)
        tag_mask = rng.random((n, len(_TAGS))) < 0.15
        self.category = np.concatenate([self.category, cat.astype(np.int32)])
        self.brand = np.concatenate([self.brand, brand.astype(np.int32)])
        self.price = np.concatenate([self.price, price])
        self.popularity = np.concatenate([self.popularity, rng.lognormal(0.0, 1.0, n)])
        self.on_sale = np.concatenate([self.on_sale, rng.random(n) < 0.1])
        self.vector = np.concatenate([self.vector, vec.astype(np.float32)])
        self.created_ts = np.concatenate(
            [self.created_ts, np.broadcast_to(np.asarray(created_ts, np.float64), (n,))]
        )
        self.item_ids.extend(item_id_of(int(i)) for i in new)
        for j in range(n):
            cw = self.words[cat[j]]
            self.titles.append(
                " ".join([self.brand_names[brand[j]], *(cw[w] for w in words[j]), _GENERIC_WORDS[generic[j]]])
            )
            self.tags.append([t for t, m in zip(_TAGS, tag_mask[j], strict=True) if m])
        self.successors = np.concatenate([self.successors, np.zeros((n, spec.n_successors), np.int32)])
        self._wire_successors(new, first_build=start == 0)
        return new

    def regroup(self) -> None:
        """A new season: items are dealt new (category, brand) groups at random (a permutation of the
        current labels, so group sizes stay) and the co-visitation successors are wired again within
        them. What used to be viewed together no longer is; titles and vectors keep the old labels."""
        perm = self._rng.permutation(len(self))
        self.category, self.brand = self.category[perm], self.brand[perm]
        self._by_brand, self._by_category = {}, {}
        self._wire_successors(np.arange(len(self)), first_build=True)

    def _wire_successors(self, new: NDArray[np.int64], first_build: bool) -> None:
        """Pick successors for ``new`` items in their (category, brand) group (category if the group is small).

        After the first build, each new item also becomes the last successor of one group mate,
        so new items get reached by co-visitation too.
        """
        rng, k = self._rng, self.spec.n_successors
        for i in new:
            self._by_brand.setdefault(int(self.brand[i]), []).append(int(i))
            self._by_category.setdefault(int(self.category[i]), []).append(int(i))
        for i in new:
            pool = self._by_brand[int(self.brand[i])]
            if len(pool) <= k:
                pool = self._by_category[int(self.category[i])]
            cand = np.asarray(pool)
            cand = cand[cand != i]
            if len(cand) == 0:
                self.successors[i] = i
                continue
            self.successors[i] = rng.choice(cand, k, replace=len(cand) < k)
            if not first_build:
                self.successors[cand[rng.integers(0, len(cand))], -1] = i

    def item_dict(self, item_idx: int) -> dict:
        """The catalog record of one item (what goes to the ``catalog`` topic)."""
        i = int(item_idx)
        return {
            "item_id": item_id_of(i),
            "title": self.titles[i],
            "category": self.category_names[self.category[i]],
            "brand": self.brand_names[self.brand[i]],
            "price": float(self.price[i]),
            "on_sale": bool(self.on_sale[i]),
            "tags": list(self.tags[i]),
            "created_ts": round(float(self.created_ts[i]), 3),
            "vector": [round(x, 5) for x in self.vector[i].tolist()],
        }
