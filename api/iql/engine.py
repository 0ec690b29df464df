"""IQLEngine: the app's one entry point to IQL (parse, compile with a plan cache, filter, boost)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from api.iql.booster import boost_multipliers
from api.iql.compiler import compile_boosters, compile_filter
from api.iql.context import RequestContext
from api.iql.evaluate import candidates_mask, evaluate
from api.iql.index import CatalogIndex
from api.iql.parser import IQLParser
from api.iql.plan import BoosterPlan, FilterPlan

__all__ = ["IQLEngine"]


class IQLEngine:
    """Filters and boosters over one ``CatalogIndex``; plans cached per query text.

    The cache is owned by the engine (build one in the app's lifespan, keep it in ``app.state``).
    Threads: one writer (``index.upsert``/``delete``) and any number of readers; a reader may miss
    a write that happens during its query (seen by the next one) but never sees a broken index.
    Caching on the text alone is sound because attribute types never change once set, and a
    query that fails to compile raises (errors are not cached), so it is re-checked next time.

    Parameters
    ----------
    index : CatalogIndex
        The catalogue; upserts and deletes on it are seen by the next ``filter`` call.
    cache_size : int
        Compiled plans kept (LRU), per kind (filters, boosters).
    parser : IQLParser, optional
        A parser to share (it is stateless once built); a new one by default.

    Examples
    --------
    >>> index = CatalogIndex.build([{"item_id": "a", "brand": "Acme", "price": 10},
    ...                              {"item_id": "b", "brand": "Bolt", "price": 30}])
    >>> engine = IQLEngine(index)
    >>> engine.validate_filter("brand == $brand AND price < 20")
    >>> sorted(index.item_ids(engine.filter("brand == $brand", RequestContext(params={"brand": "Acme"}))))
    ['a']
    """

    def __init__(self, index: CatalogIndex, cache_size: int = 1024, parser: IQLParser | None = None) -> None:
        self.index = index
        self.parser = parser or IQLParser()
        self.compile_filter = functools.lru_cache(maxsize=cache_size)(self._compile_filter)
        self.compile_boosters = functools.lru_cache(maxsize=cache_size)(self._compile_boosters)

    def _compile_filter(self, text: str) -> FilterPlan:
        """Parse and compile a filter (cached; see class docstring). Raises IQLError."""
        return compile_filter(self.parser.parse_filter(text), self.index.schema, text)

    def _compile_boosters(self, text: str) -> BoosterPlan:
        """Parse and compile booster clauses (cached). Raises IQLError."""
        return compile_boosters(self.parser.parse_boosters(text), self.index.schema, text)

    def validate_filter(self, text: str) -> None:
        """Check a campaign's filter when it is saved: syntax, attributes, types. Raises IQLError."""
        self.compile_filter(text)

    def validate_boosters(self, text: str) -> None:
        """Check a campaign's boosters when it is saved. Raises IQLError."""
        self.compile_boosters(text)

    def context(
        self,
        *,
        item_id: str | None = None,
        cart_item_ids: Sequence[str] = (),
        user: Mapping[str, object] | None = None,
        params: Mapping[str, object] | None = None,
        now_s: float | None = None,
    ) -> RequestContext:
        """A RequestContext whose current item and cart are looked up in the index by id.

        Unknown ids are left out (the current item is then null, so ``context.item.*`` is null).
        """
        item = self.index.get(item_id) if item_id is not None else None
        cart = tuple(c for c in (self.index.get(i) for i in cart_item_ids) if c is not None)
        extra = {} if now_s is None else {"now_s": now_s}
        return RequestContext(item=item, user=user, cart=cart, params=params or {}, **extra)

    def filter(self, text: str, context: RequestContext) -> BitMap:
        """Live items (item_idx) the filter selects for this request. Raises IQLError."""
        return evaluate(self.compile_filter(text), self.index, context)

    def filter_candidates(
        self, text: str, context: RequestContext, candidates: NDArray[np.integer]
    ) -> NDArray[np.bool_]:
        """Boolean mask over candidate item_idx: True where the filter keeps the item."""
        return candidates_mask(self.filter(text, context), candidates)

    def boost(
        self, text: str, context: RequestContext, candidates: NDArray[np.integer]
    ) -> NDArray[np.float32]:
        """Score multipliers (float32, one per candidate) from booster clauses. Raises IQLError."""
        return boost_multipliers(self.compile_boosters(text), self.index, context, candidates)
