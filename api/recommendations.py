"""``GET /v1/recommendations``: a campaign's list (arm chosen by the optimizer), or without a campaign
the user's published top-N (popular items for unknown users)."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response

from api.auth import holds_scope
from api.campaigns.registry import declared_segment, optimizer_config
from api.campaigns.schema import ID_PATTERN
from api.errors import ApiError, given_once, validate_params
from api.explain import explain_items
from api.iql import IQLError
from api.iql.evaluate import param_control_char
from api.json import json_response
from api.services import Services
from api.serving import serve_list
from api.strategies import STRATEGY_NEEDS, Inputs, parse_duration_s
from operators.attribution import Impression
from operators.control_group import CONTROL, CONTROL_ARM, group_of
from operators.ids import BadId, CanonicalId, canonical_id, has_control
from operators.score import TopN
from state.campaigns import Campaign

__all__ = ["RecommendationParams", "CampaignRequestParams", "get_recommendations"]

_MAX_LIST = 100  # items in cart / session
_PARAM_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


class RecommendationParams(BaseModel, extra="allow"):
    user_id: CanonicalId | None = None
    n: int = Field(default=20, ge=1, le=500)


def _id_list(value: str | None) -> tuple[str, ...]:
    """Comma-separated item ids -> distinct ids in order. Raises ValueError naming the bound broken.

    Every element is an id: an empty one (``a,,b``, a leading or trailing comma, an element of white
    space only) is refused, not skipped, as an empty ``cart=`` is (the client's list lost an id).
    """
    if value is None:
        return ()
    if not value.strip():
        raise ValueError("must hold at least one item id (comma-separated)")
    parts = value.split(",")
    if len(parts) > _MAX_LIST:
        raise ValueError(f"at most {_MAX_LIST} item ids; got {len(parts)}")
    empty = [i for i, x in enumerate(parts, 1) if not x.strip()]
    if empty:
        raise ValueError(f"item id {empty[0]} of {len(parts)} is empty (item ids are separated by single commas, "
                         f"none empty); got {value[:80]!r}")
    try:
        return tuple(dict.fromkeys(canonical_id(x) for x in parts))
    except BadId as exc:
        raise ValueError(f"item ids: {exc}") from exc


def _id_lists(p: CampaignRequestParams) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``cart`` and ``session`` by ``_id_list`` (both request paths); a broken one is a 422 naming it."""
    lists: dict[str, tuple[str, ...]] = {}
    for field in ("cart", "session"):
        try:
            lists[field] = _id_list(getattr(p, field))
        except ValueError as exc:
            raise ApiError(422, field, str(exc)) from exc
    return lists["cart"], lists["session"]


class CampaignRequestParams(BaseModel, extra="allow"):
    """Query of a campaign request; other parameters become IQL ``$params`` (``user.x`` -> ``context.user.x``)."""

    campaign: str = Field(pattern=ID_PATTERN)
    user_id: CanonicalId | None = None
    item_id: CanonicalId | None = None
    cart: str | None = Field(default=None, max_length=4000, description="Comma-separated item ids")
    session: str | None = Field(default=None, max_length=4000, description="Comma-separated item ids, oldest first")
    n: int | None = Field(default=None, ge=1, le=500, description="Default: the campaign's n")
    window: str | None = Field(default=None, max_length=32, description="Popularity window of 'top', e.g. 24h")
    category: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration_s(v)
        return v

    @field_validator("category")
    @classmethod
    def _category(cls, v: str | None) -> str | None:
        if v is not None and has_control(v):
            raise ValueError("must not hold control characters")
        return v

    def extras(self) -> dict[str, str | list[str]]:
        """The extra query parameters (IQL ``$params``), checked: at most 32, short names and values.

        A key given more than once (``&bs=Acme&bs=Bolt``) is a list parameter (for ``IN $bs``,
        ``ANY $bs``); given once it is one value, which IN reads as a list of one. A value holding a control
        character (Unicode category Cc: NUL, tab, newline, ...) is a 422 naming the parameter.
        """
        extra = dict(self.model_extra or {})
        if len(extra) > 32:
            raise ApiError(422, "query", f"at most 32 extra parameters; got {len(extra)}")
        for k, v in extra.items():
            if not k or len(k) > 64 or not set(k) <= _PARAM_NAME_CHARS:
                raise ApiError(422, k[:64] or "query", "parameter names are letters, digits, '_' and '.' (max 64)")
            values = v if isinstance(v, list) else [v]
            if len(values) > 100 or not all(isinstance(x, str) and len(x) <= 1000 for x in values):
                raise ApiError(422, k, "must be at most 100 values of at most 1000 characters each")
            bad = param_control_char(values)
            if bad is not None:
                raise ApiError(422, k, f"must not hold control characters (Unicode category Cc); found {bad}",
                               param=k)
        return extra


RESERVED_PARAMS: frozenset[str] = frozenset(CampaignRequestParams.model_fields) | {"explain"}
"""Query parameters a campaign request reads itself: never IQL ``$params`` (a filter's ``$n`` or ``$category``
could not be set by any request, so a campaign that uses one is refused when saved)."""


def _once(raw: dict[str, str | list[str]]) -> None:
    """Refuse a request parameter given more than once (``cart=a&cart=b``): only IQL ``$params`` are lists
    when repeated; ``cart`` and ``session`` are one comma-separated list (``cart=a,b``)."""
    for name in sorted(RESERVED_PARAMS):
        given = raw.get(name)
        if isinstance(given, list):
            how = f", as one comma-separated list of item ids ({name}=a,b)" if name in ("cart", "session") else ""
            raise given_once(name, len(given), how)


def _check_client_cost(n: int | None, explain: bool, admin: bool, max_n: int) -> None:
    """Keep a client key's request cheap: ``explain`` (a debugging aid that ablates every item through the model) is
    a 403 naming it, and ``n`` above ``api.client_max_n`` a 422 naming it; an admin key may ask for both."""
    if admin:
        return
    if explain:
        raise ApiError(403, "explain", "needs an admin key (a debugging aid, costly per item); this key is a client key")
    if n is not None and n > max_n:
        raise ApiError(422, "n", f"at most api.client_max_n={max_n} with a client key (an admin key: up to 500); "
                                 f"got {n}", value=n)


def _check_inputs(c: Campaign, inputs: Inputs) -> None:
    for need in STRATEGY_NEEDS[c.scenario]:
        options = need.split("|")
        if not any(getattr(inputs, o) for o in options):
            raise ApiError(422, options[0], f"required for campaign {c.campaign_id!r} (scenario {c.scenario})")


def _campaign_list(svc: Services, raw: dict[str, str], explain: bool = False, admin: bool = True) -> Response:
    p = validate_params(CampaignRequestParams, raw)
    _check_client_cost(p.n, explain, admin, svc.settings.api.client_max_n)
    cart, session = _id_lists(p)
    c = svc.campaigns.get(p.campaign)
    if c is None:
        raise ApiError(404, "campaign", f"unknown campaign {p.campaign!r}")
    extras = p.extras()
    _check_inputs(c, Inputs(user_id=p.user_id, item_id=p.item_id, cart=cart, session=session))
    cfg = optimizer_config(c)
    segment = extras.get(c.optimizer.segment_param, "") if c.optimizer.segment_param else ""
    if not isinstance(segment, str):
        raise ApiError(400, c.optimizer.segment_param or "segment", "the segment parameter takes one value")
    segment = declared_segment(c, segment)  # an undeclared value: the global arm statistics, no new key
    now = time.time()
    if c.control_share > 0 and p.user_id is not None and group_of(p.user_id, c.campaign_id, c.control_share) == CONTROL:
        arm, strategy, arm_params = CONTROL_ARM, c.fallback, {}
    else:
        arm = svc.optimizer.choose(c.campaign_id, [a.name for a in c.arms], segment, cfg, now)
        spec = next(a for a in c.arms if a.name == arm)
        strategy, arm_params = spec.strategy, spec.params
    params = {**c.params, **arm_params, **{k: v for k, v in (("window", p.window), ("category", p.category)) if v}}
    # IQL $params: the campaign's and the arm's parameters are defaults, the request's override them
    inputs = Inputs(user_id=p.user_id, item_id=p.item_id, cart=cart, session=session,
                    params={**c.params, **arm_params, **extras})
    n = p.n or c.n
    try:
        served = serve_list(svc, c, strategy, params, inputs, n, fill_from_model=svc.settings.api.fill_from_model)
    except IQLError as exc:  # a $param missing or not fitting its use: the 400 names the parameter
        raise ApiError(400, exc.param or "filter", str(exc), **exc.to_dict()) from exc
    request_id = svc.signer.issue(c.campaign_id, arm, p.user_id, now)
    items = [i["item_id"] for i in served.items]
    svc.publish_served(Impression(request_id=request_id, campaign_id=c.campaign_id, arm=arm, ts=now, goal=c.goal,
                                  window_s=c.window_s, user_id=p.user_id, segment=segment, items=items),
                       c.scenario, strategy)
    svc.metrics.recs_source.labels(f"campaign:{strategy}").inc()
    body = {
        "request_id": request_id, "campaign": c.campaign_id, "arm": arm, "scenario": c.scenario,
        "strategy": strategy, "segment": segment, "user_id": p.user_id, "items": served.items,
        "from_arm": served.from_arm, "topped_up": served.topped_up,
        "fallback": c.fallback if served.topped_up else None,
        "reason": served.reason, "reason_detail": served.reason_detail,
    }
    if explain:  # hook of api/explain.py
        body["explanations"] = explain_items(svc, c, arm, strategy, inputs, served.items)
    return json_response(body)


async def get_recommendations(request: Request) -> Response:
    """Response without ``campaign``: ``{"request_id", "user_id", "items": [{"item_id", "score"}], "source", "model_version", ...}``.

    ``source`` is ``model`` / ``model+popular`` for a user with a published list, ``popular``
    for a user the stream has not seen (the fallback). With ``campaign``: ``{"request_id",
    "campaign", "arm", "scenario", "strategy", "items", "from_arm", "topped_up", "fallback"}``.
    """
    svc: Services = request.app.state.services
    raw: dict[str, str | list[str]] = {}
    for k, v in request.query_params.multi_items():  # a repeated key is a list parameter
        prev = raw.get(k)
        raw[k] = v if prev is None else [*prev, v] if isinstance(prev, list) else [prev, v]
    _once(raw)
    flag = raw.pop("explain", "false")  # explain=true: per-item explanations (api/explain.py)
    flag = flag.lower() if isinstance(flag, str) else str(flag)
    if flag not in ("true", "false", "1", "0"):
        raise ApiError(422, "explain", "must be true or false", value=flag)
    explain = flag in ("true", "1")
    admin = holds_scope(request.scope, "admin")
    if "campaign" in raw:
        return _campaign_list(svc, raw, explain, admin)
    checked = validate_params(CampaignRequestParams, {**raw, "campaign": "x"})  # documented parameters hold on both paths
    _id_lists(checked)
    p = validate_params(RecommendationParams, raw)
    _check_client_cost(p.n, explain, admin, svc.settings.api.client_max_n)
    t = svc.topn.get(p.user_id) if p.user_id else None
    if isinstance(t, TopN):
        # the flow published this list before the catalog may have changed: drop what is no longer servable
        svc.catalog_view.sync()
        keep = svc.catalog_view.servable(t.items).tolist()
        items = [{"item_id": i, "score": s} for i, s, ok in zip(t.items, t.scores, keep, strict=False) if ok][: p.n]
        body = {"source": t.source, "model_version": t.model_version, "updated_ts": t.updated_ts,
                "last_event_ts": t.last_event_ts}
        if len(items) < p.n and t.source != "popular":
            more = svc.servable_popular(p.n - len(items), exclude={i["item_id"] for i in items})
            if more:
                items += [{"item_id": i, "score": s, "fallback": True} for i, s in more]
                body["source"] = "model+popular"
    else:
        items = [{"item_id": i, "score": s} for i, s in svc.servable_popular(p.n)]
        body = {"source": "popular", "model_version": None}
    if len(items) < p.n:  # say why the list is short
        body["reason"] = "no_popular_items" if not items else "few_servable_items"
        body["reason_detail"] = (f"{len(items)} servable items between the user's list and the popular ones; "
                                 f"n = {p.n}")
    svc.metrics.recs_source.labels(body["source"]).inc()
    if explain:  # hook of api/explain.py
        strategy = "popular" if body["source"] == "popular" else "personalized"
        body["explanations"] = explain_items(svc, None, None, strategy, Inputs(user_id=p.user_id), items)
    request_id = svc.signer.issue("", "", p.user_id, time.time())  # feedback on it verifies; no campaign learns
    return json_response({"request_id": request_id, "user_id": p.user_id, "items": items, **body})
