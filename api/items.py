"""``GET /v1/items/{item_id}``: one catalog item as the shop sent it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.errors import ApiError
from api.json import json_response
from api.services import Services

__all__ = ["get_item"]


async def get_item(request: Request) -> Response:
    svc: Services = request.app.state.services
    item_id = request.path_params["item_id"]
    item = svc.catalog.get(item_id)
    if item is None:
        raise ApiError(404, "item_id", f"unknown item {item_id!r}")
    return json_response(item)
