"""POST /v1/events over HTTP: valid events reach Kafka keyed by user; bad ones get a 4xx naming the field."""

from __future__ import annotations

import gzip
import re
import time

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.harness import ApiServer, make_settings

pytestmark = pytest.mark.integration


def _consume(broker: str, topic: str, partitions: int, n: int) -> list:
    c = Consumer({"bootstrap.servers": broker, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list = []
    for _ in range(50):
        out += [m for m in c.consume(100, 0.1) if not m.error()]
        if len(out) >= n:
            break
    c.close()
    return out


def test_post_events(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=2)
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        r = c.post("/v1/events", content=orjson.dumps({"type": "view", "user_id": 42, "item_id": "i1"}))
        assert r.status_code == 202 and r.json()["accepted"] == 1
        batch = [{"type": "add_to_cart", "user_id": "u2", "item_id": "i2", "event_id": "e2", "ts": int(time.time()) - 3600}]
        assert c.post("/v1/events", json=batch).status_code == 202
        before = time.time()
        ahead = {"type": "purchase", "user_id": "u3", "item_id": "i3", "event_id": "e3", "ts": before + 60}
        assert c.post("/v1/events", json=ahead).status_code == 202  # a client clock 60 s fast
        after = time.time()

        bad = c.post("/v1/events", json=[batch[0], {**batch[0], "ts": 1764400000000}])
        assert bad.status_code == 422
        assert bad.json()["error"]["field"] == "events[1].ts"
        assert "milliseconds" in bad.json()["error"]["reason"]
        r = c.post("/v1/events", json={"type": "view", "item_id": "i1"})
        assert (r.status_code, r.json()["error"]["field"]) == (422, "user_id")
        r = c.post("/v1/events", content=b"{oops")
        assert (r.status_code, r.json()["error"]["field"]) == (400, "body")
        r = c.get("/v1/recommendations", params={"n": 0})
        assert (r.status_code, r.json()["error"]["field"]) == (422, "n")
        assert c.get("/v1/items/nope").status_code == 404
        text = c.get("/metrics").text
        assert "fusionrec_api_events_accepted_total 3.0" in text
        lag_count = re.search(r"^fusionrec_api_event_loop_lag_seconds_count (\S+)$", text, re.M)
        assert lag_count is not None and float(lag_count.group(1)) > 0, "the loop-lag probe runs in the app"
        assert "fusionrec_api_gc_pause_seconds" in text and "process_resident_memory_bytes" in text

    msgs = _consume(broker, s.kafka.events_topic, 2, 3)
    got = sorted((m.key(), orjson.loads(m.value())["type"]) for m in msgs)
    assert got == [(b"42", "view"), (b"u2", "add_to_cart"), (b"u3", "purchase")]
    stamped = {orjson.loads(m.value())["event_id"]: orjson.loads(m.value())["ts"] for m in msgs}
    assert stamped["e2"] == batch[0]["ts"]  # a past ts is kept
    assert before <= stamped["e3"] <= after  # a ts ahead of the API's clock is when the API received it


def test_a_body_that_is_not_events_says_what_was_expected_and_the_json_type_sent(broker, tmp_path):
    """``null``, ``42`` or ``[[...]]`` were a 422 whose ``value`` was a Python type name (``NoneType``, ``int``,
    ``list``); the error now says what an events body is and which JSON type was sent."""
    s = make_settings(broker, tmp_path, partitions=1)
    event = {"type": "view", "user_id": "u1", "item_id": "i1"}
    expected_body = "must be one event (a JSON object) or a batch of events (a JSON array of objects)"
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        for body, sent in ((b"null", "null"), (b"42", "number"), (b"-1.5", "number"), (b'"view"', "string"),
                           (b"true", "boolean")):
            r = c.post("/v1/events", content=body)
            assert r.status_code == 422, body
            assert r.json()["error"] == {"field": "body", "reason": f"{expected_body}; got {sent}",
                                         **({"value": orjson.loads(body)} if sent in ("number", "string") else {})}
        for batch, i, sent in (([[event]], 0, "array"), ([event, None], 1, "null"), ([event, event, 7], 2, "number"),
                               ([event, "i1"], 1, "string"), ([False], 0, "boolean")):
            r = c.post("/v1/events", json=batch)
            assert r.status_code == 422, batch
            assert r.json()["error"] == {"field": f"events[{i}]", "reason": f"an event must be a JSON object; got {sent}",
                                         **({"value": batch[i]} if sent in ("number", "string") else {})}
        assert c.post("/v1/events", json=[event]).status_code == 202  # nothing of the refused batches was accepted
        text = c.get("/metrics").text
        assert "fusionrec_api_events_accepted_total 1.0" in text
        assert 'fusionrec_api_events_rejected_total{reason="invalid_field"} 10.0' in text


def _raw_post(url: str, path: str, head: str, body: bytes) -> tuple[int, bytes]:
    """Send one request as raw bytes (headers httpx would rewrite); the status and the response's bytes."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}\r\n".encode()
                     + body)
        data = b""
        while True:
            head_end = data.find(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", data[:head_end]) if head_end >= 0 else None
            if length is not None and len(data) >= head_end + 4 + int(length.group(1)):
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_a_transfer_coding_other_than_chunked_is_a_415_naming_it(broker, tmp_path):
    """uvicorn's parsers undo only ``chunked``: ``Transfer-Encoding: gzip, chunked`` with a plain JSON body was
    accepted (202) as if it were plain, and a gzip one refused as malformed JSON. Any transfer-coding but chunked
    is now refused before the body is read (415 naming it); plain chunked is still read."""
    s = make_settings(broker, tmp_path, partitions=1)
    body = orjson.dumps({"type": "view", "user_id": "u1", "item_id": "i1"})
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        for coding, named in (("gzip, chunked", "gzip"), ("Deflate, chunked", "deflate"),
                              ("x-made-up, chunked", "x-made-up")):
            status, raw = _raw_post(api.url, "/v1/events", f"Transfer-Encoding: {coding}\r\n", chunked)
            assert status == 415, (coding, raw)
            assert orjson.loads(raw.split(b"\r\n\r\n", 1)[1])["error"] == {
                "field": "transfer-encoding",
                "reason": f"the API does not decode transfer-coding {named!r}: send the body as it is, with "
                          "Content-Length or Transfer-Encoding: chunked"}
        status, raw = _raw_post(api.url, "/v1/events", "Transfer-Encoding: chunked\r\n", chunked)
        assert status == 202, raw
        status, raw = _raw_post(api.url, "/v1/campaigns", "Transfer-Encoding: gzip, chunked\r\n",
                                b"2\r\n{}\r\n0\r\n\r\n")
        assert status == 415 and b'"transfer-encoding"' in raw, raw
        text = c.get("/metrics").text
        assert 'fusionrec_api_events_rejected_total{reason="unsupported_encoding"} 3.0' in text
        assert "fusionrec_api_events_accepted_total 1.0" in text


def test_a_content_encoding_the_api_does_not_decode_is_a_415_naming_it(broker, tmp_path):
    """A gzip body was read as JSON and answered 400 "malformed JSON: str is not valid UTF-8"; a body in any
    content-coding but identity is a 415 naming the coding, with ``Accept-Encoding: identity`` (RFC 7694)."""
    s = make_settings(broker, tmp_path, partitions=1)
    body = orjson.dumps({"type": "view", "user_id": "u1", "item_id": "i1"})
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        for coding, named in (("gzip", "gzip"), ("GZip", "gzip"), ("br", "br"), ("deflate", "deflate"),
                              ("zstd", "zstd"), ("identity, gzip", "gzip"), ("x-made-up", "x-made-up")):
            sent = gzip.compress(body) if named == "gzip" else body
            r = c.post("/v1/events", content=sent, headers={"Content-Encoding": coding,
                                                             "Content-Type": "application/json"})
            assert r.status_code == 415, (coding, r.status_code, r.text)
            assert r.headers["accept-encoding"] == "identity"
            assert r.json()["error"] == {
                "field": "content-encoding",
                "reason": f"the API does not decode content-coding {named!r}: send the JSON body uncompressed "
                          "(no Content-Encoding, or identity)"}
        r = c.post("/v1/events", content=body, headers={"Content-Encoding": "identity"})
        assert r.status_code == 202, r.text
        text = c.get("/metrics").text
        assert 'fusionrec_api_events_rejected_total{reason="unsupported_encoding"} 7.0' in text
        assert "fusionrec_api_events_accepted_total 1.0" in text
