"""A broker outage of more than 60 s, and a broker that comes back empty, during a live run.

The real Tansu broker is stopped and started again on the same port by the test (in-memory
storage: it comes back without topics or events, as the embedded broker of ``fusionrec run``
does). The flow and the API keep running, nobody restarts them:

* while the broker is gone, ``POST /v1/events`` answers 503 with ``Retry-After`` (nothing is
  accepted that is not durable), ``/healthz`` (liveness) stays 200 and ``/readyz`` says 503;
* when it is back, the API is ready again within 10 s; the flow finds its stored offsets beyond
  the new log's end, logs an error, counts it (``meta:offset_resets``, ``/metrics``) and resumes
  at the new log's start (``stream.offset_beyond_end = "earliest"``), so every event accepted
  with 202, before and after the outage, is applied exactly once and reaches the user's list;
* the archiving flow, running all along too, does the same with its lake manifests: the lake holds
  every accepted event exactly once.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from operators.broker import LocalBroker
from operators.kafka import ensure_topics, high_watermarks, platform_topics
from operators.lake.read import lake_dataset
from operators.lake.store import lake_manifests
from operators.schema import Event
from operators.training import train_model
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from state import keys
from state.partition import PartitionDB, partition_path
from tests.harness import ApiServer, FlowProcess, dump_state, make_settings, wait_caught_up

pytestmark = pytest.mark.integration

OUTAGE_S = float(os.environ.get("FUSIONREC_TEST_OUTAGE_S", "62"))


@pytest.fixture
def own_broker() -> Iterator[LocalBroker]:
    """A broker of this test alone (it is stopped and restarted mid-test)."""
    b = LocalBroker().start()
    try:
        yield b
    finally:
        b.stop()


def _wait(pred: Callable[[], bool], timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what} not within {timeout_s} s")
        time.sleep(0.1)
    return time.monotonic() - t0


def _post_all(c: httpx.Client, events: list[dict], batch: int = 25) -> int:
    """POST in batches; a 503 is retried with the same event ids (as a client should). Returns the 202-accepted count."""
    accepted = 0
    for i in range(0, len(events), batch):
        body = events[i:i + batch]
        for _attempt in range(20):
            r = c.post("/v1/events", json=body)
            if r.status_code == 202:
                accepted += r.json()["accepted"]
                break
            assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, r.text
            time.sleep(0.5)
        else:
            raise AssertionError("events never accepted")
    return accepted


def _events(shop: SyntheticShop, users: list[str], n: int) -> list[dict]:
    items = [it["item_id"] for it in shop.catalog()][:150]
    return [{"event_id": uuid.uuid4().hex, "type": "view", "user_id": users[j % len(users)],
             "item_id": items[(7 * j) % len(items)]} for j in range(n)]


def test_flow_and_api_ride_out_a_broker_outage_and_an_empty_broker(own_broker, tmp_path):
    s = make_settings(own_broker.bootstrap, tmp_path, partitions=2, rescore_interval_s=0.05)
    s = s.model_copy(update={"api": s.api.model_copy(update={"event_ack_timeout_s": 2.0, "retry_after_s": 3}),
                             "lake": s.lake.model_copy(update={"lake_dir": tmp_path / "lake", "flush_interval_s": 0.3})})
    shop = SyntheticShop(n_items=200, n_users=80, seed=7)
    train_model(shop.history(3000), s, "covisit")
    flow = FlowProcess(s, tmp_path / "flow.toml").start()
    flow_pid = flow.procs[0].pid
    archive = FlowProcess(s, tmp_path / "archive.toml", flow="flows.archive.dataflow:flow").start()
    archive_pid = archive.procs[0].pid

    def archived() -> bool:
        end = high_watermarks(s.kafka.brokers, s.kafka.events_topic)
        done = {m.partition: m.next_offset for m in lake_manifests(s.lake.lake_dir, "events")}
        assert archive.alive(), archive.log_text()[-3000:]
        return all(done.get(p, 0) == e for p, e in end.items())

    users = [f"outage-u{j}" for j in range(40)]
    try:
        with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=30) as c:
            _wait(lambda: c.get("/readyz").status_code == 200, 30, "ready")
            before = _events(shop, users, 400)
            accepted = _post_all(c, before)
            wait_caught_up(s, flow, timeout_s=60)
            _wait(archived, 60, "the archiver caught up before the outage")

            own_broker.stop()
            down_at = time.monotonic()
            t0 = time.monotonic()
            r = c.post("/v1/events", json=_events(shop, users, 3))
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "3" and r.json()["error"]["field"] == "broker"
            assert len(r.json()["error"]["event_ids"]) == 3
            assert time.monotonic() - t0 < 4.0  # within the ack timeout, not hanging
            _wait(lambda: c.get("/readyz").status_code == 503, 5, "not ready during the outage")
            assert "broker" in " ".join(c.get("/readyz").json()["reasons"])
            while time.monotonic() - down_at < OUTAGE_S:
                h = c.get("/healthz")
                assert h.status_code == 200 and h.json()["status"] == "ok"  # alive: a restart would not help
                r = c.post("/v1/events", json=_events(shop, users, 1))
                assert r.status_code == 503 and "Retry-After" in r.headers
                assert flow.alive(), flow.log_text()[-3000:]
                assert archive.alive(), archive.log_text()[-3000:]
                time.sleep(2.0)

            own_broker.start()  # same port, in-memory: no topics, no events
            back_at, back_wall = time.monotonic(), time.time()
            ensure_topics(s.kafka.brokers, platform_topics(s))  # what `fusionrec run` does for its broker
            # a shop's own producer writes at once, before the flow looked: the new log grows past
            # the flow's stored offsets, which the flow must still notice (the record before its
            # position is not the one it read) instead of resuming there and skipping the rest
            burst = [Event(event_id=uuid.uuid4().hex, ts=time.time(), type="view", user_id=users[j % len(users)],
                           item_id=e["item_id"]) for j, e in enumerate(_events(shop, users, 600))]
            with EventProducer.from_settings(s.kafka) as p:
                p.send_events(burst, progress=False)
            accepted += len(burst)
            ready_s = _wait(lambda: c.get("/readyz").status_code == 200, 10, "ready after the broker returned")
            after = _events(shop, users, 400)
            accepted += _post_all(c, after)
            assert accepted == len(before) + len(burst) + len(after)
            wait_caught_up(s, flow, timeout_s=60)
            serving_s = time.monotonic() - back_at
            _wait(archived, 60, "the archiver caught up with the new log")

            # the API reads the flow's new lists (its user-topn reader re-read the new log)
            last = after[-1]
            def fresh() -> bool:
                body = c.get("/v1/recommendations", params={"user_id": last["user_id"], "n": 5}).json()
                return body.get("source", "").startswith("model") and (body.get("last_event_ts") or 0) >= back_wall
            _wait(fresh, 20, "a list built from the events after the outage")
            metrics = c.get("/metrics").text
        assert flow.alive() and flow.procs[0].pid == flow_pid  # never restarted
        assert archive.alive() and archive.procs[0].pid == archive_pid
    finally:
        flow.stop()
        archive.stop()

    lake_ids = lake_dataset(s.lake.lake_dir, "events").to_table(columns=["event_id"]).column("event_id").to_pylist()
    assert sorted(lake_ids) == sorted([e["event_id"] for e in before + after] + [e.event_id for e in burst])
    assert "beyond the log end" in archive.log_text()

    state = dump_state(s)
    applied = sum(sum(st.counts.values()) for p in state.values() for st in p["users"].values())
    assert applied == accepted  # zero accepted events lost, none applied twice
    for p in range(2):
        db = PartitionDB(partition_path(s.stream.state_dir, s.kafka.events_topic, p), read_only=True)
        try:
            assert keys.decode_int(db.get_meta(keys.META_OFFSET_RESETS)) == 1
        finally:
            db.close()
    assert "beyond the log end" in flow.log_text()
    resets = [ln for ln in metrics.splitlines() if ln.startswith("fusionrec_api_offset_beyond_log_end_total")]
    assert any(s.kafka.events_topic in ln and float(ln.split()[-1]) >= 1 for ln in resets), resets
    assert ready_s < 10 and serving_s < 60
    print(f"outage {OUTAGE_S:.0f} s: ready {ready_s:.1f} s after the broker returned; all {accepted} accepted "
          f"events applied {serving_s:.1f} s after it")
