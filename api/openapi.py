"""``GET /openapi.json``: the OpenAPI 3.1 schema, built from the same pydantic models that validate requests."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from api.analytics.endpoints import MAX_ABS_TS, CampaignParams
from api.campaigns.endpoints import ArmsParams
from api.campaigns.schema import ID_PATTERN, CampaignIn
from api.json import json_response
from api.recommendations import CampaignRequestParams
from operators.settings import Settings

__all__ = ["build_openapi", "openapi"]

_REF = "#/components/schemas/{model}"
_ID_CHARS = r"[^\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]"
ID_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 256,
                             "pattern": rf"^\s*{_ID_CHARS[:-1]}\s]{_ID_CHARS}*\s*$"}
"""An id as ``operators/ids.py`` accepts it (printable, not only white space, at most 256 characters)."""
BODY_ID_SCHEMA: dict[str, Any] = {"anyOf": [ID_SCHEMA, {
    "type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1,
    "description": "an integer id, written as a JSON integer (a float literal is exact only below 2**53)"}]}
"""An id in a JSON body: the string rule, or a JSON integer (``12345`` is the id ``"12345"``)."""
_ID_PARAMS = frozenset({"user_id", "item_id"})
_ID_ELEMENT = rf"\s*{_ID_CHARS[:-1]}\s,]{_ID_CHARS[:-1]},]{{0,255}}\s*"  # an id: not empty, not only white space
_ID_LIST = {"type": "string", "maxLength": 4000, "pattern": rf"^{_ID_ELEMENT}(,{_ID_ELEMENT}){{0,99}}$"}
"""Comma-separated ids (``cart``, ``session``): 1 to 100 ids of at most 256 characters, none empty
(``api/recommendations.py`` ``_id_list``)."""
_ERROR = {"$ref": "#/components/schemas/Error"}
_TIME = {"anyOf": [{"type": "number", "minimum": -MAX_ABS_TS, "maximum": MAX_ABS_TS},
                   {"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]}
"""A point in time as the analytics take it (``api/analytics/endpoints.py`` ``_ts``): epoch seconds or RFC 3339."""


def _no_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``anyOf [X, null]`` -> ``X`` (a query parameter is absent rather than null)."""
    alts = [a for a in schema.get("anyOf", []) if a.get("type") != "null"]
    if len(alts) == 1:
        out = {k: v for k, v in schema.items() if k != "anyOf"}
        out.update(alts[0])
        return out
    return schema


