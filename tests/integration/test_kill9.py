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

from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.platform import FlowProcess, dump_state, make_settings, stored_total, wait_caught_up

pytestmark = pytest.mark.integration


def test_kill9_restart_equals_uninterrupted_run(broker, tmp_path):
    s = make_settings(broker, tmp_path / "killed", partitions=4)
    ref = s.model_copy(update={"stream": s.stream.model_copy(update={"state_dir": tmp_path / "ref" / "state"})})
    shop = SyntheticShop(n_items=800, n_users=600, seed=3)
    events = list(shop.events(40000, rate_per_s=20.0))

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
    assert killed_state == ref_state
