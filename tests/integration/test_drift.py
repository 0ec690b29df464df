"""Drift: the synthetic shop's tastes change mid-run; with the trainer the served lists recover, without it they do not.

Two real-time flows read the same ``events`` topic with the same first model version (co-visitation
trained on the pre-drift history): A never retrains; B also runs the archiver into the lake and
one trainer run after the drift, whose challenger (trained on post-drift events) must pass the
gate. The hit rate of the lists each flow publishes to its ``user-topn`` topic is measured
against the simulator's ground truth (``simulators/hit_rate.py``) before the drift and for the
users active after the trainer ran. Then ``rollback`` while flow B runs: its next lists carry the
first version again within ~2 s (the flow's ``ModelWatcher``), without a restart.
"""

from __future__ import annotations

import shutil
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from operators.kafka import high_watermarks
from operators.lake.store import lake_manifests
from operators.model_registry import rollback
from operators.model_version import latest_version_path
from operators.score import decode_topn
from operators.trainer import run_once
from operators.training import train_model
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import FlowProcess, make_settings, wait_caught_up
from tests.integration.test_kill9 import _last_lists

pytestmark = pytest.mark.integration

K = 10
RATE = 5.0  # simulated events per second (the ts spacing)


def _hit_rate(shop: SyntheticShop, lists: dict[str, tuple], since_ts: float) -> tuple[float, int]:
    recs = {u: list(v[0]) for u, v in lists.items() if v[3] is not None and v[3] >= since_ts}
    return shop.hit_rate(recs, K), len(recs)


def _wait_archived(s, flow: FlowProcess, timeout_s: float = 120.0) -> None:
    end = high_watermarks(s.kafka.brokers, s.kafka.events_topic)
    deadline = time.monotonic() + timeout_s
    while True:
        done = {m.partition: m.next_offset for m in lake_manifests(s.lake.lake_dir, "events")}
        if all(done.get(p, 0) >= e for p, e in end.items()):
            return
        assert flow.alive(), flow.log_text()[-3000:]
        assert time.monotonic() < deadline, f"archiver not caught up: {done} vs {end}"
        time.sleep(0.1)


def test_trainer_recovers_hit_rate_after_drift(broker, tmp_path):
    a = make_settings(broker, tmp_path / "a", partitions=2)
    b = make_settings(broker, tmp_path / "b", partitions=2)
    b = b.model_copy(update={
        "kafka": b.kafka.model_copy(update={"events_topic": a.kafka.events_topic,
                                            "catalog_topic": a.kafka.catalog_topic}),
        "lake": b.lake.model_copy(update={"lake_dir": tmp_path / "lake", "flush_interval_s": 0.5}),
        "trainer": b.trainer.model_copy(update={"window_days": 4000 / 86400, "min_events": 1000}),
        "gate": b.gate.model_copy(update={"holdout_hours": 0.25, "min_queries": 200})})
    shop = SyntheticShop(n_items=1000, n_users=300, seed=1)
    pre = shop.history(30000, rate_per_s=RATE)
    train_model(pre, a, "covisit")
    shutil.copytree(a.stream.model_dir, b.stream.model_dir)
    v0 = latest_version_path(a.stream.model_dir).name

    flows = [FlowProcess(a, tmp_path / "a.toml").start(), FlowProcess(b, tmp_path / "b.toml").start(),
             FlowProcess(b, tmp_path / "archive.toml", flow="flows.archive.dataflow:flow").start()]
    try:
        with EventProducer.from_settings(a.kafka) as p:
            p.send_events(pre, progress=False)
        wait_caught_up(a, flows[0])
        hr_pre, n_pre = _hit_rate(shop, _last_lists(broker, a.kafka.topn_topic, 2), pre[-8000].ts)

        shop.drift()
        post = list(shop.events(30000, rate_per_s=RATE))
        with EventProducer.from_settings(a.kafka) as p:
            p.send_events(post[:22000], progress=False)
        wait_caught_up(a, flows[0])
        wait_caught_up(b, flows[1])
        _wait_archived(b, flows[2])
        run = run_once(b, model="covisit")  # the trainer of flow B: one run after the drift
        assert run["verdict"] == "promoted", run
        assert run["champion"] == v0 and run["metrics"]["challenger"] > run["metrics"]["champion"]
        time.sleep(2.5)  # the flows follow LATEST within ~2 s

        since = post[22000].ts
        with EventProducer.from_settings(a.kafka) as p:
            p.send_events(post[22000:], progress=False)
        wait_caught_up(a, flows[0])
        wait_caught_up(b, flows[1])
        lists_a = _last_lists(broker, a.kafka.topn_topic, 2)
        lists_b = _last_lists(broker, b.kafka.topn_topic, 2)
        rollback_s = _rollback_reaches_the_flow(b, shop, v0)
    finally:
        for f in flows:
            f.stop()
    hr_a, n_a = _hit_rate(shop, lists_a, since)
    hr_b, n_b = _hit_rate(shop, lists_b, since)
    chance = shop.random_hit_rate(K)
    print(f"HR@{K}: before drift {hr_pre:.3f} ({n_pre} users); after drift, users active after the trainer ran: "
          f"without trainer {hr_a:.3f} ({n_a}), with trainer {hr_b:.3f} ({n_b}); chance {chance:.3f}; "
          f"rollback served by the flow after {rollback_s:.2f} s")
    assert n_pre > 100 and n_a > 100 and n_a == n_b
    assert {v[2] for u, v in lists_b.items() if v[3] is not None and v[3] >= since and v[4] == "model"} == {
        run["challenger"]}
    assert hr_pre > 0.9
    assert hr_a < hr_pre - 0.25, "without the trainer the lists should stay stale"
    assert hr_b > 0.9 * hr_pre and hr_b > hr_a + 0.25, "with the trainer the lists should recover"
    assert rollback_s < 3.0, f"the flow served the rolled-back version after {rollback_s:.1f} s"


def _rollback_reaches_the_flow(s, shop: SyntheticShop, version: str) -> float:
    """``models rollback`` while flow B runs: seconds until a list it publishes carries ``version``."""
    end = high_watermarks(s.kafka.brokers, s.kafka.topn_topic)
    c = Consumer({"bootstrap.servers": s.kafka.brokers, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(s.kafka.topn_topic, p, o) for p, o in end.items()])
    t0 = time.monotonic()
    assert rollback(s.stream.model_dir) == version
    with EventProducer.from_settings(s.kafka) as p:
        for e in shop.events(200, rate_per_s=RATE):
            p.send_events([e], progress=False)
            p.flush()
            for m in c.consume(100, 0.05):
                if not m.error() and decode_topn(m.value()).model_version == version:
                    c.close()
                    return time.monotonic() - t0
    c.close()
    return float("inf")
