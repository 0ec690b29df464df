"""Closed by default (issue 13): the key matrix of every endpoint, over HTTP, and the bind-address rule.

Under the default config no key is built in and keys are required, so every scoped endpoint
answers 401; with keys configured, the client key reaches recommendations and events only. A
non-loopback ``--host`` is refused unless keys are required, an admin key is set and no
development key is.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from starlette.routing import Route

from api.app import create_app
from api.auth import exposure_problem, scope_of
from operators.broker import free_port, wait_for_port
from operators.settings import Settings
from simulators.producer import EventProducer
from tests.harness import ROOT, ApiServer, make_settings, write_config

pytestmark = pytest.mark.integration

ADMIN, CLIENT = "admin-" + "a" * 24, "client-" + "c" * 24
OPEN = {"/healthz", "/readyz", "/openapi.json", "/dashboard"}  # probes and docs are open


def _endpoints() -> list[tuple[str, str]]:
    """(method, path) of every route the app declares, path parameters filled in."""
    out = []
    for r in create_app().routes:
        if isinstance(r, Route):
            path = r.path.replace("{campaign_id}", "home").replace("{item_id}", "i1")
            out += [(m, path) for m in sorted(r.methods or ()) if m != "HEAD"]
    return out


def _call(c: httpx.Client, method: str, path: str, key: str | None) -> int:
    headers = {"X-API-Key": key} if key else {}
    body = {"scenario": "popular"} if method in ("PUT", "POST") and "campaign" in path else (
        {"type": "view", "user_id": "u1", "item_id": "i1"} if method == "POST" else None)
    return c.request(method, path, json=body, headers=headers).status_code


def test_every_endpoint_has_a_scope_or_is_deliberately_open():
    eps = _endpoints()
    assert len(eps) >= 15
    for _, path in eps:
        assert scope_of(path) is not None or path in OPEN, path
    assert scope_of("/metrics") == "admin" and scope_of("/v1/analytics/ops") == "admin"


def test_default_config_is_closed(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": type(s.api)()})  # the defaults, untouched
    assert s.api.require_keys and not s.api.admin_keys and not s.api.client_keys
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        for method, path in _endpoints():
            for key in (None, "admin-dev-key", "client-dev-key"):
                status = _call(c, method, path, key)
                if path in OPEN:  # /healthz may say 503 (not ready yet), never 401
                    assert status in (200, 503), (method, path, status)
                else:
                    assert status == 401, (method, path, key, status)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_key_matrix_with_keys_configured(broker, tmp_path, host):
    """The same matrix whether the app is configured for loopback or for a public bind (``api.host``)."""
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": type(s.api)(host=host, admin_keys=[ADMIN], client_keys=[CLIENT],
                                                rate_limit=None)})
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        _assert_key_matrix(c)


def _assert_key_matrix(c: httpx.Client) -> None:
    """Every endpoint with no key, an unknown one, the client key and the admin key: who gets what."""
    for method, path in _endpoints():
        need = scope_of(path)
        got = {who: _call(c, method, path, key) for who, key in (("none", None), ("client", CLIENT),
                                                                    ("admin", ADMIN), ("other", "nope"))}
        if need is None:
            assert all(v in (200, 503) for v in got.values()), (method, path, got)
            continue
        assert got["none"] == 401 and got["other"] == 401, (method, path, got)
        assert got["admin"] not in (401, 403) and got["admin"] < 500, (method, path, got)
        if need == "admin":
            assert got["client"] == 403, (method, path, got)
        else:
            assert got["client"] not in (401, 403) and got["client"] < 500, (method, path, got)


def test_serve_on_a_public_address_with_real_keys(broker, tmp_path):
    """``fusionrec serve --host 0.0.0.0`` itself (keys from the environment): it starts, answers the same
    key matrix, and its protocol closes a half-sent request at ``api.header_timeout_s``."""
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": type(s.api)(rate_limit=None, header_timeout_s=1.0)})
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("FUSIONREC_")}
    full.update(FUSIONREC_CONFIG=str(write_config(s, tmp_path / "fusionrec.toml")), PYTHONPATH=str(ROOT),
                FUSIONREC_API__ADMIN_KEYS=f'["{ADMIN}"]', FUSIONREC_API__CLIENT_KEYS=f'["{CLIENT}"]')
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--host", "0.0.0.0", "--port", str(port)],
                            env=full, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 60)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            _assert_key_matrix(c)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /v1/recommendations?user_id=u1 HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408 ") and time.monotonic() - t0 < 6, reply[:100]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert "Traceback" not in out, out[-2000:]


@pytest.mark.parametrize(("env", "says"), [
    ({}, "admin key"),
    ({"FUSIONREC_API__REQUIRE_KEYS": "false"}, "require_keys"),
    ({"FUSIONREC_API__ADMIN_KEYS": '["admin-dev-key"]', "FUSIONREC_API__CLIENT_KEYS": '["client-dev-key"]'},
     "development keys"),
    ({"FUSIONREC_API__ADMIN_KEYS": '["short"]'}, "shorter than 16"),
])
def test_serve_refuses_a_public_bind_that_is_not_locked(tmp_path, env, says):
    full = {k: v for k, v in os.environ.items() if not k.startswith("FUSIONREC_")}
    (tmp_path / "none.toml").write_text("")  # a config without settings: the environment decides
    full.update(env, FUSIONREC_CONFIG=str(tmp_path / "none.toml"), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "flows.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                       env=full, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refusing to listen on '0.0.0.0'" in r.stderr and says in r.stderr, r.stderr


def test_public_bind_rules():
    assert exposure_problem("127.0.0.1", False, [], []) is None
    assert exposure_problem("localhost", True, ["admin-dev-key"], []) is None
    assert exposure_problem("::1", False, [], []) is None
    assert exposure_problem("0.0.0.0", True, [ADMIN], [CLIENT]) is None
    assert exposure_problem("10.0.0.5", True, [ADMIN], ["client-dev-key"]) is not None
    assert exposure_problem("::", True, [], [CLIENT]) is not None
    with pytest.raises(RuntimeError, match="refusing to listen"):
        create_app(Settings(api={"host": "0.0.0.0"}))


def test_undeclared_methods_are_405_with_allow(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": type(s.api)(admin_keys=[ADMIN], client_keys=[CLIENT])})
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10, headers={"X-API-Key": ADMIN}) as c:
        for method, path, allow in (("TRACE", "/v1/campaigns", "GET, HEAD, POST"), ("PATCH", "/v1/campaigns/home",
                                    "DELETE, GET, HEAD, PUT"), ("DELETE", "/v1/events", "POST")):
            r = c.request(method, path)
            assert r.status_code == 405 and r.headers["allow"] == allow, (method, path, r.headers)


def test_a_client_key_cannot_ask_for_costly_lists(broker, tmp_path):
    """``n=500&explain=true`` cost ~80 ms of CPU a request with the public client key, so a few requests a second,
    far under the rate limit, slowed every shopper 100-300x (trial 31, finding 3): ``explain`` needs an admin key
    (403 naming it) and a client key's ``n`` is at most ``api.client_max_n`` (422 naming it), on both paths."""
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": type(s.api)(admin_keys=[ADMIN], client_keys=[CLIENT], rate_limit=None,
                                                client_max_n=30)})
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog([{"item_id": f"i{k}"} for k in range(5)])
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        admin, client = {"X-API-Key": ADMIN}, {"X-API-Key": CLIENT}
        assert c.put("/v1/campaigns/home", json={"scenario": "popular", "n": 50}, headers=admin).status_code == 201
        for path in ({"user_id": "u1"}, {"user_id": "u1", "campaign": "home"}):
            for n, status in (("30", 200), ("31", 422), ("500", 422)):
                r = c.get("/v1/recommendations", params={**path, "n": n}, headers=client)
                assert r.status_code == status, (path, n, r.text)
                if status == 422:
                    assert r.json()["error"] == {"field": "n", "value": int(n), "reason": (
                        f"at most api.client_max_n=30 with a client key (an admin key: up to 500); got {n}")}, r.text
            for flag in ("true", "1", "TRUE"):
                r = c.get("/v1/recommendations", params={**path, "explain": flag}, headers=client)
                assert r.status_code == 403, (path, flag, r.text)
                assert r.json()["error"] == {"field": "explain", "reason": (
                    "needs an admin key (a debugging aid, costly per item); this key is a client key")}, r.text
            r = c.get("/v1/recommendations", params={**path, "explain": "false"}, headers=client)
            assert r.status_code == 200 and "explanations" not in r.json(), r.text
            r = c.get("/v1/recommendations", params={**path, "n": "500", "explain": "true"}, headers=admin)
            assert r.status_code == 200 and "explanations" in r.json(), r.text
        # the campaign's own n is the admin's choice: a client that does not ask gets it
        assert c.get("/v1/recommendations", params={"campaign": "home"}, headers=client).status_code == 200
        params = {p["name"]: p for p in c.get("/openapi.json").json()["paths"]["/v1/recommendations"]["get"]["parameters"]}
        assert "at most 30 with a client key" in params["n"]["description"]
        assert params["explain"]["schema"] == {"type": "boolean", "default": False}
        assert "admin keys only" in params["explain"]["description"]
