"""``/v1/campaigns``: create, read, replace, delete campaigns; ``/arms`` shows the optimizer's view.

A campaign is checked whole when saved: fields (``api/campaigns/schema.py``), the goal against
the configured event types, the IQL filter and boosters against the catalog schema, so a
typo fails here with its line and column (HTTP 400), never at request time, the default
``params`` (campaign and arms) bound into them as a request binds them (HTTP 422 naming
``params.<name>``), and the strategy parameters (``window``, ``category``, ``category_attribute``)
as the strategy reads them (HTTP 422 naming the arm and the parameter).
"""

from __future__ import annotations

import dataclasses
import time

import msgspec
import orjson
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from api.campaigns.registry import optimizer_config
from api.campaigns.schema import ID_PATTERN, CampaignIn
from api.errors import ApiError, once_params, validate_params
from api.iql import IQLEngine, IQLError
from api.iql.evaluate import check_params, param_names
from api.json import json_response
from api.json_body import read_body, refuse_content_coding
from api.recommendations import RESERVED_PARAMS
from api.services import Services
from api.strategies import STRATEGY_PARAMS, check_strategy_param
from operators.control_group import CONTROL_ARM
from operators.parse import json_type
from state.campaigns import Campaign

__all__ = ["MAX_CAMPAIGN_BYTES", "list_campaigns", "create_campaign", "get_campaign", "put_campaign", "delete_campaign", "get_arms"]


MAX_CAMPAIGN_BYTES = 64_000
"""Largest campaign body: refused (413) while it streams in, before the rest is read into memory."""


class ArmsParams(BaseModel, extra="forbid"):
    segment: str = Field(default="", max_length=256, description="Optimizer segment; '' = no segment")


def _campaign_id(request: Request) -> str:
    value = validate_params(_IdParam, {"campaign_id": request.path_params["campaign_id"]})
    return value.campaign_id


class _IdParam(BaseModel):
    campaign_id: str = Field(pattern=ID_PATTERN)


def _dump(c: Campaign) -> dict[str, object]:
    return msgspec.to_builtins(c)  # type: ignore[no-any-return]


async def _read_campaign(request: Request, svc: Services) -> CampaignIn:
    a = svc.settings.api  # the caller refused a content-coding first (refuse_content_coding)
    body = await read_body(request, MAX_CAMPAIGN_BYTES, a.body_timeout_s, a.body_total_s, "the campaign limit")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "body", f"malformed JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ApiError(422, "body", f"must be a JSON object (a campaign); got {json_type(obj)}")
    c = validate_params(CampaignIn, obj)
    # a goal is what a shopper does after a list: a server-only type (the served lists themselves) would be
    # "reached" by every list served
    goals = {t.name for t in svc.settings.event_types} - set(svc.settings.api.server_only_types)
    if c.goal not in goals:
        raise ApiError(422, "goal", f"must be a configured event type that clients post {sorted(goals)}", value=c.goal)
    view = svc.catalog_view
    view.sync()
    plans: dict[str, object] = {}
    for field, text, check in (("filter", c.filter, view.engine.validate_filter),
                               ("boosters", c.boosters, view.engine.validate_boosters)):
        if text.strip():
            try:
                check(text)
            except IQLError as exc:
                raise ApiError(400, field, str(exc), **exc.to_dict()) from exc
            plan = view.engine.compile_filter(text) if field == "filter" else view.engine.compile_boosters(text)
            reserved = sorted(set(param_names(plan)) & RESERVED_PARAMS)
            if reserved:
                raise ApiError(400, field, f"${reserved[0]} is a query parameter of the request itself "
                               f"({', '.join(sorted(RESERVED_PARAMS))}), so no request can set it; give the "
                               "IQL parameter another name")
            plans[field] = plan
    _check_param_defaults(c, plans)
    _check_strategy_params(c, view.engine)
    return c


def _check_param_defaults(c: CampaignIn, plans: dict[str, object]) -> None:
    """Refuse default ``$params`` that no request could use: each is bound as a request binds it.

    A request's parameters are ``{**campaign params, **arm params, **query}``, so a default that does
    not fit its use in the filter or boosters (``price < $p`` with ``"p": "abc"``, or a list where one
    value is compared) would make every request that does not override it a 400 naming a parameter the
    client never sent. The 422 names where the default is (``params.p`` or ``arms.1.params.p``).
    """
    sources = [("params", dict(c.params))] + [(f"arms.{i}.params", dict(a.params)) for i, a in enumerate(c.arms)]
    for field, plan in plans.items():
        for where, params in sources:
            try:
                check_params(plan, params)
            except IQLError as exc:
                name = exc.param or "?"
                raise ApiError(422, f"{where}.{name}", f"default of ${name} does not fit its use in the {field}: "
                               f"{exc.expected}, found {exc.found} (line {exc.line}, column {exc.column})",
                               **exc.to_dict()) from exc