def _query(model: type[BaseModel], optional: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    s = model.model_json_schema()
    required = set(s.get("required", [])) - optional
    return [{"name": name, "in": "query", "required": name in required,
             "description": prop.get("description", ""),
             "schema": ID_SCHEMA if name in _ID_PARAMS else _ID_LIST if name in ("cart", "session") else
             _TIME if model is CampaignParams and name in ("from", "to") else
             {"type": "string", "maxLength": 32, "pattern": r"^\s*(\d*[1-9]\d*(\.\d+)?|\d+\.\d*[1-9]\d*)[smhdw]?\s*$"} if name == "window" else
             {k: v for k, v in _no_null(prop).items() if k not in ("title", "description")}}
            for name, prop in s["properties"].items()]


def event_schema(settings: Settings) -> dict[str, Any]:
    """One event as ``POST /v1/events`` accepts it: one alternative per client-postable event type with the
    fields it requires; ``ts`` within the bounds around the server's clock at the time the schema was built."""
    now = time.time()
    max_age = min(settings.stream.max_age_s or settings.api.max_age_s, settings.api.max_age_s)
    ts = {"type": "number", "description": "epoch seconds (default: now); at most api.max_age_s old and "
          "stream.future_skew_s ahead (bounds below: at the time this schema was served)",
          "minimum": round(now - max_age * 0.9), "maximum": round(now)}
    quantity = {"type": "number", "exclusiveMinimum": 0, "maximum": settings.stream.max_quantity,
                "description": "units, at most stream.max_quantity (an item's repeated basket lines summed)"}
    price = {"type": "number", "minimum": 0, "maximum": settings.stream.max_price,
             "description": "per unit, in the shop's currency; at most stream.max_price"}
    line = {"type": "object", "required": ["item_id"], "additionalProperties": False,
            "properties": {"item_id": BODY_ID_SCHEMA, "quantity": quantity, "price": price}}
    idx = BODY_ID_SCHEMA
    props = {"event_id": idx, "ts": ts, "user_id": idx, "session_id": idx, "item_id": idx,
             "items": {"type": "array", "minItems": 1, "maxItems": 20, "items": {"anyOf": [idx, line]}},
             "quantity": quantity, "price": price, "store_id": idx,
             "query": {"type": "string"}, "lat": {"type": "number"}, "lon": {"type": "number"},
             "campaign_id": idx, "arm": {"type": "string"},  # free text, bounded by the event's size
             "request_id": {"type": "string", "minLength": 1, "maxLength": 1024, "description": (
                 "a request_id the API issued to this user_id (403 otherwise)")}}
    raw = props
    props = {k: v if k in ("event_id", "ts", "user_id") else {"anyOf": [v, {"type": "null"}]} for k, v in props.items()}
    server_only = set(settings.api.server_only_types)
    alts = []
    for spec in settings.event_types:
        if spec.name in server_only:
            continue
        alt: dict[str, Any] = {"type": "object", "required": ["type", "user_id"],
                               "properties": {**props, "type": {"const": spec.name}}}
        need = []
        for req in spec.requires:  # present and not null (null counts as absent)
            alt_of = [{"required": [n], "properties": {n: _present(raw[n])}} for n in req.split("|")]
            need.append(alt_of[0] if len(alt_of) == 1 else {"anyOf": alt_of})
        if need:
            alt["allOf"] = need
        alts.append(alt)
    return {"oneOf": alts}


def _present(schema: dict[str, Any]) -> dict[str, Any]:
    """A required field's schema: present means not empty (``operators/parse.py``: not None, "" or [])."""
    return {**schema, "minLength": max(1, schema.get("minLength", 0))} if schema.get("type") == "string" else schema


def _responses(ok: int, ok_schema: dict[str, Any] | None, *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {str(ok): {"description": "OK"} if ok_schema is None else
                           {"description": "OK", "content": {"application/json": {"schema": ok_schema}}}}
    for code in errors:
        out[str(code)] = {"description": "Error naming the field",
                          "content": {"application/json": {"schema": _ERROR}}}
    if 401 in errors:  # a scoped endpoint: also rate-limited per key and client ([api] rate_limit)
        out["429"] = {"description": "Too many requests; retry after the Retry-After seconds",
                      "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                      "content": {"application/json": {"schema": _ERROR}}}
    return out


def _recommendation_params(settings: Settings) -> list[dict[str, Any]]:
    """The query of ``GET /v1/recommendations``: the request model's fields, what a client key may ask (``n`` up to
    ``api.client_max_n``; ``explain`` only with an admin key), and ``explain``, which the handler reads itself."""
    cap = settings.api.client_max_n
    params = _query(CampaignRequestParams, frozenset({"campaign"}))
    for p in params:
        if p["name"] == "n":
            p["description"] = (f"List length (default: the campaign's n, else 20); at most {cap} with a client key "
                                f"(api.client_max_n; above it a 422 naming n), up to 500 with an admin key")
    explain = {"name": "explain", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
               "description": "Per-item explanations (a debugging aid): admin keys only, a 403 naming explain "
                              "with a client key"}
    return [*params, explain]


def build_openapi(settings: Settings | None = None) -> dict[str, Any]:
    """The schema as a dict (paths, parameters, bodies, errors, security); event types and limits from ``settings``."""
    settings = settings or Settings()
    campaign = CampaignIn.model_json_schema(ref_template=_REF)
    defs = campaign.pop("$defs", {})
    campaign["allOf"] = CampaignIn.floor_bounds()  # optimizer.floor <= 1 / len(arms)
    campaign["properties"]["goal"] = {"enum": sorted(t.name for t in settings.event_types), "default": "click",
                                      "description": "Goal event type (a configured one)"}
    event = event_schema(settings)
    put_campaign = {**campaign, "properties": {k: v for k, v in campaign["properties"].items() if k != "campaign_id"}}
    obj = {"type": "object"}
    cid = [{"name": "campaign_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}]
    body = {"required": True, "content": {"application/json": {"schema": put_campaign}}}  # the id is the path's
    admin = [{"ApiKey": []}]
    client = [{"ApiKey": []}]
    paths: dict[str, Any] = {
        "/v1/recommendations": {"get": {
            "summary": "Recommendations: a campaign's list, or the user's published top-N without a campaign",
            "parameters": _recommendation_params(settings),
            "responses": _responses(200, obj, 400, 401, 403, 404, 422), "security": client}},
        "/v1/events": {"post": {
            "summary": "Send one event or a list of events",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [event, {"type": "array", "minItems": 1, "maxItems": settings.api.max_events_per_request,
                                  "items": event}]}}}},
            "responses": _responses(202, obj, 400, 401, 403, 413, 415, 422, 503), "security": client}},
        "/v1/items/{item_id}": {"get": {
            "summary": "One catalog item",
            "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": ID_SCHEMA}],
            "responses": _responses(200, obj, 401, 403, 404, 422), "security": admin}},
        "/v1/campaigns": {
            "get": {"summary": "All campaigns", "responses": _responses(200, obj, 401, 403), "security": admin},
            "post": {"summary": "Create a campaign", "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"allOf": [{"$ref": _REF.format(model="CampaignIn")}, {
                    "required": ["campaign_id"],
                    "properties": {"campaign_id": {"type": "string", "pattern": ID_PATTERN}}}]}}}},
                     "responses": _responses(201, obj, 400, 401, 403, 409, 413, 415, 422), "security": admin}},
        "/v1/campaigns/{campaign_id}": {
            "get": {"summary": "One campaign", "parameters": cid,
                    "responses": _responses(200, obj, 401, 403, 404, 422), "security": admin},
            "put": {"summary": "Create or replace a campaign", "parameters": cid, "requestBody": body,
                    "responses": {**_responses(200, obj, 400, 401, 403, 413, 415, 422),
                                  "201": {"description": "Created"}}, "security": admin},
            "delete": {"summary": "Delete a campaign", "parameters": cid,
                       "responses": {**_responses(204, None, 401, 403, 404, 422)}, "security": admin}},
        "/v1/campaigns/{campaign_id}/arms": {"get": {
            "summary": "The optimizer's arms: pulls, rewards, posterior, P(best)",
            "parameters": cid + _query(ArmsParams), "responses": _responses(200, obj, 401, 403, 404, 422),
            "security": admin}},
        "/healthz": {"get": {"summary": "Liveness (200 while the process works, broker outages included)",
                             "responses": {"200": {"description": "alive"},
                                           "503": {"description": "a background thread died"}}}},
        "/readyz": {"get": {"summary": "Readiness: broker answers, readers caught up",
                            "responses": {"200": {"description": "ready"},
                                          "503": {"description": "not ready; the body lists the reasons"}}}},
        "/v1/catalog": {"get": {
            "summary": "The catalog as indexed: items, servable items, attribute types, items the schema rule rejected",
            "responses": _responses(200, obj, 401, 403), "security": admin}},
        "/v1/analytics/campaigns/{campaign_id}": {"get": {
            "summary": "A campaign's analytics: series and totals per arm, groups, uplift, top items (JSON or CSV)",
            "parameters": [{"name": "campaign_id", "in": "path", "required": True, "schema": {"type": "string"}},
                           *_query(CampaignParams)],
            "responses": {**_responses(200, obj, 401, 403, 404, 422),
                          "200": {"description": "OK", "content": {"application/json": {"schema": obj},
                                                                   "text/csv": {"schema": {"type": "string"}}}}},
            "security": admin}},
        "/v1/analytics/overview": {"get": {
            "summary": "One row per campaign with analytics: arms, time span, totals",
            "responses": _responses(200, obj, 401, 403), "security": admin}},
        "/v1/analytics/ops": {"get": {
            "summary": "Operations: events per second, lag per partition of both flows, dead letters by reason, model version",
            "description": "When the broker does not confirm the events log's ends within analytics.ops_timeout_s (one "
                           "deadline for the whole call), the last good answer with stale: true, its age_s and a "
                           "stale_reason while that answer is at most analytics.ops_stale_max_s old; 503 before any "
                           "good answer or once the last one is older",
            "responses": {**_responses(200, obj, 401, 403),
                          "503": {"description": "The broker did not confirm the events log's ends in time; retry after "
                                                 "the Retry-After seconds",
                                  "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                                  "content": {"application/json": {"schema": _ERROR}}}},
            "security": admin}},
        "/dashboard": {"get": {
            "summary": "The analytics dashboard (HTML; its data calls need the admin key)",
            "responses": {"200": {"description": "OK", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics: API counters, the flow's applied / dead-lettered / duplicate counts, "
                       "consumer lag per partition, scoring time, optimizer feedback lag, model version",
            "responses": {**_responses(200, None, 401, 403),
                          "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            "security": admin}},
        "/openapi.json": {"get": {"summary": "This schema (OpenAPI 3.1)", "responses": _responses(200, obj)}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "fusionrec", "version": "0.1.0",
                 "description": "Real-time multi-modal recommendations: campaigns, IQL filters, Thompson sampling."},
        "paths": paths,
        "components": {
            "schemas": {"CampaignIn": campaign, **defs, "Error": {
                "type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["field", "reason"],
                    "properties": {"field": {"type": "string"}, "reason": {"type": "string"}}}}}},
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }


async def openapi(request: Request) -> Response:
    schema = getattr(request.app.state, "openapi_schema", None)
    if schema is None:
        schema = request.app.state.openapi_schema = build_openapi(request.app.state.services.settings)
    return json_response(schema)
