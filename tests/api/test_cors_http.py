"""CORS (``api.cors_origins``): a shop's pages on another origin can call the client endpoints with the key
in a header; origins not configured get no CORS headers, and none are sent by default. Real broker, HTTP."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from operators.settings import Settings
from tests.harness import ApiServer, make_settings

pytestmark = pytest.mark.integration

SHOP = "https://shop.example"


def test_preflight_and_requests_from_a_configured_origin(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": s.api.model_copy(update={"require_keys": True, "client_keys": ["ck-cors-test-1"],
                                                             "admin_keys": ["ak-cors-test-1"], "cors_origins": [SHOP]})})
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        pre = c.options("/v1/events", headers={"Origin": SHOP, "Access-Control-Request-Method": "POST",
                                                "Access-Control-Request-Headers": "x-api-key,content-type"})
        assert pre.status_code == 200, pre.text  # answered before the key check: a preflight carries no key
        assert pre.headers["access-control-allow-origin"] == SHOP
        assert "x-api-key" in pre.headers["access-control-allow-headers"].lower()
        r = c.get("/v1/recommendations", params={"user_id": "u1"}, headers={"Origin": SHOP, "X-API-Key": "ck-cors-test-1"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == SHOP
        other = c.options("/v1/events", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        r = c.get("/v1/recommendations", params={"user_id": "u1"},
                  headers={"Origin": "https://evil.example", "X-API-Key": "ck-cors-test-1"})
        assert "access-control-allow-origin" not in r.headers
        assert c.get("/v1/recommendations", headers={"Origin": SHOP}).status_code == 401  # the key is still required


def test_no_cors_headers_by_default(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    with ApiServer(s) as api:
        r = httpx.get(f"{api.url}/healthz", headers={"Origin": SHOP}, timeout=10)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("origin", ["shop.example", "https://shop.example/path", "ftp://shop.example", ""])
def test_an_origin_that_is_not_one_is_refused(origin):
    with pytest.raises(ValidationError, match=r"api\.cors_origins"):
        Settings(api={"cors_origins": [origin]})
