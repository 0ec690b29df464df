"""``/openapi.json`` lists every endpoint the app routes (issue 15), with the methods it serves."""

from __future__ import annotations

from starlette.routing import Route

from api.app import create_app
from api.openapi import build_openapi
from operators.settings import Settings


def test_every_route_is_in_the_schema():
    app = create_app(Settings())
    spec = build_openapi()["paths"]
    routed = {}
    for r in app.routes:
        if isinstance(r, Route):
            path = r.path.replace(":path}", "}")
            routed.setdefault(path, set()).update(m.lower() for m in (r.methods or ()) if m != "HEAD")
    assert set(routed) == set(spec), (set(routed) ^ set(spec))
    for path, methods in routed.items():
        assert methods == set(spec[path]), (path, methods, set(spec[path]))
    for want in ("/v1/analytics/campaigns/{campaign_id}", "/v1/analytics/overview", "/v1/analytics/ops", "/dashboard",
                 "/v1/items/{item_id}", "/v1/catalog", "/metrics"):
        assert want in spec
