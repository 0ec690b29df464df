"""One client cannot freeze the API for everyone (issue 13): rate limits per key and client with 429 and
Retry-After, bodies refused while they stream in, half-sent bodies timed out, big batches refused."""

from __future__ import annotations

import logging
import re
import socket
import time

import httpx
import pytest

from operators.settings import Settings
from tests.harness import ApiServer, make_settings

pytestmark = pytest.mark.integration

KEY = "client-" + "c" * 24


@pytest.fixture()
def api(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": s.api.model_copy(update={
        "require_keys": True, "client_keys": [KEY], "admin_keys": ["admin-" + "a" * 24],
        "rate_limit": "5/second", "event_rate_limit": "10/minute", "body_timeout_s": 1.0,
        "body_total_s": 3.0})})
    with ApiServer(s) as server:
        yield server


def test_rate_limit_is_per_key_and_client_with_retry_after(api):
    with httpx.Client(base_url=api.url, timeout=10) as c:
        got = [c.get("/v1/recommendations", params={"user_id": "u1"}, headers={"X-API-Key": KEY}).status_code
               for _ in range(8)]
        assert got[:5] == [200] * 5 and set(got[5:]) == {429}, got
        r = c.get("/v1/recommendations", params={"user_id": "u1"}, headers={"X-API-Key": KEY})
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 1
        assert r.json()["error"]["field"] == "api_key"
        assert c.get("/healthz").status_code in (200, 503)  # never limited
        assert c.get("/readyz").status_code in (200, 503)  # nor the readiness probe
        # another key from the same client has its own budget (an unknown one is refused by the key check)
        assert c.get("/v1/recommendations", params={"user_id": "u1"}, headers={"X-API-Key": "other"}).status_code == 401
        time.sleep(1.1)
        assert c.get("/v1/recommendations", params={"user_id": "u1"}, headers={"X-API-Key": KEY}).status_code == 200


def test_headers_that_name_no_configured_key_do_not_make_new_callers(api):
    """The limiter counts the key the authentication reads: junk ``Authorization`` values next to the
    key, or the key padded with spaces in a Bearer header, are one caller, not 8 (trial 13, D1)."""
    variants = [{"X-API-Key": KEY, "Authorization": f"junk-{i}"} for i in range(4)]
    variants += [{"Authorization": "Bearer " + " " * i + KEY} for i in range(4)]
    with httpx.Client(base_url=api.url, timeout=10) as c:
        got = [c.get("/v1/recommendations", params={"user_id": "u1"}, headers=h).status_code for h in variants]
        assert got[:5] == [200] * 5 and set(got[5:]) == {429}, got
        time.sleep(1.1)
        # the address is the peer's: X-Forwarded-For from a client on loopback chooses nothing (trial 13b, D1)
        got = [c.get("/v1/recommendations", params={"user_id": "u1"},
                     headers={"X-API-Key": KEY, "X-Forwarded-For": f"10.0.{i}.1"}).status_code for i in range(8)]
        assert got[:5] == [200] * 5 and set(got[5:]) == {429}, got
        # no key or unknown keys share one budget per address: a stream of invented keys is refused early too
        got = [c.get("/v1/recommendations", params={"user_id": "u1"},
                     headers={"X-API-Key": f"invented-{i}"}).status_code for i in range(8)]
        assert got[:5] == [401] * 5 and set(got[5:]) == {429}, got


def test_events_are_limited_per_caller_by_count_not_by_request(api):
    """200 requests/s of 1,000 events were 200,000 events/s for one caller: the event limit counts events."""
    def batch(n: int, tag: str) -> list[dict]:
        return [{"type": "view", "user_id": "u1", "item_id": f"i{k}", "event_id": f"{tag}{k}"} for k in range(n)]

    with httpx.Client(base_url=api.url, timeout=10, headers={"X-API-Key": KEY}) as c:
        assert c.post("/v1/events", json=batch(11, "big")).status_code == 422  # never fits 10/minute
        assert c.post("/v1/events", json=batch(6, "a")).status_code == 202
        r = c.post("/v1/events", json=batch(6, "b"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
        assert r.json()["error"]["field"] == "api_key" and "event rate limit" in r.json()["error"]["reason"]
        assert c.post("/v1/events", json=batch(4, "c")).status_code == 202  # the refused 6 counted nothing


@pytest.fixture()
def item_limited(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": s.api.model_copy(update={
        "require_keys": True, "client_keys": [KEY], "admin_keys": ["admin-" + "a" * 24],
        "event_rate_limit": "100/minute", "event_item_rate_limit": "50/second;120/minute", "max_basket_items": 40})})
    with ApiServer(s) as server:
        yield server


def _basket(tag: str, n_lines: int, **extra: object) -> dict:
    return {"type": "purchase", "user_id": "u1", "event_id": tag, "items": [f"{tag}-i{k}" for k in range(n_lines)],
            **extra}


