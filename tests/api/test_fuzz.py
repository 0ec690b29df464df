"""Fuzz the running API from its own OpenAPI schema (schemathesis): no input gives a 5xx.

The app runs over HTTP against a real broker with keys required (the fuzzer sends the admin
key, which holds both scopes); a campaign and a small catalog exist so generated requests reach
the campaign path, the IQL filter and the optimizer, not only validation.
"""

from __future__ import annotations

import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.openapi import build_openapi
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import ApiServer, make_settings

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(build_openapi())
KEY = {"X-API-Key": "fuzz-admin"}


@pytest.fixture(scope="module")
def api_url(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    s = make_settings(broker, tmp, partitions=1)
    s = s.model_copy(update={"api": s.api.model_copy(update={"require_keys": True, "admin_keys": ["fuzz-admin"]})})
    with EventProducer.from_settings(s.kafka) as producer:
        producer.send_catalog(SyntheticShop(n_items=50, n_users=5, seed=2).catalog())
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, headers=KEY, timeout=10)
        deadline = time.monotonic() + 20
        while c.get("/healthz").json()["catalog_items"] < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        for cid, body in {"home": {"scenario": "personalized", "filter": "price < $max_price"},
                          "pdp": {"scenario": "similar", "arms": [{"name": "a", "strategy": "similar"},
                                                                  {"name": "b", "strategy": "visual"}]}}.items():
            assert c.put(f"/v1/campaigns/{cid}", json=body).status_code == 201
        yield api.url


def test_openapi_is_served(api_url):
    body = httpx.get(f"{api_url}/openapi.json").json()
    assert body["openapi"].startswith("3.") and "/v1/campaigns/{campaign_id}/arms" in body["paths"]


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(api_url, case):
    response = case.call(base_url=api_url, headers=KEY, timeout=10)
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"


@pytest.mark.slow
def test_extended_conformance_run_has_no_failure():
    """``bench/fuzz_api.py``: schemathesis, every check (none excluded, bench/schemathesis.toml), 1,000
    examples per operation over HTTP against a real broker: no 5xx, no conformance failure."""
    import importlib.util

    from tests.harness import ROOT

    spec = importlib.util.spec_from_file_location("fuzz_api", ROOT / "bench" / "fuzz_api.py")
    fuzz = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(fuzz)  # type: ignore[union-attr]
    assert fuzz.run(max_examples=1000) == 0