def _check_strategy_params(c: CampaignIn, engine: IQLEngine) -> None:
    """Refuse a strategy parameter its strategy could not use (``"window": "soon"``), which would otherwise
    fail every request served by that arm: the 422 names where it is (``arms.1.params.window``, or
    ``params.window``: the campaign's, read by every arm and the fallback), the arm and the parameter."""
    sources = [("params", None, c.params, c.params)]
    sources += [(f"arms.{i}.params", a, a.params, {**c.params, **a.params}) for i, a in enumerate(c.arms)]
    for where, arm, own, params in sources:
        for name in [n for n in own if n in STRATEGY_PARAMS]:
            try:
                check_strategy_param(name, params, engine)
            except ValueError as exc:
                who = "the campaign's params (every arm's)" if arm is None else f"arm {arm.name!r} (strategy {arm.strategy})"
                raise ApiError(422, f"{where}.{name}", f"{name} of {who}: {exc}", param=name,
                               arm=None if arm is None else arm.name) from exc


async def list_campaigns(request: Request) -> Response:
    svc: Services = request.app.state.services
    return json_response({"campaigns": [_dump(c) for c in svc.campaigns.all()]})


async def create_campaign(request: Request) -> Response:
    svc: Services = request.app.state.services
    refused = refuse_content_coding(request)
    if refused is not None:  # before the body is read: a gzip body is not "malformed JSON"
        return refused
    c = await _read_campaign(request, svc)
    if c.campaign_id is None:
        raise ApiError(422, "campaign_id", "required (or PUT /v1/campaigns/{campaign_id})")
    if svc.campaigns.get(c.campaign_id) is not None:
        raise ApiError(409, "campaign_id", f"campaign {c.campaign_id!r} exists; PUT replaces it")
    now = time.time()
    campaign = c.to_campaign(c.campaign_id, now, now, 1)
    svc.campaigns.put(campaign)
    return json_response(_dump(campaign), status_code=201)


async def get_campaign(request: Request) -> Response:
    svc: Services = request.app.state.services
    cid = _campaign_id(request)
    c = svc.campaigns.get(cid)
    if c is None:
        raise ApiError(404, "campaign_id", f"unknown campaign {cid!r}")
    return json_response(_dump(c))


async def put_campaign(request: Request) -> Response:
    svc: Services = request.app.state.services
    refused = refuse_content_coding(request)
    if refused is not None:  # before the body is read: a gzip body is not "malformed JSON"
        return refused
    cid = _campaign_id(request)
    c = await _read_campaign(request, svc)
    if c.campaign_id is not None and c.campaign_id != cid:
        raise ApiError(422, "campaign_id", f"body says {c.campaign_id!r} but the path says {cid!r}")
    old = svc.campaigns.get(cid)
    now = time.time()
    campaign = c.to_campaign(cid, old.created_ts if old else now, now, old.version + 1 if old else 1)
    svc.campaigns.put(campaign)
    return json_response(_dump(campaign), status_code=200 if old else 201)


async def delete_campaign(request: Request) -> Response:
    svc: Services = request.app.state.services
    cid = _campaign_id(request)
    if not svc.campaigns.delete(cid):
        raise ApiError(404, "campaign_id", f"unknown campaign {cid!r}")
    return Response(status_code=204)


async def get_arms(request: Request) -> Response:
    """Pulls, rewards, posterior and P(best) of each of the campaign's arms; the control group (not an
    arm: it takes no part in Thompson sampling) apart with its lists and rewards; this campaign's
    feedback counters."""
    svc: Services = request.app.state.services
    cid = _campaign_id(request)
    c = svc.campaigns.get(cid)
    if c is None:
        raise ApiError(404, "campaign_id", f"unknown campaign {cid!r}")
    p = validate_params(ArmsParams, once_params(request.query_params))
    now = time.time()
    names = [a.name for a in c.arms]  # the optimizer's arms only: the control group is not one
    reports = svc.optimizer.report(cid, names, p.segment, optimizer_config(c), now)
    control = None
    if c.control_share > 0:  # held back by a hash, served the fallback: lists and rewards, no posterior
        st = svc.optimizer.arms.get((cid, CONTROL_ARM, p.segment))
        control = {"arm": CONTROL_ARM, "share": c.control_share, "strategy": c.fallback,
                   "lists": st.total_pulls if st else 0, "rewards": st.total_rewards if st else 0}
    fold = svc.fold
    return json_response({
        "campaign": cid, "segment": p.segment, "segments": svc.optimizer.segments(cid),
        "arms": [dataclasses.asdict(r) for r in reports],
        "control": control,
        "feedback": None if fold is None else fold.campaign_counters(cid),
    })
