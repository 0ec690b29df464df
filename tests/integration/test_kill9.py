"""``kill -9`` the flow mid-stream, several times: the final state equals an uninterrupted run.

Why it holds: a partition's state changes and its next offset are committed in one RocksDB
write batch (state/partition.py); on restart the source resumes at the stored offset
(flows/source.py) and the applier skips anything below it (operators/user_update.py).
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from operators.kafka import high_watermarks
from operators.schema import Event
from operators.score import POPULAR_KEY_PREFIX, decode_topn
from operators.training import train_model
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import FlowProcess, dump_state, make_settings, stored_total, wait_caught_up
from tests.integration.test_stream_emde import SMALL_EMDE

pytestmark = pytest.mark.integration


def _last_lists(broker: str, topic: str, partitions: int) -> dict[str, tuple]:
    """Newest published list per user: (items, rounded scores, model version, last event ts)."""
    c = Consumer({"bootstrap.servers": broker, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    end = high_watermarks(broker, topic)
    seen = {p: 0 for p in end}
    out: dict[str, tuple] = {}
    while any(seen[p] < end[p] for p in end):
        for m in c.consume(5000, 0.2):
            if m.error():
                continue
            seen[m.partition()] = m.offset() + 1
            t = decode_topn(m.value())
            if not t.user_id.startswith(POPULAR_KEY_PREFIX):
                out[t.user_id] = (t.items, [round(x, 4) for x in t.scores], t.model_version, t.last_event_ts,
                                  t.source)
    c.close()
    return out


def _with_bursts(events: list[Event], n_users: int, length: int, seed: int) -> list[Event]:
    """``events`` with ``n_users`` bursts of ``length`` consecutive views of one user inserted:
    one batch then holds more of that user's items than the state keeps (``history_len``), the
    case where EMDE's sketch and M′·Q once depended on where batches ended."""
    rng = random.Random(seed)
    items = sorted({i for e in events for i in e.item_ids()})
    out = list(events)
    for b in range(n_users):
        at = rng.randrange(len(out))
        t0 = out[at].ts
        burst = [Event(event_id=f"burst-{b}-{j}", ts=t0 + j * 1e-3, type="view", user_id=f"burst-user-{b}",
                       item_id=rng.choice(items)) for j in range(length)]
        out[at:at] = burst
    return out


def test_kill9_restart_equals_uninterrupted_run(broker, tmp_path):
    # history_len 20: batches often hold more of a user's items than the state keeps
    s = make_settings(broker, tmp_path / "killed", partitions=4, history_len=20)
    ref = make_settings(broker, tmp_path / "ref", partitions=4, history_len=20)
    ref = ref.model_copy(update={  # same events and model; own state, user-topn and dead-letter topics
        "kafka": ref.kafka.model_copy(update={"events_topic": s.kafka.events_topic}),
        "stream": ref.stream.model_copy(update={"model_dir": s.stream.model_dir})})
    shop = SyntheticShop(n_items=800, n_users=600, seed=3)
    # EMDE: sketches are part of the state, the neighbour view (knn:last, the default) included
    train_model(shop.history(8000), s, "emde", **{**SMALL_EMDE, "views": ("session", "last", "knn:last")})
    events = _with_bursts(list(shop.events(40000, rate_per_s=20.0)), n_users=12, length=60, seed=5)

    def produce() -> None:
        with EventProducer.from_settings(s.kafka) as p:
            p.send_events(events, rate_per_s=5000, progress=False)

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(11)
    flow = FlowProcess(s, tmp_path / "killed.toml").start()
    kills, progress_at_kill = 0, []
    try:
        while producer.is_alive() or kills < 3:
            before = stored_total(s)
            deadline = time.monotonic() + 60
            while stored_total(s) <= before and time.monotonic() < deadline and (producer.is_alive() or kills < 3):
                time.sleep(0.05)  # the restarted flow has committed something: it is mid-stream
            time.sleep(rng.uniform(0.0, 0.4))
            progress_at_kill.append(stored_total(s))
            flow.kill9()
            kills += 1
            flow = FlowProcess(s, tmp_path / "killed.toml").start()
        producer.join()
        wait_caught_up(s, flow, timeout_s=120)
    finally:
        flow.stop()
    assert kills >= 3
    assert sum(0 < n < len(events) for n in progress_at_kill) >= 2, f"kills did not land mid-stream: {progress_at_kill}"

    reference = FlowProcess(ref, tmp_path / "ref.toml").start()
    try:
        wait_caught_up(ref, reference, timeout_s=120)
    finally:
        reference.stop()

    killed_state, ref_state = dump_state(s), dump_state(ref)
    n_users = sum(len(p["users"]) for p in ref_state.values())
    n_applied = sum(sum(st.counts.values()) for p in ref_state.values() for st in p["users"].values())
    assert n_applied == len(events) and n_users > 100
    assert all(ref_state[p]["users"].get(f"burst-user-{b}") is None or
               sum(ref_state[p]["users"][f"burst-user-{b}"].counts.values()) == 60 for p in ref_state for b in range(12))
    assert sum(bool(st.sketch_cols) for p in ref_state.values() for st in p["users"].values()) > 100
    assert sum(bool(st.embedding) for p in ref_state.values() for st in p["users"].values()) > 100  # M′·Q
    # every stored field of every user bit for bit: history, counts, dedupe ids, times, the EMDE
    # sketch (columns and float32 values) and the M′·Q embedding bytes; popularity, dead letters, links
    for p in ref_state:
        diff = [u for u, st in ref_state[p]["users"].items() if killed_state[p]["users"].get(u) != st]
        assert not diff, f"partition {p}: {len(diff)} users differ, e.g. {diff[:5]}"
    assert killed_state == ref_state
    killed_lists = _last_lists(broker, s.kafka.topn_topic, 4)
    ref_lists = _last_lists(broker, ref.kafka.topn_topic, 4)
    assert len(ref_lists) == n_users and killed_lists.keys() == ref_lists.keys()
    # Lists from the model are a function of the state, so they must match exactly. Lists topped up
    # from popular items also depend on the partition's popularity at the moment of scoring, which the
    # debounce timer decides: those are compared on the model's part and the event time only.
    model_only = {u for u, v in ref_lists.items() if v[4] == "model"}
    assert len(model_only) > 0.8 * n_users
    assert {u: killed_lists[u] for u in model_only} == {u: ref_lists[u] for u in model_only}
    for u in ref_lists.keys() - model_only:
        assert killed_lists[u][2:] == ref_lists[u][2:]
