"""Partitions are the unit of scale: 1 worker, 2 workers and 2 processes build the same state,
and rescaling mid-stream (1 process -> 2 processes -> 1) keeps every user's state."""

from __future__ import annotations

import pytest

from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import FlowProcess, dump_state, make_settings, stored_total, wait_caught_up

pytestmark = pytest.mark.integration


def _with_state_dir(s, path):
    return s.model_copy(update={"stream": s.stream.model_copy(update={"state_dir": path})})


def test_one_worker_two_workers_two_processes_and_rescaling_agree(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=4)
    events = list(SyntheticShop(n_items=500, n_users=300, seed=5).events(12000, rate_per_s=10.0))
    with EventProducer.from_settings(s.kafka) as p:
        p.send_events(events[:8000], progress=False)

    layouts = {"1w": (1, 1), "2w": (2, 1), "2p": (1, 2)}
    states = {}
    for name, (workers, processes) in layouts.items():
        sn = _with_state_dir(s, tmp_path / name)
        flow = FlowProcess(sn, tmp_path / f"{name}.toml", workers=workers, processes=processes).start()
        try:
            wait_caught_up(sn, flow, timeout_s=120)
        finally:
            flow.stop()
        states[name] = sn

    # rescale the 1-worker deployment: 2 processes take over its state for the next events, then 1 again
    # (the 2-worker and 2-process deployments go to 1 process directly, with the events of both steps)
    with EventProducer.from_settings(s.kafka) as p:
        p.send_events(events[8000:10000], progress=False)
    flow = FlowProcess(states["1w"], tmp_path / "1w.toml", workers=1, processes=2).start()
    try:
        wait_caught_up(states["1w"], flow, timeout_s=120)
    finally:
        flow.stop()
    with EventProducer.from_settings(s.kafka) as p:
        p.send_events(events[10000:], progress=False)
    for name in layouts:
        flow = FlowProcess(states[name], tmp_path / f"{name}.toml", workers=1, processes=1).start()
        try:
            wait_caught_up(states[name], flow, timeout_s=120)
        finally:
            flow.stop()

    dumps = {name: dump_state(sn) for name, sn in states.items()}
    assert stored_total(states["1w"]) == len(events)
    applied = sum(sum(st.counts.values()) for p in dumps["1w"].values() for st in p["users"].values())
    assert applied == len(events)
    assert dumps["1w"] == dumps["2w"] == dumps["2p"]
