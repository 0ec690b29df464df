"""Candidate strategies: the real recommenders behind scenarios and arms.

Each strategy turns the request's inputs into ranked candidates ``(item ids, scores)``, best
first, using the data the API holds: the published top-N (flow), the current model version
(``recommend``/``similar_items``), the catalog's vectors, windowed popularity (events topic).
A strategy with nothing to say returns empty lists; the caller tops up from the fallback.

=============  =================  ==========================================================
strategy       needs              source
=============  =================  ==========================================================
personalized   user_id            the user's published top-N (``user-topn``)
session        session or item_id ``model.recommend`` on the session's items, newest last
similar        item_id            ``model.similar_items`` (co-visitation until EMDE lands)
visual         item_id            cosine kNN over the catalog's vector attribute
cart           cart               ``model.recommend`` per cart item, scores summed (a set)
top            -                  popularity over ``window`` (default 7d), optional ``category``
last_seen      user_id            the user's recent items, newest first (published with top-N)
popular        -                  decayed popularity published by the flow's partitions
=============  =================  ==========================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np

from api.iql import IQLError, RequestContext
from api.iql.evaluate import check_params
from models.base import Histories
from models.threads import kernel_threads
from operators.model_version import ModelVersion
from operators.score import TopN

if TYPE_CHECKING:
    from api.catalog import CatalogView
    from api.iql import IQLEngine
    from api.services import Services

__all__ = ["Inputs", "LazyIds", "Strategy", "STRATEGY_NEEDS", "strategy_names", "run_strategy", "model_ranking", "ranking_source",
           "ranking_at", "parse_duration_s", "STRATEGY_PARAMS", "check_strategy_param", "category_size"]

Ranked = tuple[list[str], list[float]]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration_s(text: object) -> float:
    """``"24h"``, ``"7d"``, ``"90m"``, ``"3600"`` or a number -> seconds (> 0).

    Raises
    ------
    ValueError
        If the text is not a positive number with an optional unit s, m, h, d, w.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _DURATION.match(str(text).strip())
        if m is None:
            raise ValueError(f"must be a duration like '24h', '7d', '90m' or seconds; got {text!r}")
        value = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not value > 0:
        raise ValueError(f"must be > 0; got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class Inputs:
    """What a request gives strategies: who, which item, which cart/session, extra parameters."""

    user_id: str | None = None
    item_id: str | None = None
    cart: tuple[str, ...] = ()
    session: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


Strategy = Callable[["Services", Inputs, Mapping[str, Any], int], Ranked]


def _topn(svc: Services, user_id: str | None) -> TopN | None:
    t = svc.topn.get(user_id) if user_id else None
    return t if isinstance(t, TopN) else None


def _personalized(svc: Services, inp: Inputs, params: Mapping[str, Any], k: int) -> Ranked:
    t = _topn(svc, inp.user_id)
    if t is None or t.source == "popular":
        return [], []
    return t.items[:k], t.scores[:k]


def _last_seen(svc: Services, inp: Inputs, params: Mapping[str, Any], k: int) -> Ranked:
    t = _topn(svc, inp.user_id)
    recent = t.recent[:k] if t is not None else []
    return list(recent), [float(len(recent) - i) for i in range(len(recent))]


def _ranked(version: ModelVersion, ids: np.ndarray, scores: np.ndarray) -> Ranked:
    keep = (ids >= 0) & np.isfinite(scores)
    return [version.item_ids[i] for i in ids[keep]], scores[keep].astype(float).tolist()


class LazyIds(Sequence[str]):
    """Item ids of a ranking kept as dense indices into an append-only id list (a model version's
    ``item_ids``, the vector index's ``ids``): a string is made only for an item read.

    A whole-model ranking (``model_ranking``) is walked a chunk at a time and usually only its
    head is read, so building every id and score per request was allocation churn (~15 % of a
    worker's samples under load, py-spy). A slice is a ``LazyIds`` too, and ``item_idx`` gives the
    catalog's item_idx of every entry without making its string (``CatalogView.item_idx``).
    """

    def __init__(self, names: Sequence[str], idx: np.ndarray, index_of: Mapping[str, int],
                 root: Sequence[str] | None = None) -> None:
        self._names, self._idx, self._index_of, self._root = names, idx, index_of, root

    def __len__(self) -> int:
        return len(self._idx)

    def item_idx(self, view: CatalogView) -> np.ndarray:
        """The catalog's item_idx (int64; -1 unknown) of each entry, as ``view.index.lookup(list(self))``."""
        return view.item_idx(self._names, self._idx, self._root)

    def positions(self, item_ids: Iterable[str]) -> np.ndarray:
        """Positions (int64, ascending) in this ranking of the given item ids; ids it does not hold are
        skipped. O(len(ranking)) vectorised plus one dict lookup per id: no string per ranked item."""
        get = self._index_of.get
        wanted = np.fromiter((j for j in map(get, item_ids) if j is not None), dtype=np.int64)
        return np.flatnonzero(np.isin(self._idx, wanted))

    def take(self, at: Sequence[int]) -> list[str]:
        """The ids at positions ``at`` of this ranking (``[self[i] for i in at]``, one list comprehension)."""
        names, idx = self._names, self._idx
        return [names[j] for j in idx[np.asarray(at, dtype=np.int64)].tolist()]

    def __getitem__(self, i):  # noqa: ANN001, ANN204
        if isinstance(i, slice):
            return LazyIds(self._names, self._idx[i], self._index_of, self._root)
        return self._names[self._idx[i]]


def _positions(ids: Sequence[str], item_ids: Iterable[str]) -> np.ndarray:
    """Positions (int64, ascending) in a ranking's ``ids`` (as ``model_ranking`` gives them) of the given item
    ids; ids the ranking does not hold are skipped. For a lazy ranking (``similar``, ``session``, ``cart``,
    ``personalized``) O(len(ids)) vectorised plus one lookup per given id: no string per ranked item."""
    if isinstance(ids, LazyIds):
        return ids.positions(item_ids)
    wanted = set(item_ids)
    return np.fromiter((j for j, x in enumerate(ids) if x in wanted), dtype=np.int64)


def _ranked_lazy(version: ModelVersion, ids: np.ndarray, scores: np.ndarray) -> tuple[LazyIds, np.ndarray]:
    """As ``_ranked``, with ids made on demand and scores a float64 array."""
    return _lazy(version, *_kept(ids, scores))


def _kept(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A model's top-k row without its padding and non-finite scores: (positions, float64 scores)."""
    keep = (ids >= 0) & np.isfinite(scores)
    return ids[keep], scores[keep].astype(np.float64)


def _lazy(version: ModelVersion, positions: np.ndarray, scores: np.ndarray) -> tuple[LazyIds, np.ndarray]:
    """Positions in ``version.item_ids`` named through ``version`` (the one serving this request: cached positions
    pin no model version's id list)."""
    return LazyIds(version.item_ids, positions, version.item_index, version.root_item_ids), scores


def _indices(version: ModelVersion, item_ids: tuple[str, ...] | list[str]) -> list[int]:
    return [i for i in (version.item_index.get(x) for x in item_ids) if i is not None]


def _session(svc: Services, inp: Inputs, params: Mapping[str, Any], k: int, lazy: bool = False) -> Ranked:
    """``lazy``: ids made on demand (``LazyIds``; a whole-model ranking, walked in chunks)."""
    version = svc.models.current()
    hist = _indices(version, list(inp.session) or ([inp.item_id] if inp.item_id else [])) if version else []
    if not hist:
        return [], []
    with kernel_threads(1):  # one request's prefix: too small to split over threads (models.threads)
        ids, scores = version.model.recommend(Histories.from_lists([hist]), k)  # type: ignore[union-attr]
    return (_ranked_lazy if lazy else _ranked)(version, ids[0], scores[0])  # type: ignore[arg-type,return-value]


def _similar(svc: Services, inp: Inputs, params: Mapping[str, Any], k: int, cache: bool = True) -> Ranked:
    version = svc.models.current()
    hist = _indices(version, [inp.item_id] if inp.item_id else []) if version else []
    if not hist:
        return [], []

    def compute() -> tuple[np.ndarray, np.ndarray]:  # positions: cached, they hold no model version alive
        with kernel_threads(1):
            ids, scores = version.model.similar_items(np.asarray(hist, dtype=np.int32), k)  # type: ignore[union-attr]
        return _kept(ids[0], scores[0])

    # ids on demand (LazyIds): the filter reads item_idx, strings are made for the items kept
    positions, scores = compute() if not cache else svc.candidates.get(  # not cached: a whole-model ranking, walked
        ("similar", version.version, hist[0], k), compute)  # type: ignore[union-attr]
    return _lazy(version, positions, scores)  # type: ignore[arg-type,return-value]


CART_ITEMS_SCORED = 20
"""Cart items the ``cart`` strategy asks the model about (the last ones the request lists, distinct): each is
one history to score, so a client sending 100 cart items made one request cost 100 fusion prefixes (0.24 s
on the API's event loop in a trial). Every cart item is still excluded from the list and seen by IQL's
``context.cart``."""


def _cart(svc: Services, inp: Inputs, params: Mapping[str, Any], k: int, lazy: bool = False) -> Ranked:
    """``lazy``: ids made on demand (``LazyIds``; a whole-model ranking, walked in chunks)."""
    version = svc.models.current()
    in_cart = _indices(version, inp.cart) if version else []
    hist = sorted(set(list(dict.fromkeys(reversed(in_cart)))[:CART_ITEMS_SCORED]))  # the last distinct ones
    if not hist:
        return [], []
    with kernel_threads(1):  # at most CART_ITEMS_SCORED prefixes
        ids, scores = version.model.recommend(Histories.from_lists([[i] for i in hist]), k)  # type: ignore[union-attr]
    keep = (ids >= 0) & np.isfinite(scores)
    total = np.bincount(ids[keep], weights=scores[keep], minlength=len(version.item_ids))  # type: ignore[union-attr]
    total[in_cart] = 0.0
    order = np.flatnonzero(total > 0)
    order = order[np.lexsort((order, -total[order]))][:k]
    return (_ranked_lazy if lazy else _ranked)(version, order, total[order])  # type: ignore[arg-type,return-value]


def _visual_source(svc: Services) -> str:
    """``ranking_source`` of ``visual``: the catalog version and the vector index's ranking key. A finished
    background build of the index's lists is installed here, at the start of a request (``_arm_key`` asks
    first), so the request's candidates and every chunk of its walk rank with the same lists."""
    vectors = svc.catalog_view.vectors
    vectors.install_ready()
    return f"{svc.catalog_view.version}.{vectors.ranking_key}"


def _visual(svc: Services, inp: Inputs, params: Mapping[str, Any], k: int) -> Ranked:
    """Items with the most similar vectors (exact, or the inverted lists' ranking from ``api.vector_exact_below``
    vectors on: the same order ``model_ranking("visual", ...)`` walks, so its top-k is that ranking's prefix)."""
    if not inp.item_id:
        return [], []
    view = svc.catalog_view
    vectors = svc.catalog_view.vectors

    def compute() -> tuple[np.ndarray, np.ndarray]:  # rows: cached, they hold no vector index alive
        rows, scores = vectors.similar_rows(inp.item_id, k)  # type: ignore[arg-type]
        return rows, scores.astype(np.float64)

    rows, scores = svc.candidates.get(("visual", view.version, vectors.ranking_key, inp.item_id, k), compute)
    return LazyIds(vectors.ids, rows, vectors.row_index), scores  # type: ignore[return-value]  # ids on demand


def _top(svc: Services, inp: Inputs, params: Mapping[str, Any], k: int) -> Ranked:
    window_s = parse_duration_s(params.get("window", "7d"))
    ids, scores = svc.window_popularity.top(window_s)
    category = params.get("category")
    if category is None or not ids:
        return ids[:k], scores[:k].tolist()
    view = svc.catalog_view
    try:
        mask = view.engine.filter_candidates(_category_filter(params), RequestContext(params={"category": category}),
                                             view.index.lookup(ids))
    except IQLError as exc:
        if exc.param is not None:  # the value does not fit the attribute's type: a 400 naming `category`
            raise
        return [], []  # the catalog has no such attribute (yet)
    sel = np.flatnonzero(mask)[:k]
    return [ids[i] for i in sel], scores[sel].tolist()


def category_size(view: CatalogView, params: Mapping[str, Any]) -> int:
    """Live catalog items in ``top``'s ``category`` (``params``); 0 when the catalog has no such attribute or the
    value does not fit it. Says why a ``top`` list in a category is empty (``no_items_in_category``)."""
    try:
        return len(view.engine.filter(_category_filter(params), RequestContext(params={"category": params["category"]})))
    except IQLError:
        return 0


def _category_filter(params: Mapping[str, Any]) -> str:
    """The IQL filter ``top`` selects ``category`` with: ``<category_attribute> == $category``."""
    return f"{params.get('category_attribute', 'category')} == $category"


STRATEGY_PARAMS = frozenset({"window", "category", "category_attribute"})
"""Arm (and campaign) parameters a strategy reads (``top``: its popularity window, the category it keeps and the
catalog attribute holding it); every other parameter is an IQL ``$param`` default."""


def check_strategy_param(name: str, params: Mapping[str, Any], engine: IQLEngine) -> None:
    """Check strategy parameter ``name`` of an arm's ``params`` as its strategy reads it, when a campaign is saved.

    ``params`` are the arm's parameters over the campaign's (what ``run_strategy`` gets, before a request's
    ``window=``/``category=`` override them); ``engine`` is the catalog's, for ``category`` and
    ``category_attribute``. A category attribute the catalog does not hold yet is accepted (``top`` gives
    nothing until it does); one it holds must take ``category`` as the request's ``$category`` would be bound.

    Raises
    ------
    ValueError
        Saying what the parameter must be and what it got (``name`` is not in the message).
    """
    value = params[name]
    if name == "window":
        parse_duration_s(value)
    elif name == "category_attribute":
        if not isinstance(value, str):
            raise ValueError(f"must be the name of a catalog attribute; got {value!r}")
        try:
            engine.parser.parse_filter(_category_filter(params))
        except IQLError as exc:
            raise ValueError(f"must be the name of a catalog attribute (an IQL attribute name); got {value!r}"
                             ) from exc
    elif name == "category":
        if isinstance(value, list) or (isinstance(value, str) and not value.strip()):
            raise ValueError(f"must be one non-empty value; got {value!r}")
        attr = str(params.get("category_attribute", "category"))
        if attr in engine.index.schema:
            try:
                check_params(engine.compile_filter(_category_filter(params)), {"category": value})
            except IQLError as exc:
                raise ValueError(f"must fit the catalog attribute {attr!r}: expected {exc.expected}, found {exc.found}"
                                 ) from exc


def _popular(svc: Services, inp: Inputs, params: Mapping[str, Any], k: int) -> Ranked:
    """The stream's popular items (each partition publishes its top-N), then, when ``k`` asks
    for more (a filtered fallback), every item with events in the API's popularity horizon,
    ranked below them."""
    ranked = svc.popular(k)
    ids, scores = [i for i, _ in ranked], [s for _, s in ranked]
    if len(ids) < k:
        w_ids, _ = svc.window_popularity.top(svc.settings.api.popularity_horizon_s)
        seen, floor = set(ids), (scores[-1] if scores else 1.0)
        # stops after the k - len(ids) it needs: w_ids holds every item with events in the horizon (1M items: all)
        tail = list(islice((i for i in w_ids if i not in seen), k - len(ids)))
        ids += tail
        scores += (floor * (1.0 - (np.arange(len(tail)) + 1.0) / (len(tail) + 1.0))).tolist()
    return ids, scores


_STRATEGIES: dict[str, Strategy] = {
    "personalized": _personalized, "session": _session, "similar": _similar, "visual": _visual,
    "cart": _cart, "top": _top, "last_seen": _last_seen, "popular": _popular,
}

STRATEGY_NEEDS: dict[str, tuple[str, ...]] = {
    "personalized": ("user_id",), "session": ("session|item_id",), "similar": ("item_id",),
    "visual": ("item_id",), "cart": ("cart",), "top": (), "last_seen": ("user_id",), "popular": (),
}
"""Request inputs each strategy needs (``a|b``: one of them)."""


def model_ranking(name: str, svc: Services, inputs: Inputs, params: Mapping[str, Any], n: int | None = None
                  ) -> Ranked | None:
    """The arm's whole ranking: every item its model (or source) can score, best first, uncached.

    ``n``: at most the first ``n`` items (the model's top-``n``: O(n) with an exact top-k such as
    co-visitation's, instead of a sort of the whole catalog) for ``similar``, ``session``,
    ``personalized`` and ``visual``; the other strategies give their whole ranking whatever ``n``
    (``cart`` sums per-item top-k lists, so its top-n is not a prefix of its whole ranking).
    A model's top-``n`` equals the first ``n`` of its whole ranking except, with a top-k that
    breaks ties at the cut arbitrarily (``np.argpartition``), for items whose score equals the
    ``n``-th one: callers that need the exact prefix check ``scores[n - 1] > scores[n]`` of a
    top-``n + 1`` (``api.serving._ranking_prefix``).

    What a campaign filter is applied to when the arm's over-fetched candidates run out, so a
    selective filter is served from the arm's model rather than from the fallback: ``similar``,
    ``session`` and ``cart`` ask the model for all its items (for EMDE one readout over the
    catalog), ``personalized`` scores the catalog from the user's recent items (published with
    the top-N) with the model, ``visual`` ranks every vector, ``top`` every item with events in
    the window, ``popular`` every item with events in the popularity horizon. None for
    ``last_seen`` (nothing beyond the user's recent items).
    """
    version = svc.models.current()
    n_model = max(len(version.item_ids) if version is not None else 0, 1)
    k = n_model if n is None else max(min(n, n_model), 1)
    if name == "cart":
        return _cart(svc, inputs, params, n_model, lazy=True)
    if name == "session":
        return _session(svc, inputs, params, k, lazy=True)
    if name == "similar":
        return _similar(svc, inputs, params, k, cache=False)
    if name == "personalized":
        t = _topn(svc, inputs.user_id)
        if t is None or not t.recent:
            return [], []
        return _session(svc, Inputs(session=tuple(reversed(t.recent))), params, k, lazy=True)
    if name == "visual":
        if not inputs.item_id:
            return [], []
        vectors = svc.catalog_view.vectors  # a whole ranking, walked in chunks: ids on demand
        n_vec = max(len(vectors), 1)
        rows, scores = vectors.similar_rows(inputs.item_id, n_vec if n is None else max(min(n, n_vec), 1))
        return LazyIds(vectors.ids, rows, vectors.row_index), scores.astype(np.float64)  # type: ignore[return-value]
    if name == "top":
        return _top(svc, inputs, params, 1 << 30)
    if name == "popular":
        return _popular(svc, inputs, params, 1 << 30)
    return None


def ranking_at(name: str, svc: Services, inputs: Inputs, params: Mapping[str, Any], item_ids: Sequence[str]
               ) -> tuple[np.ndarray, list[str], np.ndarray, int] | None:
    """Where ``item_ids`` sit in ``model_ranking(name, ...)``'s whole ranking, without reading the rest of it.

    Returns ``(positions, ids, scores, total)``: the positions (int64, ascending) of the given ids the ranking
    holds, the ids and scores (float64) there, and the whole ranking's length; None if the strategy has no
    model ranking. ``visual`` counts each id's rank without ranking the catalog
    (``VectorIndex.ranking_positions``: 1M vectors in ~30 ms instead of a ~170 ms sort); the others rank once
    and read the positions (``similar`` at 1M items: ~40 ms). For a filter that selects a few items
    (``api.serving._from_model_few``).
    """
    if name == "visual":
        if not inputs.item_id:
            return np.zeros(0, dtype=np.int64), [], np.zeros(0), 0
        vectors = svc.catalog_view.vectors
        pos, rows, scores, total = vectors.ranking_positions(inputs.item_id, item_ids)
        names = vectors.ids
        return pos, [names[r] for r in rows.tolist()], scores.astype(np.float64), total
    ranking = model_ranking(name, svc, inputs, params)
    if ranking is None:
        return None
    ids, scores = ranking
    pos = _positions(ids, item_ids)
    return pos, [ids[j] for j in pos.tolist()], np.asarray(scores, dtype=np.float64)[pos], len(ids)


def ranking_source(name: str, svc: Services) -> tuple[str, str | int] | None:
    """What ``model_ranking(name, ...)`` depends on besides the request's items (item, cart, session).

    ``("model", version)`` for ``similar``, ``session`` and ``cart`` (the current model version),
    ``("catalog", "<catalog version>.<vector ranking key>")`` for ``visual`` (the catalog's vectors and
    the vector index's lists, which a background build may replace between requests); None for strategies whose
    ranking moves with time or with the user's state (``personalized``, ``top``, ``popular``,
    ``last_seen``): their rankings cannot be reused across requests.
    """
    if name in ("similar", "session", "cart"):
        version = svc.models.current()
        return ("model", version.version) if version is not None else None
    if name == "visual":
        return ("catalog", _visual_source(svc))
    return None


def strategy_names() -> list[str]:
    return sorted(_STRATEGIES)


def run_strategy(name: str, svc: Services, inputs: Inputs, params: Mapping[str, Any], k: int) -> Ranked:
    """Candidates of strategy ``name`` (known: checked when the campaign was saved)."""
    return _STRATEGIES[name](svc, inputs, params, k)
