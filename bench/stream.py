"""Stream benchmark: events/s through the flow (1 and 2 workers) next to the raw broker rate,
event -> visible-over-HTTP latency at a fixed input rate, bytes per user, and online/offline
parity of the published top-N. Not a test.

    .venv/bin/python bench/stream.py --quick          # < 5 min
    .venv/bin/python bench/stream.py                  # more events, more test sessions

The model is EMDE (sketches updated per event in RocksDB, batched rescoring) unless
``--model covisit`` or ``--model fusion`` (EMDE + V-STAN/STAN under a learned ranker, rescored
from each user's history). Input: ../shared/datasets/rsc15_100k_sessionrec when present (train_full
to train and to replay, test for parity), else (or with ``--synthetic``) the synthetic shop, whose
next events after the replayed ones are held out for parity.
Parity: held-out test sessions are replayed position by position through the live flow; after
each position the list the API serves is scored against the session's next item (HR@20,
MRR@20), and the same (prefix, next) pairs are scored offline with the same model version.
The last line is one JSON object (events_per_s, events_per_s_per_worker (= state updates per
worker, 1 worker), rescoring_events_per_s_per_worker (with batched rescoring), broker_events_per_s,
visible_p50_ms, visible_p99_ms, bytes_per_user, online_hr20, offline_hr20, ...).
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

from models.base import Histories  # noqa: E402
from operators.broker import LocalBroker  # noqa: E402
from operators.kafka import high_watermarks  # noqa: E402
from operators.model_version import latest_version_path, load_version  # noqa: E402
from operators.schema import Event, encode_event  # noqa: E402
from operators.training import train_model  # noqa: E402
from simulators.producer import EventProducer  # noqa: E402
from simulators.shop import SyntheticShop  # noqa: E402
from tests.harness import (  # noqa: E402
    ApiServer,
    FlowProcess,
    make_settings,
    stored_total,
    time_until_visible,
    wait_caught_up,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "rsc15_100k_sessionrec"


def load_events(n: int, synthetic: bool = False) -> tuple[list[Event], list[Event], str]:
    """(train events, held-out test events, description): rsc15 when present, else the synthetic
    shop, whose held-out part is the fifth of events that follows the first ``n``."""
    if SHARED.exists() and not synthetic:
        from simulators.replay import read_replay

        path = next(SHARED.glob("*train_full*.txt"))
        ev = list(read_replay(path, "sessionrec", limit=n))
        test = list(read_replay(next(SHARED.glob("*_test.txt")), "sessionrec"))
        return ev, test, f"rsc15 replay ({path.name})"
    ev = SyntheticShop(seed=1).history(n + n // 5)
    return ev[:n], ev[n:], "synthetic shop (held out: the next events)"


MODEL_PARAMS = {"emde": {"max_train_seconds": 90.0, "epochs": 3, "progress": False}, "covisit": {},
                "fusion": {"emde": {"max_train_seconds": 600.0, "epochs": 3, "progress": False}}}


def _share_models(s, model_dir: Path):  # noqa: ANN001, ANN202
    return s.model_copy(update={"stream": s.stream.model_copy(update={"model_dir": model_dir})})


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


def flow_rate(bootstrap: str, tmp: Path, events: list[Event], workers: int, partitions: int,
              model_dir: Path, rescore: bool = True) -> dict:
    """Preload the topic, start the flow on fresh state, time from its first commit to caught up.

    ``rescore=False`` measures state updates alone (history, popularity, EMDE sketch folding):
    the debounce interval is set beyond the run, so no user is scored while it lasts.
    """
    name = f"w{workers}{'' if rescore else '-updates'}"
    s = _share_models(make_settings(bootstrap, tmp / name, partitions=partitions,
                                    rescore_interval_s=0.1 if rescore else 3600.0), model_dir)
    with EventProducer.from_settings(s.kafka) as p:
        p.send_events(events, progress=False)
    flow = FlowProcess(s, tmp / f"{name}.toml", workers=workers).start()
    try:
        t_start = time.perf_counter()
        while stored_total(s) == 0:
            time.sleep(0.01)
        t_first, n_first = time.perf_counter(), stored_total(s)
        wait_caught_up(s, flow, timeout_s=600, pending=rescore)
        t_done = time.perf_counter()
    finally:
        flow.stop()
    state_bytes = sum(f.stat().st_size for f in Path(s.stream.state_dir).rglob("*") if f.is_file())
    n_users = len({e.user_id for e in events})
    rate = (len(events) - n_first) / max(t_done - t_first, 1e-9)
    return {"workers": workers, "rescore": rescore, "events": len(events), "startup_s": round(t_first - t_start, 2),
            "events_per_s": round(rate), "events_per_s_per_worker": round(rate / workers),
            "bytes_per_user": round(state_bytes / n_users)}


def visible_latency(bootstrap: str, tmp: Path, events: list[Event], rate: float, seconds: float,
                    partitions: int, model_dir: Path) -> dict:
    """Send events at ``rate``/s; probe events are timed until the API shows them (last_event_ts)."""
    s = _share_models(make_settings(bootstrap, tmp / f"lat{int(rate)}", partitions=partitions), model_dir)
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
                ms = time_until_visible(producer, client, s.kafka.events_topic, probe, poll_s=0.002)
                if ms is not None:
                    lat_ms.append(ms)
                time.sleep(0.05)
            th.join()
    finally:
        stop.set()
        flow.stop()
    lat = np.array(lat_ms)
    return {"rate_per_s": rate, "probes": len(lat), "visible_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "visible_p99_ms": round(float(np.percentile(lat, 99)), 1)}


def parity(bootstrap: str, tmp: Path, test: list[Event], partitions: int, model_dir: Path,
           max_sessions: int, max_len: int) -> dict:
    """HR@20 / MRR@20 of the lists the live platform serves vs the same model offline."""
    version = load_version(latest_version_path(model_dir))
    known = version.item_index
    sessions: dict[str, list[Event]] = {}
    for e in test:
        if e.item_id in known:
            sessions.setdefault(e.user_id, []).append(e)
    sessions = {u: evs[:max_len] for u, evs in list(sessions.items()) if len(evs) >= 2}
    sessions = dict(list(sessions.items())[:max_sessions])
    s = _share_models(make_settings(bootstrap, tmp / "parity", partitions=partitions), model_dir)
    online_rank: list[int] = []
    pairs_items: list[list[int]] = []
    pairs_next: list[int] = []
    flow = FlowProcess(s, tmp / "parity.toml", workers=2).start()
    try:
        with ApiServer(s) as api, EventProducer.from_settings(s.kafka) as p, httpx.Client(base_url=api.url) as c:
            for pos in range(max_len - 1):
                batch = [evs[pos] for evs in sessions.values() if len(evs) > pos + 1]
                if not batch:
                    break
                p.send_events(batch, progress=False)
                wait_caught_up(s, flow, timeout_s=300)
                for e in batch:
                    evs = sessions[e.user_id]
                    want = evs[pos + 1].item_id
                    deadline = time.monotonic() + 10
                    while (body := c.get("/v1/recommendations", params={"user_id": e.user_id, "n": 20}).json()
                           ).get("last_event_ts") != e.ts and time.monotonic() < deadline:
                        time.sleep(0.01)
                    got = [i["item_id"] for i in body["items"]]
                    online_rank.append(got.index(want) + 1 if want in got else 0)
                    pairs_items.append([known[x.item_id] for x in evs[: pos + 1]])
                    pairs_next.append(known[want])
    finally:
        flow.stop()
    ids, _ = version.model.recommend(Histories.from_lists(pairs_items), 20)
    nxt = np.asarray(pairs_next)[:, None]
    hit = ids == nxt
    offline_rank = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    on = np.asarray(online_rank)

    def hr_mrr(r: np.ndarray) -> tuple[float, float]:
        return float((r > 0).mean()), float(np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0).mean())

    (on_hr, on_mrr), (off_hr, off_mrr) = hr_mrr(on), hr_mrr(offline_rank)
    return {"sessions": len(sessions), "pairs": len(on), "online_hr20": round(on_hr, 4),
            "online_mrr20": round(on_mrr, 4), "offline_hr20": round(off_hr, 4), "offline_mrr20": round(off_mrr, 4),
            "same_rank_share": round(float((on == offline_rank).mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--model", default="emde", choices=["emde", "covisit", "fusion"])
    ap.add_argument("--synthetic", action="store_true", help="Use the synthetic shop even when rsc15 is present")
    ap.add_argument("--views", default=None, help="EMDE input views, comma-separated (e.g. session,last,knn:last)")
    args = ap.parse_args()
    n = args.events or (20000 if args.quick else 70000)
    events, test, source = load_events(n, args.synthetic)
    rates = [1000.0, 5000.0]
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        tmp_p = Path(tmp)
        model_dir = tmp_p / "models"
        t0 = time.perf_counter()
        train_settings = _share_models(make_settings(broker.bootstrap, tmp_p / "train"), model_dir)
        params = dict(MODEL_PARAMS[args.model])
        if args.quick and args.model == "emde":
            params.update(max_train_seconds=40.0, epochs=2)
        if args.quick and args.model == "fusion":
            params.update(emde={"max_train_seconds": 600.0, "epochs": 1, "progress": False})
        if args.views and args.model == "emde":
            params["views"] = tuple(args.views.split(","))
        train_model(events, train_settings, args.model, **params)
        train_s = time.perf_counter() - t0
        s = make_settings(broker.bootstrap, tmp_p / "raw", partitions=args.partitions)
        values = [(e.user_id.encode(), encode_event(e)) for e in events]
        prod_rate, cons_rate = broker_rate(broker.bootstrap, s.kafka.events_topic, values, args.partitions)
        assert sum(high_watermarks(broker.bootstrap, s.kafka.events_topic).values()) == len(values)
        updates = flow_rate(broker.bootstrap, tmp_p, events, 1, args.partitions, model_dir, rescore=False)
        flows = [flow_rate(broker.bootstrap, tmp_p, events, w, args.partitions, model_dir) for w in (1, 2)]
        lats = [visible_latency(broker.bootstrap, tmp_p, events, r, 8 if args.quick else 30, args.partitions,
                                model_dir) for r in rates]
        par = (parity(broker.bootstrap, tmp_p, test, args.partitions, model_dir,
                      200 if args.quick else 1500, 5 if args.quick else 10) if test else {})
    broker_eps = min(prod_rate, cons_rate)
    print(f"\ninput: {len(events)} events, {source}; model {args.model} (trained in {train_s:.1f} s); "
          f"{args.partitions} partitions; cores: {os.cpu_count()}")
    print(f"{'what':44} {'events/s':>10} {'share of broker':>16} {'per worker':>11} {'bytes/user':>11}")
    print(f"{'broker produce (raw)':44} {prod_rate:>10.0f}")
    print(f"{'broker consume (raw)':44} {cons_rate:>10.0f}")
    for f in [updates, *flows]:
        what = f"flow, {f['workers']} worker(s), " + ("rescoring" if f["rescore"] else "state updates only")
        print(f"{what:44} {f['events_per_s']:>10} "
              f"{f['events_per_s'] / broker_eps:>15.0%} {f['events_per_s_per_worker']:>11} {f['bytes_per_user']:>11}")
    print(f"\n{'input rate/s':>12} {'probes':>7} {'visible p50 ms':>15} {'visible p99 ms':>15}")
    for lt in lats:
        print(f"{lt['rate_per_s']:>12.0f} {lt['probes']:>7} {lt['visible_p50_ms']:>15} {lt['visible_p99_ms']:>15}")
    if par:
        print(f"\nparity on {par['pairs']} (prefix, next) pairs of {par['sessions']} held-out sessions:")
        print(f"{'':10} {'HR@20':>8} {'MRR@20':>8}")
        print(f"{'online':10} {par['online_hr20']:>8} {par['online_mrr20']:>8}")
        print(f"{'offline':10} {par['offline_hr20']:>8} {par['offline_mrr20']:>8}")
        print(f"same rank online and offline: {par['same_rank_share']:.1%} of pairs")
    cmd = "python bench/stream.py" + (" --quick" if args.quick else "") + (
        f" --model {args.model}" if args.model != "emde" else "") + (f" --views {args.views}" if args.views else "") + (
        " --synthetic" if args.synthetic else "")
    print(f"\ncommand: .venv/bin/{cmd}")
    best = max(flows, key=lambda f: f["events_per_s"])
    print(json.dumps({
        "events_per_s": best["events_per_s"], "events_per_s_1w": flows[0]["events_per_s"],
        "events_per_s_2w": flows[1]["events_per_s"],
        # the target quantity: events/s per worker for state updates (history, popularity,
        # sketches, M′·Q, new-item links); with batched rescoring on top, the next key
        "events_per_s_per_worker": updates["events_per_s_per_worker"],
        "state_updates_per_s_per_worker": updates["events_per_s_per_worker"],
        "rescoring_events_per_s_per_worker": flows[0]["events_per_s_per_worker"],
        "broker_events_per_s": round(broker_eps), "broker_produce_per_s": round(prod_rate),
        "broker_consume_per_s": round(cons_rate), "visible_p50_ms": lats[-1]["visible_p50_ms"],
        "visible_p99_ms": lats[-1]["visible_p99_ms"], "visible_rate_per_s": lats[-1]["rate_per_s"],
        "bytes_per_user": flows[0]["bytes_per_user"], "events": len(events), "source": source,
        "model": args.model, "views": args.views, "train_s": round(train_s, 1), **par}))


if __name__ == "__main__":
    main()
