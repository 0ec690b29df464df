"""The archiving flow: ``kill -9`` at random moments, then the lake holds every valid event exactly once.

Why it holds: a partition's files are written and fsynced before its manifest (files + next
offset) is replaced atomically (operators/lake/store.py); the source resumes at the manifest's
offset and files no manifest lists are deleted on restart (flows/archive/logic.py).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

import pyarrow.dataset as ds
import pytest
from confluent_kafka import Consumer, TopicPartition

from operators.kafka import high_watermarks, make_producer
from operators.lake.read import lake_dataset, read_catalog
from operators.lake.store import LakePartition, lake_manifests
from operators.parse import EventRules, parse_event
from operators.schema import Event
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import FlowProcess, make_settings

pytestmark = pytest.mark.integration


def _topic_offsets(settings) -> set[tuple[int, int]]:
    """(partition, offset) of every valid event in the topic (dead letters left out)."""
    k = settings.kafka
    rules = EventRules.from_specs(settings.event_types, settings.stream.max_event_bytes)
    end = high_watermarks(k.brokers, k.events_topic)
    c = Consumer({"bootstrap.servers": k.brokers, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(k.events_topic, p, 0) for p in end])
    seen = {p: 0 for p in end}
    out: set[tuple[int, int]] = set()
    while any(seen[p] < end[p] for p in end):
        for m in c.consume(5000, 0.2):
            if m.error():
                continue
            seen[m.partition()] = m.offset() + 1
            if isinstance(parse_event(m.key(), m.value(), rules), Event):
                out.add((m.partition(), m.offset()))
    c.close()
    return out


def _archived_total(settings) -> int:
    return sum(m.next_offset for m in lake_manifests(settings.lake.lake_dir, "events"))


def _wait_archived(settings, flow: FlowProcess, timeout_s: float = 120.0) -> None:
    k = settings.kafka
    end = high_watermarks(k.brokers, k.events_topic)
    deadline = time.monotonic() + timeout_s
    while True:
        done = {m.partition: m.next_offset for m in lake_manifests(settings.lake.lake_dir, "events")}
        if all(done.get(p, 0) >= e for p, e in end.items()):
            return
        if not flow.alive():
            raise RuntimeError(f"archiver died:\n{flow.log_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"archiver not caught up: {done} vs {end}")
        time.sleep(0.1)


def test_lake_kill9_exactly_once(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=4)
    s = s.model_copy(update={"lake": s.lake.model_copy(update={
        "lake_dir": tmp_path / "lake", "flush_rows": 700, "flush_interval_s": 0.3,
        "compact_min_files": 4, "compact_small_rows": 3000})})
    shop = SyntheticShop(n_items=500, n_users=400, seed=5)
    events = list(shop.events(30000, rate_per_s=2.0))  # ~4 simulated hours across midnight: two dates
    catalog = shop.catalog(vectors=False)

    def produce() -> None:
        with EventProducer.from_settings(s.kafka) as p:
            p.send_catalog(catalog)
            p.send_events(events, rate_per_s=4000, progress=False)
        raw = make_producer(s.kafka.brokers)  # dead letters: archived as nothing
        for i in range(20):
            raw.produce(s.kafka.events_topic, key=f"u{i}".encode(), value=b"{not json")
        raw.flush(10)

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(7)
    flow = FlowProcess(s, tmp_path / "archive.toml", flow="flows.archive.dataflow:flow").start()
    kills, at_kill = 0, []
    try:
        while producer.is_alive() or kills < 3:
            before = _archived_total(s)
            deadline = time.monotonic() + 60
            while _archived_total(s) <= before and time.monotonic() < deadline and (producer.is_alive() or kills < 3):
                time.sleep(0.02)  # the restarted archiver has committed something: it is mid-stream
            time.sleep(rng.uniform(0.0, 0.5))
            at_kill.append(_archived_total(s))
            flow.kill9()
            kills += 1
            flow = FlowProcess(s, tmp_path / "archive.toml", flow="flows.archive.dataflow:flow").start()
        producer.join()
        _wait_archived(s, flow)
        time.sleep(1.0)  # the catalog partition flushes on its timer
    finally:
        flow.stop()
    assert kills >= 3
    assert sum(0 < n < len(events) for n in at_kill) >= 2, f"kills did not land mid-stream: {at_kill}"

    lake = lake_dataset(s.lake.lake_dir, "events").to_table(columns=["kafka_partition", "kafka_offset", "event_id"])
    pairs = list(zip(lake.column("kafka_partition").to_pylist(), lake.column("kafka_offset").to_pylist(), strict=True))
    dup = [k for k, n in Counter(pairs).items() if n > 1]
    assert not dup, f"{len(dup)} (partition, offset) archived twice, e.g. {dup[:5]}"
    assert set(pairs) == _topic_offsets(s)
    assert sorted(lake.column("event_id").to_pylist()) == sorted(e.event_id for e in events)
    # only files the manifests list exist (orphans of the kills were removed or never listed)
    on_disk = {p.relative_to(s.lake.lake_dir).as_posix()
               for p in (s.lake.lake_dir / "events").glob("date=*/*.parquet")}
    listed = {f.path for m in lake_manifests(s.lake.lake_dir, "events") for f in m.files}
    assert listed <= on_disk
    # the catalog change log: the catalog as of now equals what was published
    cat = read_catalog(s.lake.lake_dir, as_of_ts=time.time() + 60)
    assert {i: json.loads(r)["title"] for i, r in cat.items()} == {c["item_id"]: c["title"] for c in catalog}
    # the schema keeps the contract's fields; a dataset over the hive layout sees the date column
    assert "date" in ds.dataset(s.lake.lake_dir / "events", partitioning="hive").schema.names


def test_archiver_resumes_a_recreated_log_at_its_start(broker, tmp_path):
    """A manifest offset beyond the log end (the topic was recreated, e.g. an empty broker): the
    archiver detects it with the realtime flow's guard, logs it, moves the manifest back and
    archives every event of the new log (``stream.offset_beyond_end = earliest``)."""
    s = make_settings(broker, tmp_path, partitions=2)
    s = s.model_copy(update={"lake": s.lake.model_copy(update={"lake_dir": tmp_path / "lake", "flush_interval_s": 0.2})})
    for p in range(2):  # manifests of an older, longer log of the same name
        LakePartition(s.lake.lake_dir, "events", p).reset(500)
    events = [Event(event_id=f"n{j}", ts=time.time() - 60 + j * 0.01, type="view", user_id=f"u{j % 9}",
                    item_id=f"i{j % 5}") for j in range(40)]
    with EventProducer.from_settings(s.kafka) as p:
        p.send_events(events, progress=False)
    flow = FlowProcess(s, tmp_path / "archive.toml", flow="flows.archive.dataflow:flow").start()
    try:
        end = high_watermarks(s.kafka.brokers, s.kafka.events_topic)
        deadline = time.monotonic() + 60
        while {m.partition: m.next_offset for m in lake_manifests(s.lake.lake_dir, "events")} != end:
            assert flow.alive(), flow.log_text()[-3000:]
            assert time.monotonic() < deadline, lake_manifests(s.lake.lake_dir, "events")
            time.sleep(0.1)
    finally:
        flow.stop()
    lake = lake_dataset(s.lake.lake_dir, "events").to_table(columns=["event_id"])
    assert sorted(lake.column("event_id").to_pylist()) == sorted(e.event_id for e in events)
    assert "beyond the log end" in flow.log_text()