def _accepted(c: httpx.Client) -> float:
    text = c.get("/metrics", headers={"X-API-Key": "admin-" + "a" * 24}).text
    m = re.search(r"^fusionrec_api_events_accepted_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_events_are_charged_by_the_item_ids_they_name(item_limited):
    """60 view events of 2,500 invented item ids each (one 2 MB request) were 202: the event limit counted 60. Each
    event now also costs its distinct item ids (api.event_item_rate_limit), a basket has at most
    api.max_basket_items items, and a request over either is refused whole."""
    with httpx.Client(base_url=item_limited.url, timeout=10, headers={"X-API-Key": KEY}) as c:
        r = c.post("/v1/events", json=_basket("long", 41))  # over max_basket_items: refused before any charge
        assert r.status_code == 422
        assert r.json()["error"] == {"field": "items", "reason": "41 distinct items > api.max_basket_items=40"}
        r = c.post("/v1/events", json=[_basket("a", 1), _basket("b", 41)])
        assert (r.status_code, r.json()["error"]["field"]) == (422, "events[1].items")
        r = c.post("/v1/events", json=[_basket("c", 30), _basket("d", 30)])  # 60 ids never fit 50/second
        assert r.status_code == 422
        assert r.json()["error"] == {"field": "events", "reason": "60 item ids > the most api.event_item_rate_limit="
                                                                  "'50/second;120/minute' allows in one request; split it"}
        # repeats within an event count once (plain ids, line objects and item_id alike; a line per unit scanned is
        # one item, under max_basket_items too): 2 + 1 + 37 = 40 item ids
        same = {**_basket("e", 0), "item_id": "x", "items": ["x", {"item_id": "x", "quantity": 2}, "y", "y"]}
        scanned = {**_basket("e2", 0), "items": ["z"] * 100}
        assert c.post("/v1/events", json=[same, scanned, _basket("f", 37)]).status_code == 202
        assert _accepted(c) == 3
        r = c.post("/v1/events", json=[_basket("g", 5), _basket("h", 6)])  # 40 + 11 > 50 in the second
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 1, r.text
        err = r.json()["error"]
        assert err["field"] == "api_key" and "50 item ids per 1 second" in err["reason"], err
        assert _accepted(c) == 3  # nothing of the refused batch was accepted
        assert c.post("/v1/events", json=[_basket("i", 10)]).status_code == 202  # and it charged nothing: 50
        time.sleep(1.1)
        assert c.post("/v1/events", json=[_basket("j", 40), _basket("k", 10)]).status_code == 202  # 100 this minute
        time.sleep(1.1)
        assert c.post("/v1/events", json=_basket("l", 20)).status_code == 202  # 120: the minute is full
        r = c.post("/v1/events", json={"type": "view", "user_id": "u1", "item_id": "one-more"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 30, r.text
        assert "120 item ids per 1 minute" in r.json()["error"]["reason"]
        assert c.post("/v1/events", json={"type": "search", "user_id": "u1", "query": "x"}).status_code == 202
        assert _accepted(c) == 8  # an event naming no item costs no item id


def test_the_default_limits_refuse_the_trials_request(broker, tmp_path):
    """The trial's request under the default limits: 60 events of 2,500 invented ids is a 422 (baskets over
    api.max_basket_items), 150 events of 1,000 ids (150,000) is a 422 (over the 50,000 a second allows), 40
    events of 1,000 lines are accepted (the 429s: test_events_are_charged_by_the_item_ids_they_name)."""
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": s.api.model_copy(update={
        "event_rate_limit": Settings().api.event_rate_limit, "event_item_rate_limit": Settings().api.event_item_rate_limit})})
    assert (s.api.event_item_rate_limit, s.api.max_basket_items) == ("50000/second;300000/minute", 1000)

    def batch(tag: str, n_events: int, n_lines: int) -> list[dict]:
        return [{"type": "view", "user_id": f"u{e}", "items": [f"{tag}{e}-{k}" for k in range(n_lines)]}
                for e in range(n_events)]

    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=30) as c:
        r = c.post("/v1/events", json=batch("t", 60, 2500))
        assert (r.status_code, r.json()["error"]["field"]) == (422, "events[0].items"), r.text
        r = c.post("/v1/events", json=batch("u", 150, 1000))
        assert r.status_code == 422 and "150000 item ids" in r.json()["error"]["reason"], r.text
        assert _accepted(c) == 0
        assert c.post("/v1/events", json=batch("v", 40, 1000)).status_code == 202  # a big real batch still passes
        assert _accepted(c) == 40


