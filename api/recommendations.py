"""``GET /v1/recommendations``: a campaign's list (arm chosen by the optimizer), or without a campaign
the user's published top-N (popular items for unknown users)."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response

from api.campaign_registry import optimizer_config
from api.campaign_schema import ID_PATTERN
from api.errors import ApiError, validate_params
from api.explain import explain_items
from api.iql import IQLError
from api.json import json_response
from api.services import Services
from api.serving import serve_list
from api.strategies import STRATEGY_NEEDS, Inputs, parse_duration_s
from operators.attribution import Impression
from operators.control_group import CONTROL, CONTROL_ARM, group_of
from operators.score import TopN
from state.campaigns import Campaign

__all__ = ["RecommendationParams", "CampaignRequestParams", "get_recommendations"]

_MAX_LIST = 100  # items in cart / session
_PARAM_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


class RecommendationParams(BaseModel, extra="allow"):
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    n: int = Field(default=20, ge=1, le=500)


def _id_list(value: str | None) -> tuple[str, ...]:
    """Comma-separated item ids -> distinct ids in order. Raises ValueError naming the bound broken."""
    if value is None:
        return ()
    ids = tuple(dict.fromkeys(x.strip() for x in value.split(",") if x.strip()))
    if not ids:
        raise ValueError("must hold at least one item id (comma-separated)")
    if len(ids) > _MAX_LIST:
        raise ValueError(f"at most {_MAX_LIST} item ids; got {len(ids)}")
    if any(len(x) > 256 for x in ids):
        raise ValueError("item ids must be at most 256 characters")
    return ids


class CampaignRequestParams(BaseModel, extra="allow"):
    """Query of a campaign request; other parameters become IQL ``$params`` (``user.x`` -> ``context.user.x``)."""

    campaign: str = Field(pattern=ID_PATTERN)
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    item_id: str | None = Field(default=None, min_length=1, max_length=256)
    cart: str | None = Field(default=None, max_length=30_000, description="Comma-separated item ids")
    session: str | None = Field(default=None, max_length=30_000, description="Comma-separated item ids, oldest first")
    n: int | None = Field(default=None, ge=1, le=500, description="Default: the campaign's n")
    window: str | None = Field(default=None, max_length=32, description="Popularity window of 'top', e.g. 24h")
    category: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration_s(v)
        return v

    def extras(self) -> dict[str, str]:
        """The extra query parameters (IQL ``$params``), checked: at most 32, short names and values."""
        extra = dict(self.model_extra or {})
        if len(extra) > 32:
            raise ApiError(422, "query", f"at most 32 extra parameters; got {len(extra)}")
        for k, v in extra.items():
            if not k or len(k) > 64 or not set(k) <= _PARAM_NAME_CHARS:
                raise ApiError(422, k[:64] or "query", "parameter names are letters, digits, '_' and '.' (max 64)")
            if not isinstance(v, str) or len(v) > 1000:
                raise ApiError(422, k, "must be one value of at most 1000 characters")
        return extra


def _check_inputs(c: Campaign, inputs: Inputs) -> None:
    for need in STRATEGY_NEEDS[c.scenario]:
        options = need.split("|")
        if not any(getattr(inputs, o) for o in options):
            raise ApiError(422, options[0], f"required for campaign {c.campaign_id!r} (scenario {c.scenario})")


def _campaign_list(svc: Services, raw: dict[str, str], explain: bool = False) -> Response:
    p = validate_params(CampaignRequestParams, raw)
    lists: dict[str, tuple[str, ...]] = {}
    for field in ("cart", "session"):
        try:
            lists[field] = _id_list(getattr(p, field))
        except ValueError as exc:
            raise ApiError(422, field, str(exc)) from exc
    cart, session = lists["cart"], lists["session"]
    c = svc.campaigns.get(p.campaign)
    if c is None:
        raise ApiError(404, "campaign", f"unknown campaign {p.campaign!r}")
    extras = p.extras()
    inputs = Inputs(user_id=p.user_id, item_id=p.item_id, cart=cart, session=session, params=extras)
    _check_inputs(c, inputs)
    cfg = optimizer_config(c)
    segment = extras.get(c.optimizer.segment_param, "") if c.optimizer.segment_param else ""
    now = time.time()
    if c.control_share > 0 and p.user_id is not None and group_of(p.user_id, c.campaign_id, c.control_share) == CONTROL:
        arm, strategy, arm_params = CONTROL_ARM, c.fallback, {}
    else:
        arm = svc.optimizer.choose(c.campaign_id, [a.name for a in c.arms], segment, cfg, now)
        spec = next(a for a in c.arms if a.name == arm)
        strategy, arm_params = spec.strategy, spec.params
    params = {**c.params, **arm_params, **{k: v for k, v in (("window", p.window), ("category", p.category)) if v}}
    n = p.n or c.n
    try:
        served = serve_list(svc, c, strategy, params, inputs, n)
    except IQLError as exc:
        raise ApiError(400, "filter", str(exc), **exc.to_dict()) from exc
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
    raw = dict(request.query_params)
    flag = raw.pop("explain", "false").lower()  # explain=true: per-item explanations (api/explain.py)
    if flag not in ("true", "false", "1", "0"):
        raise ApiError(422, "explain", "must be true or false", value=flag)
    explain = flag in ("true", "1")
    if "campaign" in raw:
        return _campaign_list(svc, raw, explain)
    p = validate_params(RecommendationParams, raw)
    t = svc.topn.get(p.user_id) if p.user_id else None
    if isinstance(t, TopN):
        items = [{"item_id": i, "score": s} for i, s in zip(t.items[: p.n], t.scores[: p.n])]
        body = {"source": t.source, "model_version": t.model_version, "updated_ts": t.updated_ts,
                "last_event_ts": t.last_event_ts}
    else:
        items = [{"item_id": i, "score": s} for i, s in svc.popular(p.n)]
        body = {"source": "popular", "model_version": None}
    svc.metrics.recs_source.labels(body["source"]).inc()
    if explain:  # hook of api/explain.py
        strategy = "popular" if body["source"] == "popular" else "personalized"
        body["explanations"] = explain_items(svc, None, None, strategy, Inputs(user_id=p.user_id), items)
    request_id = svc.signer.issue("", "", p.user_id, time.time())  # feedback on it verifies; no campaign learns
    return json_response({"request_id": request_id, "user_id": p.user_id, "items": items, **body})
