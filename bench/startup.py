"""API start to ready, and its memory: a new node without and with a published optimizer snapshot and user-topn checkpoint, and a restart.

    .venv/bin/python bench/startup.py [--events 1000000] [--users 200000] [--items 100000] [--rounds 3]
                                      [--served-every 100] [--tail 60000] [--list-tail 1]

Starts a local Tansu broker and fills it like a shop with history: ``--events`` view/purchase
events in ``events`` (4 partitions, spread over 7 days, Kafka timestamp = event time), a served
list of campaign ``c`` (goal view, two arms) in ``served`` before every ``--served-every``-th
event, one published top-N list (50 items) per user in ``user-topn``, and the windowed
popularity the flow publishes for those events (``<events>.popularity``: one record per
partition, hour bucket and shard, as compaction leaves it; weights summed with numpy, encoded
with the flow's ``encode_window_piece``). Then, per round, starts the API (uvicorn, one worker,
feedback reader on; the campaign in its store) as a child process, times ``GET /readyz`` until
200 (and when each reader stopped being a reason), reads its RSS, and stops it with SIGTERM
(it writes its snapshots and publishes the optimizer's):

* ``new node, no published snapshot``: empty state directories and empty snapshot and checkpoint
  topics of the round's own: the optimizer folds both topics from their start and the user-topn
  store is filled from the topic record by record (the paths before the published snapshot and
  checkpoint; it publishes a checkpoint of its store once caught up, and its optimizer snapshot
  when it stops);
* ``restart``: the same node again on its local state, after ``--tail`` more events (and, with
  ``--list-tail 1``, a new top-N list for each of their users, as the flow would publish);
* ``new node, published snapshot + tails``: other empty directories, after ``--tail`` more events:
  the optimizer from the snapshot the first node published, the user-topn store from its
  checkpoint, then the tails.

Prints a table (medians over ``--rounds``), the load averages and the command.
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
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import tomli_w

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.attribution import REQUEST_TYPE  # noqa: E402
from operators.broker import LocalBroker, free_port  # noqa: E402
from operators.kafka import TopicSpec, ensure_topics, make_producer, platform_topics  # noqa: E402
from operators.schema import Event, encode_event  # noqa: E402
from operators.score import TopN, encode_topn  # noqa: E402
from operators.settings import Settings  # noqa: E402
from operators.window_topic import encode_window_piece, window_key  # noqa: E402
from state.campaigns import Arm, Campaign, CampaignStore  # noqa: E402
from state.window_popularity import shard_of  # noqa: E402

_READERS = ("user-topn", "popularity", "feedback")  # /readyz reasons timed (a reader never named: the first answer)
_EVENT = b'{"event_id":"e%d","ts":%r,"type":"%s","user_id":"%s","item_id":"i%07d"}'


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


def _history(a: argparse.Namespace, now: float) -> dict[str, np.ndarray]:
    """Event ``j`` of the history as arrays: user index, item index, event time (epoch s), weight
    (views 1, every 5th a purchase: 5); times evenly spread over the 7 days before ``now``."""
    j = np.arange(a.events, dtype=np.int64)
    return {"user": j % a.users, "item": (j * 7919) % a.items, "ts": now - 7 * 86400 + j * (7 * 86400 / a.events),
            "purchase": j % 5 == 0}


def _events(h: dict[str, np.ndarray], lo: int, hi: int, served_every: int) -> Iterator[tuple[bytes, bytes, int]]:
    """``events`` records ``lo..hi`` as the API would write them (key user, Kafka timestamp the event time)."""
    for j, u, i, ts, buy in zip(range(lo, hi), h["user"][lo:hi].tolist(), h["item"][lo:hi].tolist(),
                                h["ts"][lo:hi].tolist(), h["purchase"][lo:hi].tolist(), strict=True):
        key = b"u%08d" % u
        yield key, _EVENT % (j, ts, b"purchase" if buy else b"view", key, i), round(ts * 1000)


def _served(h: dict[str, np.ndarray], lo: int, hi: int, served_every: int) -> Iterator[tuple[bytes, bytes, int]]:
    """A served list one second before every ``served_every``-th event, to its user (campaign ``c``, goal
    view, a day's window): arm ``a`` serves the item the user then views (a reward), arm ``b`` another."""
    first = -(-lo // served_every) * served_every
    for j in range(first, hi, served_every):
        u, i, ts = int(h["user"][j]), int(h["item"][j]), float(h["ts"][j]) - 1.0
        arm = "ab"[j // served_every % 2]
        ev = Event(event_id=f"r{j}", ts=ts, type=REQUEST_TYPE, user_id=f"u{u:08d}", campaign_id="c", arm=arm,
                   request_id=f"r{j}", extra={"goal": "view", "window_s": 86400.0,
                                              "served_items": [f"i{(i if arm == 'a' else i + 1) % 10_000_000:07d}"]})
        yield f"u{u:08d}".encode(), encode_event(ev), round(ts * 1000)


def _window_pieces(s: Settings, h: dict[str, np.ndarray], n_items: int) -> list[tuple[bytes, bytes]]:
    """The flow's windowed-popularity records for the history: per partition (user index modulo the
    partitions: which partition holds an item's counts does not change the sums), hour bucket and
    shard, the summed weights of its items and the partition's clock, encoded with the flow's own
    ``encode_window_piece`` (what compaction leaves of its publications; events are inside the horizon)."""
    n, bucket_s = s.kafka.partitions, s.api.popularity_bucket_s
    part = h["user"] % n
    bucket = (h["ts"] // bucket_s).astype(np.int64)
    b0, nb = int(bucket.min()), int(bucket.max() - bucket.min()) + 1
    key = (part * nb + (bucket - b0)) * n_items + h["item"]
    cells, inverse = np.unique(key, return_inverse=True)
    sums = np.bincount(inverse, weights=np.where(h["purchase"], 5.0, 1.0))
    clocks = {p: float(h["ts"][part == p].max()) for p in range(n)}
    item_ids = [f"i{i:07d}" for i in range(n_items)]
    shards = np.array([shard_of(x, s.stream.window_shards) for x in item_ids], dtype=np.int64)
    c_item, c_pb = cells % n_items, cells // n_items
    order = np.lexsort((c_item, shards[c_item], c_pb))
    group = c_pb[order] * s.stream.window_shards + shards[c_item[order]]
    bounds = np.flatnonzero(np.diff(group)) + 1
    out: list[tuple[bytes, bytes]] = []
    for sl in np.split(np.arange(len(order)), bounds):
        g = int(group[sl[0]])
        pb, shard = divmod(g, s.stream.window_shards)
        p, b = divmod(pb, nb)
        weights = dict(zip([item_ids[i] for i in c_item[order[sl]].tolist()], sums[order[sl]].tolist(), strict=True))
        out.append((window_key(p, b0 + b, shard), encode_window_piece(p, b0 + b, shard, clocks[p], weights)))
    return out


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _start_api(config: Path, port: int) -> dict[str, object]:
    """Spawn the API, poll ``/readyz`` until 200, read its RSS, stop it (SIGTERM: it snapshots and publishes).

    Returns ``ready_s`` (spawn to 200), ``rss_mb``, ``optimizer_from`` and, per reader named in the
    reasons (``user-topn``, ``popularity``, ``feedback``), the seconds after which it no longer was
    (the first answer's time if it never was).
    """
    env = dict(os.environ, FUSIONREC_CONFIG=str(config), PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=open(config.parent / "api.log", "ab"))  # noqa: SIM115
    last_seen: dict[str, float] = {}
    first_answer = 0.0
    try:
        with httpx.Client(timeout=2) as c:
            while True:
                try:
                    r = c.get(f"http://127.0.0.1:{port}/readyz")
                    body = r.json()
                    first_answer = first_answer or time.perf_counter() - t0
                    if r.status_code == 200:
                        break
                    if "reasons" not in body:  # not a readiness answer (an error): printed with the log, polled again
                        print(f"{time.perf_counter() - t0:.1f} s: /readyz {r.status_code} {body}", flush=True)
                        time.sleep(0.5)
                        tb = [x for x in (config.parent / "api.log").read_text(errors="replace").splitlines()
                              if "beyond the log end" not in x]
                        print("\n".join(tb[-40:]), flush=True)
                        time.sleep(0.05)
                        continue
                    for reason in body["reasons"]:
                        last_seen[reason.split(":")[0]] = time.perf_counter() - t0
                    if os.environ.get("BENCH_VERBOSE"):
                        print(f"{time.perf_counter() - t0:.1f} s: {body['reasons']}", flush=True)
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("the API exited")
                time.sleep(0.05)
        ready_s = time.perf_counter() - t0
        time.sleep(1.0)
        return {"ready_s": ready_s, "rss_mb": _rss_mb(proc.pid), "optimizer_from": body.get("optimizer_from"),
                "topn_from": body.get("topn_from") or "topic",
                **{f"{k}_s": last_seen.get(k, first_answer) for k in _READERS}}
    finally:
        proc.terminate()
        proc.wait(120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--served-every", type=int, default=100,
                    help="a served list before every n-th event (0: none; with lists, a new node folding the history "
                         "reads every event after the first)")
    ap.add_argument("--tail", type=int, default=60_000,
                    help="events written after each stop (before the restart, and before the new node that starts from "
                         "the published snapshot): a minute at 1,000 events/s, the publication interval")
    ap.add_argument("--list-tail", type=int, default=1, choices=(0, 1),
                    help="with each tail, also publish a new top-N list for every user with an event in it, as the "
                         "flow would (1, the default); 0: the tails leave user-topn unchanged (the bench before "
                         "issue 14, part 4)")
    a = ap.parse_args()
    uptimes: list[str] = []
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        tag = uuid.uuid4().hex[:6]
        base = Settings(kafka={"brokers": broker.bootstrap, "events_topic": f"events-{tag}", "dead_topic": f"dead-{tag}",
                               "served_topic": f"served-{tag}", "topn_topic": f"topn-{tag}",
                               "catalog_topic": f"catalog-{tag}", "item_links_topic": f"links-{tag}", "partitions": 4},
                        api={"require_keys": False})
        ensure_topics(broker.bootstrap, platform_topics(base))
        t0 = time.perf_counter()
        now = time.time()
        total = a.events + 3 * a.rounds * a.tail
        h = _history(argparse.Namespace(events=total, users=a.users, items=a.items), now)
        h["ts"] = now - 7 * 86400 + np.arange(total) * (7 * 86400 / a.events)  # the tails come after the history
        k = base.kafka
        _produce(broker.bootstrap, k.events_topic, _events(h, 0, a.events, a.served_every))
        t_events = time.perf_counter() - t0
        if a.served_every:
            _produce(broker.bootstrap, k.served_topic, _served(h, 0, a.events, a.served_every))
        hist = {name: v[:a.events] for name, v in h.items()}
        pieces = _window_pieces(base, hist, a.items)
        _produce(broker.bootstrap, k.window_topic(), pieces)

        def lists(users, shift: int = 0):  # noqa: ANN001, ANN202
            """The published top-N list of each user (items shifted by ``shift``: a rescored list)."""
            return ((f"u{j:08d}".encode(), encode_topn(TopN(
                user_id=f"u{j:08d}", items=[f"i{(j + shift + x) % a.items:07d}" for x in range(50)],
                scores=[1.0 - x / 50 for x in range(50)], source="model", model_version="v1", updated_ts=now,
                last_event_ts=now))) for j in users)

        _produce(broker.bootstrap, k.topn_topic, lists(range(a.users)))
        print(f"history: {a.events:,} events ({t_events:.0f} s), "
              f"{a.events // a.served_every if a.served_every else 0:,} served lists, {a.users:,} top-N lists, "
              f"{len(pieces):,} popularity pieces ({sum(len(v) for _, v in pieces) / 1e6:.0f} MB), "
              f"published in {time.perf_counter() - t0:.0f} s", flush=True)
        next_tail = a.events

        def tail() -> None:
            nonlocal next_tail
            if a.tail:
                _produce(broker.bootstrap, k.events_topic, _events(h, next_tail, next_tail + a.tail, a.served_every))
                if a.served_every:
                    _produce(broker.bootstrap, k.served_topic, _served(h, next_tail, next_tail + a.tail, a.served_every))
                if a.list_tail:  # the flow rescores the users of those events: a new list each
                    users = np.unique(h["user"][next_tail:next_tail + a.tail]).tolist()
                    _produce(broker.bootstrap, k.topn_topic, lists(users, shift=next_tail))
                next_tail += a.tail

        rows: dict[str, list[dict[str, object]]] = {}
        for r in range(a.rounds):
            # a snapshot topic of this round's own: the first node finds none (today's path) and publishes when it stops
            snapshots, checkpoints = f"optimizer-{tag}-{r}", f"topn-checkpoint-{tag}-{r}"
            ensure_topics(broker.bootstrap, [TopicSpec(snapshots, 2, compacted=True),
                                             TopicSpec(checkpoints, 2, compacted=True)])
            runs = []
            for name, node in (("new node, no published snapshot (folds the history: the old path)", "a"),
                               ("restart (local snapshot + tails)", "a"),
                               ("new node, published snapshot + tails", "b")):
                root = tmp / f"{node}-{r}"
                s = base.model_copy(update={
                    "kafka": base.kafka.model_copy(update={"optimizer_snapshot_topic": snapshots, **(
                        {"topn_checkpoint_topic": checkpoints} if "topn_checkpoint_topic" in type(base.kafka).model_fields
                        else {})}),  # (a tree before the checkpoints runs this bench too)
                    "stream": base.stream.model_copy(update={"state_dir": root / "state", "model_dir": root / "models",
                                                             "serving_dir": root / "serving"})})
                config = root / "fusionrec.toml"
                if not config.exists():
                    root.mkdir(parents=True)
                    config.write_text(tomli_w.dumps(s.model_dump(mode="json", exclude_none=True)))
                    store = CampaignStore(root / "api" / "campaigns")  # the shop's campaign (campaigns are per node)
                    store.put(Campaign(campaign_id="c", scenario="popular", goal="view",
                                       arms=[Arm("a", "popular"), Arm("b", "popular")]))
                got = _start_api(config, free_port())
                uptimes.append(f"{os.getloadavg()[0]:.1f}")
                rows.setdefault(name, []).append(got)
                runs.append(got)
                tail()
            print(f"round {r}: " + "; ".join(f"{x['ready_s']:.1f} s (optimizer {x['optimizer_from']}, user-topn "
                                             f"{x['topn_from']})" for x in runs), flush=True)
            for node in "ab":
                shutil.rmtree(tmp / f"{node}-{r}", ignore_errors=True)
    print(f"\nAPI start to /readyz 200, one uvicorn process, {a.events:,} events in history, {a.users:,} users, "
          f"{a.items:,} items, a served list every {a.served_every} events, {a.tail:,} events written after each stop "
          f"{'(and a new list for each of their users) ' if a.list_tail else ''}"
          f"(medians of {a.rounds} rounds; 1-minute load average at each ready: {', '.join(uptimes)})\n")
    readers = sorted({key for vals in rows.values() for v in vals for key in v if key.endswith("_s") and key != "ready_s"})
    print("| start | ready after (s) | RSS when ready (MB) | " + " | ".join(f"{x[:-2]} caught up (s)" for x in readers) + " |")
    print("|---|--:|--:|" + "--:|" * len(readers))
    for name, vals in rows.items():
        cells = [f"{statistics.median(float(v.get(x, 0.0)) for v in vals):.1f}" for x in readers]  # type: ignore[arg-type]
        print(f"| {name} | {statistics.median(float(v['ready_s']) for v in vals):.1f} | "  # type: ignore[arg-type]
              f"{statistics.median(float(v['rss_mb']) for v in vals):.0f} | " + " | ".join(cells) + " |")  # type: ignore[arg-type]
    print(f"\ncommand: .venv/bin/python bench/startup.py --events {a.events} --users {a.users} --items {a.items} "
          f"--rounds {a.rounds} --served-every {a.served_every} --tail {a.tail} --list-tail {a.list_tail}")


if __name__ == "__main__":
    main()
