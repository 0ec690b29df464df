"""One campaign request: candidates of the chosen arm -> IQL filter -> boosters -> N items, topped up.

``serve_list`` is the pipeline after the arm is chosen. Candidates come from the arm's strategy
(over-fetched, so filtering leaves enough), items of the request (current item, cart, session)
are excluded, the campaign's IQL filter keeps the items it selects (a bitmap over the catalog
index; without a filter, hidden and deleted items are still dropped), boosters multiply the
scores (a negative score is divided: ``api.iql.booster.boosted_scores``) and the list is re-ranked (stable). If fewer than ``n`` remain, the filter steers the arm:
the filtered catalog is scored with the arm's model (its whole ranking, walked through the
filter). Only then does the campaign's fallback strategy fill the rest through the same filter;
the result says how many came from it and why the arm fell short (``reason``).

The arm's part (candidates through filter and boosters, filled from the model) of the strategies
whose ranking depends only on the request's items and a version (``similar``, ``visual``,
``session``, ``cart``: ``strategies.ranking_source``) is kept in ``Services.filled`` under
everything it depends on, catalog version and the filter's bound values included, so requests
that repeat it do no per-request ranking, lookups or filtering; the fallback is always computed.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pyroaring import BitMap

from api.filter_cache import in_bitmap
from api.iql import RequestContext
from api.iql.booster import MAX_MULTIPLIER, boosted_scores
from api.strategies import (
    Inputs,
    LazyIds,
    category_size,
    model_ranking,
    ranking_at,
    ranking_source,
    run_strategy,
)
from state.campaigns import Campaign

if TYPE_CHECKING:
    from api.services import Services

__all__ = ["ServedList", "serve_list", "request_context"]

_OVERFETCH = 4
_FALLBACK_POOL = 2000
"""Candidates the fallback strategy is asked for before the campaign filter (popular lists are cheap)."""
FEW_SELECTED = 4096
"""A filter that selects at most this many items for a request is applied to the arm's whole ranking by
position (``_from_model_few``) rather than by walking the ranking: the strings made and looked up are
bounded by it, not by the catalog."""


@dataclass
class ServedList:
    """Items (best first) and where they came from."""

    items: list[dict[str, Any]] = field(default_factory=list)
    from_arm: int = 0
    topped_up: int = 0
    reason: str | None = None
    """Why the arm gave fewer than n items: filter_too_selective, unknown_user, unknown_item, no_model,
    no_events_in_window, no_items_in_category, no_popular_items, history_too_short, model_exhausted."""
    reason_detail: str | None = None


def request_context(svc: Services, inputs: Inputs) -> RequestContext:
    """The IQL context of a request: current item, cart, user attributes (``user.*`` params), params."""
    user = {"user_id": inputs.user_id} if inputs.user_id else {}
    user.update({k[5:]: v for k, v in inputs.params.items() if k.startswith("user.")})
    view = svc.catalog_view
    # as engine.context(item_id=..., cart_item_ids=...), the item's attributes kept until the catalog changes
    item = view.item_attributes(inputs.item_id) if inputs.item_id is not None else None
    cart = tuple(c for c in map(view.item_attributes, inputs.cart) if c is not None)
    return RequestContext(item=item, user=user or None, cart=cart, params=dict(inputs.params))


def _keep(req: _Request, idx: np.ndarray) -> np.ndarray:
    """Mask over the candidates the filter selects (its bitmap found through the key ``_bind`` made)."""
    view = req.svc.catalog_view
    if req.campaign.filter.strip():
        plan = view.engine.compile_filter(req.campaign.filter)
        return view.bitmaps.contains(plan, req.ctx, view.version, idx, key=req.filter_key)  # type: ignore[arg-type]
    if view.index.capacity == 0:
        return np.ones(len(idx), dtype=bool)
    return (idx < 0) | in_bitmap(view.index.live, idx)  # unknown to the catalog: kept (as CatalogView.servable)


def _boost(req: _Request, idx: np.ndarray) -> np.ndarray:
    """Score multipliers: the product of the weights of the booster clauses each candidate matches, at most
    ``MAX_MULTIPLIER`` (each clause's bitmap found through its key in ``req.booster_keys``, made by ``_bind`` in the
    clauses' order)."""
    view = req.svc.catalog_view
    mult = np.ones(len(idx))
    keys = req.booster_keys or ()
    for c, (weight, condition) in enumerate(view.engine.compile_boosters(req.campaign.boosters).clauses):
        key = keys[c][1] if c < len(keys) else None
        hit = view.bitmaps.contains(condition, req.ctx, view.version, idx, key=key)  # type: ignore[arg-type]
        mult[hit] = np.minimum(mult[hit] * weight, MAX_MULTIPLIER)  # finite: no inf score, no inf * 0
    return mult


def _item_idx(svc: Services, ids: Sequence[str]) -> np.ndarray:
    """The catalog's item_idx (int64; -1 unknown) of each candidate: for a model's or the vector index's
    ranking (``LazyIds``) without making its strings."""
    if isinstance(ids, LazyIds):
        return ids.item_idx(svc.catalog_view)
    return svc.catalog_view.index.lookup(ids)


def _not_excluded(svc: Services, ids: Sequence[str], idx: np.ndarray, exclude: set[str]) -> np.ndarray:
    """Mask over the candidates: False for the request's own items (``exclude``), compared by item_idx; a
    candidate the catalog does not know is compared by its id, when an excluded id is unknown too."""
    if not exclude:
        return np.ones(len(idx), dtype=bool)
    ex = svc.catalog_view.index.lookup(list(exclude))
    known = ex[ex >= 0]
    if len(known) <= 8:  # a request's item or a short cart: a few compares beat np.isin's set-up
        out = np.ones(len(idx), dtype=bool)
        for e in known.tolist():
            out &= idx != e
    else:
        out = ~np.isin(idx, known)
    if len(known) < len(ex):
        for j in np.flatnonzero(idx < 0).tolist():
            if ids[j] in exclude:
                out[j] = False
    return out


def _select(req: _Request, ids: Sequence[str], scores: Sequence[float], exclude: set[str]
            ) -> tuple[list[str], np.ndarray]:
    """Candidates the filter keeps (and the request does not exclude), boosted and re-ranked (stable).

    ``ids`` may be a ``LazyIds``: only the kept candidates' strings are made. The filter's and boosters'
    bitmap keys are the request's (``_bind``), so each list filtered (the arm's, each chunk of a walk, the
    fallback's) computes none again."""
    if not len(ids):
        return [], np.zeros(0)
    s = np.asarray(scores, dtype=np.float64)
    idx = _item_idx(req.svc, ids)
    keep = _keep(req, idx) & _not_excluded(req.svc, ids, idx, exclude)
    sel = np.flatnonzero(keep)
    s = s[sel]
    if req.campaign.boosters.strip() and len(sel):
        s = boosted_scores(s, _boost(req, idx[sel]))
        order = np.argsort(-s, kind="stable")
        sel, s = sel[order], s[order]
    # the kept candidates' strings, made once, in their final order
    return (ids.take(sel) if isinstance(ids, LazyIds) else [ids[i] for i in sel.tolist()]), s


def _filtered(req: _Request, strategy: str, params: Mapping[str, Any], k: int, exclude: set[str]
              ) -> tuple[list[str], np.ndarray]:
    ids, scores = run_strategy(strategy, req.svc, req.inputs, params, k)
    return _select(req, ids, scores, exclude)


@dataclass(frozen=True, slots=True)
class _Request:
    """One campaign request as the filter and boosters see it: the services, the campaign, the IQL context,
    the request's items, and the bitmap keys ``_bind`` made for the filter (None: no filter) and for each
    booster clause (``(weight, key)`` pairs; None: no boosters)."""

    svc: Services
    campaign: Campaign
    ctx: RequestContext
    inputs: Inputs
    filter_key: Hashable | None
    booster_keys: tuple[tuple[float, Hashable], ...] | None


def _bind(svc: Services, campaign: Campaign, ctx: RequestContext, inputs: Inputs) -> _Request:
    """Bind the filter and the boosters to the request, each key computed once and each bitmap evaluated
    (or found in ``BitmapCache``), so a request parameter that is missing or does not fit its use raises
    here even when no candidate would reach the filter; returns the request with its keys (``_arm_key``
    reads them)."""
    view = svc.catalog_view
    bitmaps, engine = view.bitmaps, view.engine
    filter_key = booster_key = None
    if campaign.filter.strip():
        plan = engine.compile_filter(campaign.filter)
        filter_key = bitmaps.key(plan, ctx)
        bitmaps.bitmap(plan, ctx, view.version, key=filter_key)
    if campaign.boosters.strip():
        keys = []
        for weight, condition in engine.compile_boosters(campaign.boosters).clauses:
            key = bitmaps.key(condition, ctx)
            bitmaps.bitmap(condition, ctx, view.version, key=key)
            keys.append((weight, key))
        booster_key = tuple(keys)
    return _Request(svc, campaign, ctx, inputs, filter_key, booster_key)


def _arm_key(req: _Request, strategy: str, params: Mapping[str, Any], n: int, k: int, exclude: set[str],
             fill_from_model: bool) -> Hashable | None:
    """Everything the arm's part of a list (``_arm_list``) depends on, or None when it cannot be reused
    (a strategy whose ranking moves with time or the user's state): the ranking's source (model or
    catalog version) and the request's items, the catalog version (filter, availability, ids), the
    filter's and the boosters' bound values (their keys, from ``_bind``), the arm's strategy parameters,
    ``n``, ``k``, the excluded items and ``fill_from_model``.
    """
    source = ranking_source(strategy, req.svc)
    if source is None:
        return None
    arm_params = tuple(sorted((name, repr(value)) for name, value in params.items()))
    inputs = req.inputs
    return (strategy, source, arm_params, inputs.item_id, inputs.cart, inputs.session, req.svc.catalog_view.version,
            req.filter_key, req.booster_keys, n, k, frozenset(exclude), fill_from_model)


def _arm_list(req: _Request, strategy: str, params: Mapping[str, Any], n: int, k: int, exclude: set[str],
              fill_from_model: bool) -> tuple[list[str], np.ndarray, int]:
    """The arm's items for one request, best first, and how many candidates its strategy gave: its
    ``k`` over-fetched candidates through the filter and boosters, then (``fill_from_model``, fewer
    than ``n`` kept) the filtered catalog in its model's order (``_from_model``), below them."""
    raw_ids, raw_scores = run_strategy(strategy, req.svc, req.inputs, params, k)
    ids, scores = _select(req, raw_ids, raw_scores, exclude)
    if len(ids) < n and fill_from_model and raw_ids:
        deep = _from_model(req, strategy, params, n, exclude)
        if deep is not None:
            seen = set(ids)
            extra = [j for j, i in enumerate(deep[0]) if i not in seen]
            ids = ids + [deep[0][j] for j in extra]
            floor = float(scores[-1]) if len(scores) else np.inf  # below the arm's own candidates
            scores = np.concatenate([scores, np.minimum(deep[1][extra], floor)])
    return ids, scores, len(raw_ids)


def _ranking_prefix(strategy: str, svc: Services, inputs: Inputs, params: Mapping[str, Any], end: int
                    ) -> tuple[Any, Any, bool] | None:
    """The first ``end`` items of the arm's whole ranking (``model_ranking``) and whether they are all it
    has, from the model's top-``end + 1``: that is the whole ranking's prefix unless its ``end``-th and
    ``end + 1``-th scores tie (a top-k may pick either side of a tie at its cut), and then the whole
    ranking is taken. None if the strategy has no model ranking."""
    ranking = model_ranking(strategy, svc, inputs, params, end + 1)
    if ranking is None:
        return None
    ids, scores = ranking
    if len(ids) > end and scores[end - 1] == scores[end]:  # a tie across the cut: the whole ranking decides
        ids, scores = model_ranking(strategy, svc, inputs, params)  # type: ignore[misc]
    return ids, scores, len(ids) <= end


def _from_model(req: _Request, strategy: str, params: Mapping[str, Any], need: int, exclude: set[str]
                ) -> tuple[list[str], np.ndarray] | None:
    """The filtered catalog scored by the arm's model: its whole ranking (``model_ranking``) walked
    in growing chunks through the filter until ``need`` items are kept; None if the strategy has none.

    Only the ranking's prefix the walk reaches is asked for (``_ranking_prefix``: the model's top-n
    to the current chunk's end, asked again, 4x deeper, per chunk), so a request whose filter keeps
    enough of the first chunk costs O(chunk) rather than a sort of the model's whole catalog (1M
    items: ~0.1 s); the chunks, and so the list, are the same as the whole ranking's.

    With a filter, the walk stops once it has kept every item the filter selects for this request
    (``_filtered_catalog_size``; none: no ranking is asked for): a filter that selects a few items, or
    none, must not make each request rank the whole catalog (a request parameter can choose it)."""
    svc, campaign, ctx = req.svc, req.campaign, req.ctx
    out_ids: list[str] = []
    out_s: list[np.ndarray] = []
    if campaign.filter.strip():
        need = min(need, _filtered_catalog_size(svc, campaign, ctx, exclude))
        if need == 0:
            return out_ids, np.zeros(0)
        if len(selected := _selected(svc, campaign, ctx)) <= FEW_SELECTED:
            return _from_model_few(req, strategy, params, need, exclude, selected)
    start, chunk = 0, max(8 * need, 256)
    while len(out_ids) < need:
        prefix = _ranking_prefix(strategy, svc, req.inputs, params, start + chunk)
        if prefix is None:
            return None
        all_ids, all_scores, whole = prefix
        if start >= len(all_ids):
            break
        ids, s = _select(req, all_ids[start:start + chunk], all_scores[start:start + chunk], exclude)
        out_ids += ids
        out_s.append(s)
        if whole and start + chunk >= len(all_ids):
            break
        start, chunk = start + chunk, chunk * 4
    return out_ids, (np.concatenate(out_s) if out_s else np.zeros(0))


def _from_model_few(req: _Request, strategy: str, params: Mapping[str, Any], need: int, exclude: set[str],
                    selected: BitMap) -> tuple[list[str], np.ndarray] | None:
    """``_from_model`` for a filter that selects at most ``FEW_SELECTED`` items: only the selected items'
    positions in the arm's whole ranking are read (``ranking_at``), in ``_from_model``'s chunks (the boosters
    re-rank within a chunk), so the list is the walk's. A walk reads every ranked item up to
    the last selected one: ~250 ms per request at 200k items when a filter selects 3 scattered items, a cost
    a request parameter (e.g. a low ``$max_price``) could make every request pay."""
    svc = req.svc
    at = ranking_at(strategy, svc, req.inputs, params, svc.catalog_view.index.item_ids(selected))
    if at is None:
        return None
    pos, ids, scores, total = at
    out_ids: list[str] = []
    out_s: list[np.ndarray] = []
    start, chunk = 0, max(8 * need, 256)
    while len(out_ids) < need and start < total:
        lo, hi = np.searchsorted(pos, [start, start + chunk])
        kept, s = _select(req, ids[lo:hi], scores[lo:hi], exclude)
        out_ids += kept
        out_s.append(s)
        start, chunk = start + chunk, chunk * 4
    return out_ids, (np.concatenate(out_s) if out_s else np.zeros(0))


def _selected(svc: Services, campaign: Campaign, ctx: RequestContext) -> BitMap:
    """The items (item_idx) the campaign's filter selects for this request; without a filter the live items."""
    view = svc.catalog_view
    return (view.bitmaps.bitmap(view.engine.compile_filter(campaign.filter), ctx, view.version)
            if campaign.filter.strip() else view.index.live)


def _filtered_catalog_size(svc: Services, campaign: Campaign, ctx: RequestContext, exclude: set[str]) -> int:
    """Servable items the campaign's filter selects for this request, the request's own items excluded."""
    selected = _selected(svc, campaign, ctx)
    idx = svc.catalog_view.index.lookup(list(exclude))
    return len(selected) - int(in_bitmap(selected, idx).sum())


_NEEDS_REASON = {"personalized": "unknown_user", "last_seen": "unknown_user", "similar": "unknown_item",
                 "session": "unknown_item", "cart": "unknown_item", "visual": "unknown_item",
                 "top": "no_events_in_window", "popular": "no_popular_items"}


def _reason(svc: Services, campaign: Campaign, ctx: RequestContext, strategy: str, params: Mapping[str, Any],
            inputs: Inputs, n_candidates: int, from_arm: int, n: int, exclude: set[str]) -> tuple[str, str]:
    """Why the arm gave fewer than ``n`` items: ``(code, detail)``. An arm without any candidate says why first
    (an unknown item or user, no model): a filter that reads the request's item selects nothing for an item the
    catalog does not know either, and "too selective" would hide the cause."""
    if n_candidates == 0:
        if strategy in ("similar", "session", "cart", "personalized") and svc.models.current() is None:
            return "no_model", "no model version is loaded yet"
        if strategy == "top" and params.get("category") is not None and category_size(svc.catalog_view, params) == 0:
            attribute = params.get("category_attribute", "category")
            return "no_items_in_category", f"the catalog has no item whose {attribute} is {params['category']!r}"
        code = _NEEDS_REASON.get(strategy, "no_candidates")
        what = {"unknown_user": f"user {inputs.user_id!r} has no published list or history yet",
                "unknown_item": "the request's items are unknown to the arm's model"
                                + (" (or have no vector)" if strategy == "visual" else ""),
                "no_events_in_window": "no events in the popularity window",
                "no_popular_items": "no popular items published yet"}.get(code, "the arm returned no candidates")
        return code, what
    filtered = _filtered_catalog_size(svc, campaign, ctx, exclude)
    if campaign.filter.strip() and filtered < n:
        return "filter_too_selective", f"the filter selects {filtered} servable items for this request; n = {n}"
    if strategy in ("last_seen",):
        return "history_too_short", f"the user has {n_candidates} recently seen items"
    return "model_exhausted", f"the arm's model scores {from_arm} of the {filtered} items the filter selects"


def serve_list(svc: Services, campaign: Campaign, strategy: str, params: Mapping[str, Any],
               inputs: Inputs, n: int, *, fill_from_model: bool = True) -> ServedList:
    """The ``n`` items of one campaign request for the chosen arm's ``strategy``.

    The arm's over-fetched candidates go through the filter first; if fewer than ``n`` pass and
    ``fill_from_model``, the filtered catalog is scored by the arm's model (``model_ranking``)
    before the campaign's fallback tops the list up. ``reason``/``reason_detail`` say why the
    arm gave fewer than ``n``.

    Raises
    ------
    api.iql.IQLError
        If the filter or boosters need a request parameter that is missing or has the wrong type.
    """
    svc.catalog_view.sync()
    ctx = request_context(svc, inputs)
    # bind the filter and boosters first (cached per bound values): a request parameter that is
    # missing or does not fit its use is an IQLError even when no candidate would reach the filter
    req = _bind(svc, campaign, ctx, inputs)
    exclude = set(inputs.cart) | set(inputs.session) | ({inputs.item_id} if inputs.item_id else set())
    k = n * _OVERFETCH + len(exclude)
    key = _arm_key(req, strategy, params, n, k, exclude, fill_from_model)

    def arm() -> tuple[list[str], np.ndarray, int]:
        return _arm_list(req, strategy, params, n, k, exclude, fill_from_model)

    # reused while nothing it depends on changed: with a selective filter the arm's part is the
    # costliest of a request (the whole model ranking walked through the filter)
    ids, scores, n_raw = arm() if key is None else svc.filled.get(key, arm)
    out = ServedList()
    out.items = [{"item_id": i, "score": float(s)} for i, s in zip(ids[:n], scores[:n].tolist(), strict=True)]
    out.from_arm = len(out.items)
    if len(out.items) < n:
        out.reason, out.reason_detail = _reason(svc, campaign, ctx, strategy, params, inputs, n_raw, out.from_arm,
                                                n, exclude)
        taken = exclude | set(ids[:n])
        # the fallback is filtered too: draw from a deep pool so a narrow filter still fills the list
        pool = max(k + len(taken), _FALLBACK_POOL)
        more, more_scores = _filtered(req, campaign.fallback, params, pool, taken)
        extra_items = [{"item_id": i, "score": float(s), "fallback": True}
                       for i, s in zip(more[: n - len(out.items)], more_scores.tolist(), strict=False)]
        out.items += extra_items
        out.topped_up = len(extra_items)
    return out
