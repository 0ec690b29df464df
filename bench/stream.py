"""Stream benchmark: events/s through the flow (1 and 2 workers) next to the raw broker rate,
and event -> visible-over-HTTP latency at a fixed input rate. Not a test.

    .venv/bin/python bench/stream.py --quick          # ~2-4 min
    .venv/bin/python bench/stream.py                  # more events, two rates

Input: a replay of ../shared/datasets/rsc15_100k_sessionrec when present, else the synthetic shop.
The last line is one JSON object (events_per_s, broker_events_per_s, visible_p50_ms, visible_p99_ms, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import msgspec
import numpy as np
from confluent_kafka import Consumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from operators.broker import LocalBroker  # noqa: E402
from operators.kafka import high_watermarks  # noqa: E402
from operators.schema import Event, encode_event  # noqa: E402
from operators.training import train_covisitation  # noqa: E402
from simulators.producer import EventProducer  # noqa: E402
from simulators.shop import SyntheticShop  # noqa: E402
from tests.platform import ApiServer, FlowProcess, make_settings, stored_total, wait_caught_up  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "rsc15_100k_sessionrec"


def load_events(n: int) -> tuple[list[Event], str]:
    if SHARED.exists():
        from simulators.replay import read_replay

        path = next(SHARED.glob("*train_full*.txt"))
        ev = list(read_replay(path, "sessionrec", limit=n))
        return ev, f"rsc15 replay ({path.name})"
    shop = SyntheticShop(seed=1)
    return shop.history(n), "synthetic shop"


def broker_rate(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], partitions: int) -> tuple[float, float]:
    """Raw produce and consume rates (messages/s) of the same messages on the same broker."""
    p = EventProducer(bootstrap, events_topic=topic)
    t0 = time.perf_counter()
    for k, v in values:
        p.produce(topic, k, v)
    p.flush()
    produce_s = time.perf_counter() - t0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 10})
    c.assign([TopicPartition(topic, i, 0) for i in range(partitions)])
    n, t0 = 0, time.perf_counter()
    while n < len(values):
        n += sum(1 for m in c.consume(5000, 0.1) if not m.error())
    consume_s = time.perf_counter() - t0
    c.close()
    return len(values) / produce_s, len(values) / consume_s


def flow_rate(bootstrap: str, tmp: Path, events: list[Event], workers: int, partitions: int) -> dict:
    """Preload the topic, start the flow on fresh state, time from its first commit to caught up."""
    s = make_settings(bootstrap, tmp / f"w{workers}", partitions=partitions)
    train_covisitation(events, s)
    with EventProducer.from_settings(s.kafka) as p:
        p.send_events(events, progress=False)
    flow = FlowProcess(s, tmp / f"w{workers}.toml", workers=workers).start()
    try:
        t_start = time.perf_counter()
        while stored_total(s) == 0:
            time.sleep(0.01)
        t_first, n_first = time.perf_counter(), stored_total(s)
        wait_caught_up(s, flow, timeout_s=600)
        t_done = time.perf_counter()
    finally:
        flow.stop()
    state_bytes = sum(f.stat().st_size for f in Path(s.stream.state_dir).rglob("*") if f.is_file())
    n_users = len({e.user_id for e in events})
    rate = (len(events) - n_first) / max(t_done - t_first, 1e-9)
    return {"workers": workers, "events": len(events), "startup_s": round(t_first - t_start, 2),
            "events_per_s": round(rate), "events_per_s_per_worker": round(rate / workers),
            "bytes_per_user": round(state_bytes / n_users)}


def visible_latency(bootstrap: str, tmp: Path, events: list[Event], rate: float, seconds: float,
                    partitions: int) -> dict:
    """Send events at ``rate``/s; probe events are timed until the API shows them (last_event_ts)."""
    s = make_settings(bootstrap, tmp / f"lat{int(rate)}", partitions=partitions)
    train_covisitation(events, s)
    flow = FlowProcess(s, tmp / f"lat{int(rate)}.toml", workers=2).start()
    lat_ms: list[float] = []
    stop = threading.Event()
    try:
        with ApiServer(s) as api, EventProducer.from_settings(s.kafka) as producer:
            # warm up: first events through the flow
            producer.send_events(events[:2000], progress=False)
            wait_caught_up(s, flow, timeout_s=120)
            base = time.time()
            load = [msgspec.structs.replace(e, event_id=f"load-{i}", ts=base + i / rate)
                    for i, e in enumerate(events[: int(rate * seconds)])]

            def background() -> None:
                lp = EventProducer.from_settings(s.kafka)
                lp.send_events(load, rate_per_s=rate, progress=False, flush=False)
                while not stop.is_set() and lp.flush(0.1):
                    pass
                lp.close()

            th = threading.Thread(target=background)
            th.start()
            client = httpx.Client(base_url=api.url, timeout=5)
            users = sorted({e.user_id for e in events[:2000]})
            rng = np.random.default_rng(0)
            i = 0
            while th.is_alive():
                u = users[int(rng.integers(len(users)))]
                probe = Event(event_id=f"probe-{i}", ts=time.time(), type="view", user_id=u,
                              item_id=events[i % len(events)].item_id or "x")
                i += 1
                t0 = time.perf_counter()
                producer.produce(s.kafka.events_topic, u.encode(), encode_event(probe))
                producer.flush(5)
                while time.perf_counter() - t0 < 10:
                    body = client.get("/v1/recommendations", params={"user_id": u, "n": 5}).json()
                    if body.get("last_event_ts", 0) >= probe.ts:
                        lat_ms.append((time.perf_counter() - t0) * 1000)
                        break
                    time.sleep(0.002)
                time.sleep(0.05)
            th.join()
    finally:
        stop.set()
        flow.stop()
    lat = np.array(lat_ms)
    return {"rate_per_s": rate, "probes": len(lat), "visible_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "visible_p99_ms": round(float(np.percentile(lat, 99)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    n = args.events or (30000 if args.quick else 70000)
    events, source = load_events(n)
    rates = [1000.0] if args.quick else [1000.0, 5000.0]
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        tmp_p = Path(tmp)
        s = make_settings(broker.bootstrap, tmp_p / "raw", partitions=args.partitions)
        values = [(e.user_id.encode(), encode_event(e)) for e in events]
        prod_rate, cons_rate = broker_rate(broker.bootstrap, s.kafka.events_topic, values, args.partitions)
        assert sum(high_watermarks(broker.bootstrap, s.kafka.events_topic).values()) == len(values)
        flows = [flow_rate(broker.bootstrap, tmp_p, events, w, args.partitions) for w in (1, 2)]
        lats = [visible_latency(broker.bootstrap, tmp_p, events, r, 15 if args.quick else 30, args.partitions)
                for r in rates]
    broker_eps = min(prod_rate, cons_rate)
    print(f"\ninput: {len(events)} events, {source}; {args.partitions} partitions; cores: {os.cpu_count()}")
    print(f"{'what':34} {'events/s':>10} {'share of broker':>16} {'per worker':>11} {'bytes/user':>11}")
    print(f"{'broker produce (raw)':34} {prod_rate:>10.0f}")
    print(f"{'broker consume (raw)':34} {cons_rate:>10.0f}")
    for f in flows:
        print(f"{'flow, ' + str(f['workers']) + ' worker(s)':34} {f['events_per_s']:>10} "
              f"{f['events_per_s'] / broker_eps:>15.0%} {f['events_per_s_per_worker']:>11} {f['bytes_per_user']:>11}")
    print(f"\n{'input rate/s':>12} {'probes':>7} {'visible p50 ms':>15} {'visible p99 ms':>15}")
    for lt in lats:
        print(f"{lt['rate_per_s']:>12.0f} {lt['probes']:>7} {lt['visible_p50_ms']:>15} {lt['visible_p99_ms']:>15}")
    cmd = "python bench/stream.py" + (" --quick" if args.quick else "")
    print(f"\ncommand: .venv/bin/{cmd}")
    best = max(flows, key=lambda f: f["events_per_s"])
    print(json.dumps({
        "events_per_s": best["events_per_s"], "events_per_s_1w": flows[0]["events_per_s"],
        "events_per_s_2w": flows[1]["events_per_s"], "events_per_s_per_worker": flows[0]["events_per_s_per_worker"],
        "broker_events_per_s": round(broker_eps), "broker_produce_per_s": round(prod_rate),
        "broker_consume_per_s": round(cons_rate), "visible_p50_ms": lats[-1]["visible_p50_ms"],
        "visible_p99_ms": lats[-1]["visible_p99_ms"], "visible_rate_per_s": lats[-1]["rate_per_s"],
        "bytes_per_user": flows[0]["bytes_per_user"], "events": len(events), "source": source}))


if __name__ == "__main__":
    main()
