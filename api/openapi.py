"""``GET /openapi.json``: the OpenAPI 3.1 schema, built from the same pydantic models that validate requests."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from api.analytics import CampaignParams
from api.campaign_schema import ID_PATTERN, CampaignIn
from api.campaigns import ArmsParams
from api.json import json_response
from api.recommendations import CampaignRequestParams

__all__ = ["build_openapi", "openapi"]

_REF = "#/components/schemas/{model}"
_ERROR = {"$ref": "#/components/schemas/Error"}


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
             "schema": {k: v for k, v in _no_null(prop).items() if k not in ("title", "description")}}
            for name, prop in s["properties"].items()]


def _responses(ok: int, ok_schema: dict[str, Any] | None, *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {str(ok): {"description": "OK"} if ok_schema is None else
                           {"description": "OK", "content": {"application/json": {"schema": ok_schema}}}}
    for code in errors:
        out[str(code)] = {"description": "Error naming the field",
                          "content": {"application/json": {"schema": _ERROR}}}
    return out


def build_openapi() -> dict[str, Any]:
    """The schema as a dict (paths, parameters, bodies, errors, security)."""
    campaign = CampaignIn.model_json_schema(ref_template=_REF)
    defs = campaign.pop("$defs", {})
    obj = {"type": "object"}
    cid = [{"name": "campaign_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}]
    body = {"required": True, "content": {"application/json": {"schema": {"$ref": _REF.format(model="CampaignIn")}}}}
    admin = [{"ApiKey": []}]
    client = [{"ApiKey": []}]
    paths: dict[str, Any] = {
        "/v1/recommendations": {"get": {
            "summary": "Recommendations: a campaign's list, or the user's published top-N without a campaign",
            "parameters": _query(CampaignRequestParams, frozenset({"campaign"})),
            "responses": _responses(200, obj, 400, 401, 403, 404, 422), "security": client}},
        "/v1/events": {"post": {
            "summary": "Send one event or a list of events",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [obj, {"type": "array", "items": obj}]}}}},
            "responses": _responses(202, obj, 400, 401, 403, 413, 422), "security": client}},
        "/v1/items/{item_id}": {"get": {
            "summary": "One catalog item",
            "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": _responses(200, obj, 401, 403, 404), "security": admin}},
        "/v1/campaigns": {
            "get": {"summary": "All campaigns", "responses": _responses(200, obj, 401, 403), "security": admin},
            "post": {"summary": "Create a campaign", "requestBody": body,
                     "responses": _responses(201, obj, 400, 401, 403, 409, 413, 422), "security": admin}},
        "/v1/campaigns/{campaign_id}": {
            "get": {"summary": "One campaign", "parameters": cid,
                    "responses": _responses(200, obj, 401, 403, 404, 422), "security": admin},
            "put": {"summary": "Create or replace a campaign", "parameters": cid, "requestBody": body,
                    "responses": {**_responses(200, obj, 400, 401, 403, 413, 422),
                                  "201": {"description": "Created"}}, "security": admin},
            "delete": {"summary": "Delete a campaign", "parameters": cid,
                       "responses": {**_responses(204, None, 401, 403, 404, 422)}, "security": admin}},
        "/v1/campaigns/{campaign_id}/arms": {"get": {
            "summary": "The optimizer's arms: pulls, rewards, posterior, P(best)",
            "parameters": cid + _query(ArmsParams), "responses": _responses(200, obj, 401, 403, 404, 422),
            "security": admin}},
        "/healthz": {"get": {"summary": "Readiness", "responses": {"200": {"description": "ready"},
                                                                  "503": {"description": "starting"}}}},
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
            "responses": _responses(200, obj, 401, 403), "security": admin}},
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
        schema = request.app.state.openapi_schema = build_openapi()
    return json_response(schema)
