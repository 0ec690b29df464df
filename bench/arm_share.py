"""Share of campaign list items that come from the arm (not the fallback) under a selective filter, per scenario.

    .venv/bin/python bench/arm_share.py [--items 2000] [--users 300] [--requests 150] [--n 10] [--seed 7]

One platform run on the synthetic shop (Tansu broker, the Bytewax flow, a co-visitation model
trained on the shop's history, the catalog with vectors, a live stream of events), then two API
servers over the same topics and model: ``before`` with ``[api] fill_from_model = false`` (the
arm's over-fetched candidates are filtered, the fallback tops up: the old path) and ``after``
(the filtered catalog is scored with the arm's model before the fallback). For every scenario
one campaign with a selective filter (``category == $cat AND price < $max_price``; ``similar`` and
``visual`` use the current item's category: the README's ``pdp``), ``--requests`` requests with
real users, items, carts and sessions of the stream, ``n = --n``.

Columns: ``arm share`` = items from the arm / items served, over all requests; ``eligible`` = the
same over the requests whose filtered catalog holds >= n items the arm can score (in the model
for model scenarios, with events in the window for ``top``, with a vector for ``visual``, the
user's recent items for ``last_seen``; the request's own items excluded), computed here from the
catalog independently of the API; ``reasons`` = the ``reason`` codes of the ``after`` responses.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.broker import LocalBroker  # noqa: E402
from operators.model_version import latest_version_path, load_version  # noqa: E402
from operators.score import recent_items  # noqa: E402
from operators.training import train_model  # noqa: E402
from simulators.producer import EventProducer  # noqa: E402
from simulators.shop import SyntheticShop  # noqa: E402
from tests.harness import ApiServer, FlowProcess, make_settings, wait_caught_up  # noqa: E402

SCENARIOS = ("personalized", "session", "similar", "visual", "cart", "top", "last_seen", "popular")
ITEM_FILTER = "category == context.item.category AND price < $max_price"
PARAM_FILTER = "category == $cat AND price < $max_price"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--requests", type=int, default=150)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", default="covisit", help="Model of the version the arms use (covisit, emde, ...)")
    ap.add_argument("--train-param", action="append", default=[], metavar="KEY=VALUE",
                    help="Training parameter of the model (e.g. max_train_seconds=60), repeatable")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        s = make_settings(broker.bootstrap, tmp, partitions=2)
        shop = SyntheticShop(n_items=args.items, n_users=args.users, seed=args.seed, start_ts=time.time() - 2 * 86400)
        params = {k: float(v) if v.replace(".", "", 1).isdigit() else v
                  for k, v in (x.split("=", 1) for x in args.train_param)}
        train_model(shop.history(40_000), s, args.model, **params)
        version = load_version(latest_version_path(s.stream.model_dir))  # type: ignore[arg-type]
        in_model = set(version.item_ids)
        live = list(shop.events(6000, rate_per_s=50.0))
        catalog = {d["item_id"]: d for d in shop.catalog()}
        weights = {t.name: t.weight for t in s.event_types}
        flow = FlowProcess(s, tmp / "flow.toml", workers=1).start()
        try:
            with EventProducer.from_settings(s.kafka) as producer:
                producer.send_catalog(catalog.values())
                producer.send_events(live, progress=False)
            wait_caught_up(s, flow, timeout_s=300)
            servers = {}
            for name, fill in (("before", False), ("after", True)):
                cfg = s.model_copy(update={"api": s.api.model_copy(update={"fill_from_model": fill,
                                                                              "state_dir": tmp / f"api-{name}"})})
                servers[name] = ApiServer(cfg).__enter__()
            try:
                rows = _measure(servers, args, rng, live, catalog, in_model, weights)
            finally:
                for srv in servers.values():
                    srv.__exit__(None, None, None)
        finally:
            flow.stop()
    cmd = "  .venv/bin/python bench/arm_share.py " + " ".join(sys.argv[1:])
    print(f"\nArm share under a selective filter ({args.items} items, {args.users} users, n = {args.n}, "
          f"{args.requests} requests per scenario; model {args.model})\n{cmd}\n")
    print("| scenario | filter | filtered catalog (median items) | eligible requests | arm share before | "
          "arm share after | eligible: before | eligible: after | reasons (after) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | `{r['filter']}` | {r['filtered']} | {r['eligible']}/{r['requests']} | "
              f"{r['before']:.1%} | {r['after']:.1%} | {r['el_before']} | {r['el_after']} | {r['reasons']} |")


def _share(counts: list[int]) -> str:
    """Items from the arm / items served, over the eligible requests."""
    return f"{counts[2] / counts[3]:.1%}" if counts[3] else "–"


def _measure(servers, args, rng, live, catalog, in_model, weights):  # type: ignore[no-untyped-def]
    n = args.n
    clients = {k: httpx.Client(base_url=v.url, timeout=30) for k, v in servers.items()}
    deadline = time.monotonic() + 60
    for c in clients.values():
        while c.get("/healthz").json().get("catalog_items", 0) < len(catalog) and time.monotonic() < deadline:
            time.sleep(0.2)
    users = sorted({e.user_id for e in live})
    items_by_user: dict[str, list[str]] = collections.defaultdict(list)
    for e in live:
        items_by_user[e.user_id].extend(e.item_ids())
    carts = [list(dict.fromkeys(e.item_id for e in live if e.user_id == u and e.type == "add_to_cart" and e.item_id))[:3]
             for u in users]
    carts = [x for x in carts if x]
    touched = [i for e in live for i in e.item_ids() if i in catalog and i in in_model]
    windowed = {i for e in live if weights.get(e.type, 0) > 0 for i in e.item_ids()}
    categories = sorted({d["category"] for d in catalog.values()})
    rows = []
    for scenario in SCENARIOS:
        filt = ITEM_FILTER if scenario in ("similar", "visual") else PARAM_FILTER
        for c in clients.values():
            r = c.put(f"/v1/campaigns/share-{scenario}", json={"scenario": scenario, "n": n, "filter": filt})
            assert r.status_code in (200, 201), r.text
        got = {k: [0, 0, 0, 0] for k in clients}  # from_arm, served, eligible from_arm, eligible served
        reasons: collections.Counter[str] = collections.Counter()
        sizes, n_eligible = [], 0
        for _ in range(args.requests):
            user = rng.choice(users)
            item = rng.choice(touched)
            cat = catalog[item]["category"] if scenario in ("similar", "visual") else rng.choice(categories)
            max_price = rng.choice([60.0, 100.0, 200.0])
            q: dict[str, object] = {"campaign": f"share-{scenario}", "user_id": user, "max_price": max_price}
            exclude: set[str] = set()
            if scenario in ("similar", "visual"):
                q["item_id"] = item
                exclude = {item}
            else:
                q["cat"] = cat
            if scenario == "session":
                sess = items_by_user[user][-5:] or [item]
                q["session"] = ",".join(dict.fromkeys(sess))
                exclude = set(sess)
            if scenario == "cart":
                cart = rng.choice(carts)
                q["cart"] = ",".join(cart)
                exclude = set(cart)
            selected = {i for i, d in catalog.items() if d["category"] == cat and d["price"] < max_price} - exclude
            scorable = {"top": selected & windowed, "visual": selected, "popular": selected,
                        "last_seen": selected & set(recent_items(items_by_user[user], 20))}.get(
                scenario, selected & in_model)
            if scenario == "personalized" and not items_by_user[user]:
                scorable = set()
            eligible = len(scorable) >= n
            sizes.append(len(selected))
            n_eligible += eligible
            for k, c in clients.items():
                r = c.get("/v1/recommendations", params=q)
                assert r.status_code == 200, r.text
                body = r.json()
                got[k][0] += body["from_arm"]
                got[k][1] += n
                if eligible:
                    got[k][2] += body["from_arm"]
                    got[k][3] += n
                if k == "after" and body.get("reason"):
                    reasons[body["reason"]] += 1

        sizes.sort()
        rows.append({"scenario": scenario, "filter": filt, "filtered": sizes[len(sizes) // 2],
                     "requests": args.requests, "eligible": n_eligible,
                     "before": got["before"][0] / got["before"][1], "after": got["after"][0] / got["after"][1],
                     "el_before": _share(got["before"]), "el_after": _share(got["after"]),
                     "reasons": ", ".join(f"{k} {v}" for k, v in reasons.most_common()) or "–"})
        print(rows[-1], flush=True)
    for c in clients.values():
        c.close()
    return rows


if __name__ == "__main__":
    main()
