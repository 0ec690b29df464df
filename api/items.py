"""``GET /v1/items/{item_id}``: one catalog item as the shop sent it (the id percent-encoded: ``/ + % & space`` work)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import ApiError
from api.json import json_response
from api.services import Services
from operators.catalog_rule import CatalogValueError, check_item
from operators.ids import BadId, canonical_id

__all__ = ["IdPathRoute", "get_item", "get_catalog"]


class IdPathRoute(Route):
    """A ``Route`` whose ``{name:path}`` parameter matches every character, line breaks included.

    Starlette's ``path`` convertor is ``.*``, which stops at a newline: ``/v1/items/a%0Ab`` matched no route
    (a 404 naming ``path``) and ``/v1/items/a%0A`` matched as the item ``a``. With ``re.DOTALL`` the whole
    decoded id reaches the handler, which refuses a control character as for any other bad id (422 naming
    ``item_id``).
    """

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]], **kwargs: object) -> None:
        super().__init__(path, endpoint, **kwargs)  # type: ignore[arg-type]
        self.path_regex = re.compile(self.path_regex.pattern, re.DOTALL)


async def get_item(request: Request) -> Response:
    svc: Services = request.app.state.services
    raw = request.path_params["item_id"]  # percent-decoded by the server; '/' allowed (a path parameter)
    try:
        item_id = canonical_id(raw)
    except BadId as exc:
        raise ApiError(422, "item_id", exc.reason, value=raw[:80]) from exc
    svc.catalog_view.sync()
    rejected = svc.catalog_view.rejected.get(item_id)
    if rejected is not None:  # the catalog rule rejected its latest version: not served anywhere
        raise ApiError(404, "item_id", f"item {item_id!r} was rejected by the catalog schema rule: {rejected}")
    item = svc.catalog.get(item_id)
    try:  # the catalog rule's command, as the index takes it: "deleted": true is a tombstone, false no attribute
        item = check_item(item) if isinstance(item, dict) else item
    except CatalogValueError as exc:  # read from the table after the sync above rejected nothing yet
        raise ApiError(404, "item_id", f"item {item_id!r} was rejected by the catalog schema rule: {exc}") from exc
    if item is None:
        raise ApiError(404, "item_id", f"unknown item {item_id!r}")
    return json_response(item)


async def get_catalog(request: Request) -> Response:
    """``{"items", "servable", "attributes": {name: type}, "rejected": n, "rejected_items": [{"item_id", "reason"}]}``:
    the catalog as the API indexed it, and the items the schema rule rejected (the first 100)."""
    svc: Services = request.app.state.services
    view = svc.catalog_view
    view.sync()
    rejected = [{"item_id": i, "reason": r} for i, r in list(view.rejected.items())[:100]]
    return json_response({"items": view.n_items, "servable": len(view.index),
                          "attributes": {k: v.value for k, v in view.index.schema.items()},
                          "rejected": len(view.rejected), "rejected_items": rejected})
