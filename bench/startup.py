"""API start to ready, and its memory: a new node (empty data directories) vs a restart (snapshot + tail).

    .venv/bin/python bench/startup.py [--events 1000000] [--users 200000] [--rounds 3] [--stores memory,rocksdb]

Starts a local Tansu broker and fills it like a shop with history: ``--events`` view/purchase
events in ``events`` (4 partitions), one published top-N list (50 items) per user in
``user-topn``, and the windowed popularity the flow publishes for those events
(``<events>.popularity``: one record per partition, hour bucket and shard, as compaction leaves
it; built with the flow's own ``WindowStore`` and record encoding). Then starts the API
(uvicorn, one worker, feedback reader on) as a child process and times ``GET /readyz`` until 200
(the broker answers and every reader has caught up), and reads the process's resident memory
once ready:

* ``first start``: a new node, empty API state: windowed popularity from the published pieces,
  the top-N lists in full, and the optimizer's reader over the served lists from their start and
  the events from the first one that could reward a list (none older than the first served list:
  without served lists none of the history; ``--served-at-start`` puts one at the start, then all
  of it; events that change nothing are skipped unparsed); with ``topn_store = memory`` (the old
  dict) and ``rocksdb``. Events carry their own time as Kafka timestamp, as a real history does;
* ``restart``: the same process started again on its state: the optimizer's snapshot and the
  local top-N store, then only the tails.

Prints a table (medians over ``--rounds``) and the command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import tomli_w

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.attribution import REQUEST_TYPE  # noqa: E402
from operators.broker import LocalBroker, free_port  # noqa: E402
from operators.kafka import ensure_topics, make_producer, platform_topics  # noqa: E402
from operators.schema import Event, encode_event  # noqa: E402
from operators.score import TopN, encode_topn  # noqa: E402
from operators.settings import Settings  # noqa: E402
from operators.window_topic import encode_window_piece, window_key  # noqa: E402
from state.partition import PartitionDB  # noqa: E402
from state.window_popularity import WindowStore  # noqa: E402


def _produce(brokers: str, topic: str, records) -> None:  # noqa: ANN001
    """Produce ``(key, value)`` or ``(key, value, timestamp_ms)`` records (the Kafka timestamp of a
    history's record is when it happened, not when this bench wrote it)."""
    p = make_producer(brokers)
    for k, v, *ts in records:
        while True:
            try:
                p.produce(topic, key=k, value=v, **({"timestamp": ts[0]} if ts else {}))
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(600) == 0


def _window_pieces(s: Settings, events: list[tuple[str, float, float, str]], tmp: Path) -> list[tuple[bytes, bytes]]:
    """The flow's windowed-popularity records for ``(user, ts, weight, item)`` events (partition by a
    stable hash of the user: which partition holds an item's counts does not change the sums)."""
    out: list[tuple[bytes, bytes]] = []
    n = s.kafka.partitions
    for p in range(n):
        with PartitionDB(tmp / f"window-p{p}") as db:
            store = WindowStore(db, s.api.popularity_bucket_s, s.api.popularity_horizon_s, s.stream.window_shards)
            for user, ts, w, item in events:
                if hash(user) % n == p:
                    store.add(item, w, ts)
            store.stage(db.new_batch())
            for (b, shard), weights in sorted(store.take_unpublished(db.new_batch()).items()):
                if weights is not None:
                    out.append((window_key(p, b, shard), encode_window_piece(p, b, shard, store.clock, weights)))
    return out


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _start_api(config: Path, port: int) -> tuple[float, float]:
    """Seconds from spawning the API to /readyz 200, and its RSS then (MB); the API is stopped after."""
    env = dict(os.environ, FUSIONREC_CONFIG=str(config), PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(timeout=2) as c:
            while True:
                try:
                    r = c.get(f"http://127.0.0.1:{port}/readyz")
                    if r.status_code == 200:
                        break
                    if os.environ.get("BENCH_VERBOSE"):
                        print(f"{time.perf_counter() - t0:.1f} s: {r.json()['reasons']}", flush=True)
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("the API exited")
                time.sleep(0.05)
        ready_s = time.perf_counter() - t0
        time.sleep(1.0)
        return ready_s, _rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stores", default="memory,rocksdb", help="topn_store values to measure")
    ap.add_argument("--served-at-start", action="store_true",
                    help="one served list at the start of the history (a new node then reads every event after it)")
    a = ap.parse_args()
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        tag = uuid.uuid4().hex[:6]
        base = Settings(kafka={"brokers": broker.bootstrap, "events_topic": f"events-{tag}", "dead_topic": f"dead-{tag}",
                               "topn_topic": f"topn-{tag}", "catalog_topic": f"catalog-{tag}",
                               "item_links_topic": f"links-{tag}", "partitions": 4},
                        api={"require_keys": False})
        ensure_topics(broker.bootstrap, platform_topics(base.kafka))
        t0 = time.perf_counter()
        now = time.time()
        weights = {t.name: t.weight for t in base.event_types}

        def event(j: int) -> Event:
            return Event(event_id=f"e{j}", ts=now - 7 * 86400 + j * (7 * 86400 / a.events),
                         type="view" if j % 5 else "purchase", user_id=f"u{j % a.users:08d}",
                         item_id=f"i{(j * 7919) % a.items:07d}")

        _produce(broker.bootstrap, base.kafka.events_topic,
                 ((e.user_id.encode(), encode_event(e), round(e.ts * 1000)) for e in map(event, range(a.events))))
        if a.served_at_start:  # a campaign served a list when the history began
            first = Event(event_id="r0", ts=now - 7 * 86400, type=REQUEST_TYPE, user_id="u00000000", campaign_id="c",
                          arm="a", request_id="r0", extra={"goal": "click", "served_items": ["i0000000"]})
            _produce(broker.bootstrap, base.kafka.served_topic,
                     [(b"u00000000", encode_event(first), round(first.ts * 1000))])
        pieces = _window_pieces(base, [(e.user_id, e.ts, weights[e.type], e.item_id or "")
                                       for e in map(event, range(a.events))], tmp)
        _produce(broker.bootstrap, base.kafka.window_topic(), pieces)
        _produce(broker.bootstrap, base.kafka.topn_topic, (
            (f"u{j:08d}".encode(), encode_topn(TopN(user_id=f"u{j:08d}", items=[f"i{(j + k) % a.items:07d}" for k in range(50)],
                                                    scores=[1.0 - k / 50 for k in range(50)], source="model",
                                                    model_version="v1", updated_ts=now, last_event_ts=now)))
            for j in range(a.users)))
        print(f"history: {a.events:,} events, {a.users:,} top-N lists, {len(pieces):,} popularity pieces "
              f"({sum(len(v) for _, v in pieces) / 1e6:.0f} MB), published in {time.perf_counter() - t0:.0f} s",
              flush=True)
        rows: dict[str, list[tuple[float, float]]] = {}
        for r in range(a.rounds):
            for store in a.stores.split(","):
                root = tmp / f"{store}-{r}"
                s = base.model_copy(update={
                    "stream": base.stream.model_copy(update={"state_dir": root / "state", "model_dir": root / "models",
                                                             "serving_dir": root / "serving"}),
                    "api": base.api.model_copy(update={"topn_store": store})})
                config = root / "fusionrec.toml"
                root.mkdir(parents=True)
                config.write_text(tomli_w.dumps(s.model_dump(mode="json", exclude_none=True)))
                first = _start_api(config, free_port())
                rows.setdefault(f"first start, topn_store={store}", []).append(first)
                again = _start_api(config, free_port())
                rows.setdefault(f"restart, topn_store={store}", []).append(again)
                print(f"round {r} {store}: first {first}, restart {again}", flush=True)
                shutil.rmtree(root, ignore_errors=True)
    print(f"\nAPI start to /readyz 200, one process, {a.events:,} events in history, {a.users:,} users, "
          f"{'one served list at the start' if a.served_at_start else 'no served lists'} "
          f"(medians of {a.rounds} rounds)\n")
    print("| start | ready after (s) | RSS when ready (MB) |")
    print("|---|---|---|")
    for name, vals in rows.items():
        print(f"| {name} | {statistics.median(v[0] for v in vals):.1f} | {statistics.median(v[1] for v in vals):.0f} |")
    print(f"\ncommand: .venv/bin/python bench/startup.py --events {a.events} --users {a.users} --items {a.items} "
          f"--rounds {a.rounds} --stores {a.stores}" + (" --served-at-start" if a.served_at_start else ""))


if __name__ == "__main__":
    main()
