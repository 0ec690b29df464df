"""user-topn per API process: today's dict vs the local RocksDB serving store, side by side.

    .venv/bin/python bench/serving.py [--users 200000] [--rounds 3] [--lookups 100000]

Starts a local Tansu broker, publishes one top-N list per user (50 items, as the flow does) to a
compacted topic of 4 partitions, then, in a fresh process per measurement (so resident memory is
that process's own), starts the API's reader of that topic (``operators/topic_table.py``) with
each backend and measures: seconds until it has caught up (cold: an empty store; warm: a
restarted process whose store already holds everything, rocksdb only), the resident memory
(RSS) after catching up, and the latency of ``get`` for random users (p50/p99 over
``--lookups``, in-process, decoded lists). Prints a table (medians over ``--rounds``) and the
command.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.broker import LocalBroker  # noqa: E402
from operators.kafka import TopicSpec, ensure_topics, make_producer  # noqa: E402
from operators.score import TopN, encode_topn  # noqa: E402


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _measure(brokers: str, topic: str, backend: str, store_dir: str, n_users: int, lookups: int) -> dict:
    """One measurement in this process (run as a child): catch-up time, RSS, get latency."""
    import numpy as np

    from operators.score import decode_topn
    from operators.topic_table import TopicTable
    from state.serving import ServingStore

    base = _rss_bytes()
    store = ServingStore(Path(store_dir)) if backend == "rocksdb" else None
    t0 = time.perf_counter()
    table = TopicTable(brokers, topic, decode_topn, store=store).start()
    assert table.wait_caught_up(3600)
    ready_s = time.perf_counter() - t0
    time.sleep(1.0)  # let the last write batch land
    rss = _rss_bytes()
    rng = random.Random(0)
    users = [f"u{rng.randrange(n_users):08d}" for _ in range(lookups)]
    lat = np.empty(lookups)
    for i, u in enumerate(users):
        t = time.perf_counter_ns()
        v = table.get(u)
        lat[i] = time.perf_counter_ns() - t
        assert v is not None
    table.stop()
    return {"ready_s": ready_s, "rss_mb": rss / 2**20, "base_rss_mb": base / 2**20,
            "get_p50_us": float(np.percentile(lat, 50)) / 1e3, "get_p99_us": float(np.percentile(lat, 99)) / 1e3}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lookups", type=int, default=100_000)
    ap.add_argument("--backends", default="memory,rocksdb")
    ap.add_argument("--child", nargs=6, metavar=("BROKERS", "TOPIC", "BACKEND", "DIR", "USERS", "LOOKUPS"))
    a = ap.parse_args()
    if a.child:
        b, topic, backend, d, n, lk = a.child
        print(json.dumps(_measure(b, topic, backend, d, int(n), int(lk))))
        return
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        topic = f"topn-bench-{uuid.uuid4().hex[:6]}"
        ensure_topics(broker.bootstrap, [TopicSpec(topic, 4, compacted=True)])
        p = make_producer(broker.bootstrap)
        t0 = time.perf_counter()
        size = 0
        for j in range(a.users):
            items = [f"i{(j * 7 + k * 13) % 1_000_000:07d}" for k in range(50)]
            v = encode_topn(TopN(user_id=f"u{j:08d}", items=items, scores=[1.0 - k / 50 for k in range(50)],
                                 source="model", model_version="v1", updated_ts=1.7e9, last_event_ts=1.7e9))
            size += len(v)
            while True:
                try:
                    p.produce(topic, key=f"u{j:08d}".encode(), value=v)
                    break
                except BufferError:
                    p.poll(0.05)
        p.flush(600)
        print(f"published {a.users:,} lists ({size / 2**20:.0f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
        rows: dict[str, list[dict]] = {}
        for r in range(a.rounds):
            for backend in a.backends.split(","):
                d = os.path.join(tmp, f"{backend}-{r}")
                cold = _child([broker.bootstrap, topic, backend, d, str(a.users), str(a.lookups)])
                rows.setdefault(f"{backend} cold", []).append(cold)
                print(f"round {r} {backend} cold: {cold}", flush=True)
                if backend == "rocksdb":
                    warm = _child([broker.bootstrap, topic, backend, d, str(a.users), str(a.lookups)])
                    rows.setdefault(f"{backend} warm (restart)", []).append(warm)
                    print(f"round {r} {backend} warm: {warm}", flush=True)
    print(f"\nuser-topn per API process, {a.users:,} users x 50 items, medians of {a.rounds} rounds\n")
    print("| backend | start to caught up (s) | RSS after (MB) | get p50 (µs) | get p99 (µs) |")
    print("|---|---|---|---|---|")
    for name, rs in rows.items():
        med = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
        print(f"| {name} | {med['ready_s']:.1f} | {med['rss_mb']:.0f} | {med['get_p50_us']:.1f} | "
              f"{med['get_p99_us']:.1f} |")
    print(f"\ncommand: .venv/bin/python bench/serving.py --users {a.users} --rounds {a.rounds} --lookups {a.lookups}")


if __name__ == "__main__":
    main()