def test_a_dripping_body_is_timed_out_as_a_whole(api):
    """One byte every 0.5 s never trips the 1 s gap, but the whole body must come within 3 s (trial 13, D11)."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: 52\r\n\r\n")
        sock.settimeout(0.5)
        t0, reply = time.monotonic(), b""
        while not reply and time.monotonic() - t0 < 10:
            try:
                sock.sendall(b" ")
                reply = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:  # closed after the answer
                break
        assert reply.startswith(b"HTTP/1.1 408") and b"body_total_s" in reply, reply[:300]
        assert 2.5 < time.monotonic() - t0 < 6


def test_half_sent_body_is_timed_out_and_a_huge_one_refused_early(api):
    host, port = "127.0.0.1", api.port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{\"type\"")
        t0 = time.monotonic()
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert time.monotonic() - t0 < 5
    with socket.create_connection((host, port), timeout=10) as sock:  # 100 MB announced: refused before it is sent
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n[")
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        # and the connection is closed at once: not held open to read and discard the 100 MB announced
        assert b"\r\nconnection: close\r\n" in reply.lower(), reply[:300]
        sock.settimeout(3.0)
        t0 = time.monotonic()
        try:
            assert sock.recv(4096) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 1.0


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_body_the_client_aborts_is_one_short_line_not_a_traceback(api):
    """A client that sends part of its body and closes the connection wrote two tracebacks per request to api.log
    ('unhandled error' and uvicorn's 'Exception in ASGI application', ~6 KB; trial 31, finding 4): it is a client
    error, one INFO line, no traceback, nothing at ERROR."""
    got = _Records()
    loggers = [logging.getLogger(name) for name in ("", "uvicorn.error")]  # api.json_body propagates to the root
    level = logging.getLogger("api.json_body").level
    for lg in loggers:
        lg.addHandler(got)
    logging.getLogger("api.json_body").setLevel(logging.INFO)
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
                sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() +
                             b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{\"type\"")
        deadline = time.monotonic() + 10
        while sum("closed the connection" in r.getMessage() for r in got.records) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything logged after the line
    finally:
        for lg in loggers:
            lg.removeHandler(got)
        logging.getLogger("api.json_body").setLevel(level)
    lines = [r for r in got.records if r.name == "api.json_body"]
    assert len(lines) == 3, [r.getMessage() for r in got.records]
    assert lines[0].levelno == logging.INFO and lines[0].exc_info is None
    assert lines[0].getMessage() == "POST /v1/events: the client closed the connection after 8 of 1000 body bytes"
    assert not [r for r in got.records if r.levelno >= logging.WARNING or r.exc_info], \
        [r.getMessage() for r in got.records]
    with httpx.Client(base_url=api.url, timeout=10, headers={"X-API-Key": "admin-" + "a" * 24}) as c:
        metrics = c.get("/metrics").text
    assert 'fusionrec_api_requests_total{endpoint="/v1/events",status="400"} 3.0' in metrics  # a client error
    assert 'status="500"' not in metrics
    assert 'fusionrec_api_events_rejected_total{reason="client_disconnected"} 3.0' in metrics


def _answer_then_closed(sock: socket.socket) -> bytes:
    """The answer on ``sock`` once the connection is closed (within 2 s), failing if it stays open."""
    sock.settimeout(2.0)
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the connection stayed open after {reply[:300]!r}") from None
    return reply


@pytest.mark.parametrize("refused", ["unknown key", "content-encoding"])
def test_an_early_answer_to_a_body_not_yet_read_closes_the_connection(api, refused):
    """A 401 (key check) or 415 (content-coding) answered before the body was read left the connection open:
    uvicorn read on, and the rest of the body counted as the next request's head, so a 200 kB upload got its
    401 and then a spurious 431 "request line and headers too large" (trial 36). Any answer given before the body
    was read to its end now says Connection: close and the connection is closed; a new one is served."""
    head = {"unknown key": b"X-API-Key: nope\r\n",
            "content-encoding": b"X-API-Key: " + KEY.encode() + b"\r\nContent-Encoding: gzip\r\n"}[refused]
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n" + head +
                     b"Content-Type: application/json\r\nContent-Length: 200000\r\n\r\n" + b" " * 1000)
        time.sleep(0.3)  # the answer is sent; the client goes on sending its body
        try:
            for _ in range(20):
                sock.sendall(b" " * 10000)
        except OSError:  # closed while sending: fine
            pass
        reply = _answer_then_closed(sock)
    status = {"unknown key": b"401", "content-encoding": b"415"}[refused]
    assert reply.startswith(b"HTTP/1.1 " + status), reply[:300]
    assert b"\r\nconnection: close\r\n" in reply.partition(b"\r\n\r\n")[0].lower() + b"\r\n", reply[:400]
    assert reply.count(b"HTTP/1.1 ") == 1, reply[:600]  # no 431 for the body read as a head
    with httpx.Client(base_url=api.url, timeout=10) as c:  # a new connection is served
        assert c.get("/v1/recommendations", params={"user_id": "u1"}, headers={"X-API-Key": KEY}).status_code == 200


def test_a_body_read_to_its_end_keeps_the_connection_for_pipelined_requests(api):
    """An answer after the whole body was read (a 400 for malformed JSON) keeps the connection: the request
    pipelined behind it is answered, once, on the same connection."""
    bad = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\nContent-Length: 5\r\n\r\n{abc}"
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(bad + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = _answer_then_closed(sock)
    first, _, rest = reply.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 400") and b"connection: close" not in first.lower(), reply[:400]
    assert rest.count(b"HTTP/1.1 ") == 1 and b"HTTP/1.1 200" in rest, reply[:800]
