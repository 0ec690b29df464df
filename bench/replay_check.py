"""Real-data check (run by .ci/run after the tests): replay a slice of a real log into the platform.

Starts a Tansu broker, the Bytewax flow and the API; trains the co-visitation model on the
slice; replays it into ``events``; waits until the flow has applied everything; then asks the
API for recommendations for a sample of replayed users and checks they are served from the
model (not the popular fallback). Prints one JSON line; exits 1 on failure.

    .venv/bin/python bench/replay_check.py --data ../shared/datasets/rsc15_100k_sessionrec \
        --format sessionrec --limit 20000

With ``--format online_retail`` it also checks that no non-product code (postage, fees,
adjustments: the cleaning rule) appears in any served list: the sampled users' top-20, the
top-20 of users who bought such a code in the raw log, the popular list, and similar items of the
50 most popular products; and prints the cleaning counts.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from operators.broker import LocalBroker  # noqa: E402
from operators.retail_cleaning import CleaningReport, read_retail_table  # noqa: E402
from operators.training import train_covisitation  # noqa: E402
from simulators.producer import EventProducer  # noqa: E402
from simulators.replay import read_replay, resolve_log_path  # noqa: E402
from tests.harness import ApiServer, FlowProcess, make_settings, wait_caught_up  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--format", default="sessionrec", choices=["sessionrec", "srgnn", "online_retail"])
    ap.add_argument("--limit", type=int, default=20000)
    ap.add_argument("--sample", type=int, default=300)
    args = ap.parse_args()
    path = resolve_log_path(args.data, args.format)
    report = CleaningReport()
    events = list(read_replay(path, args.format, limit=args.limit, report=report))
    non_product = set(report.non_product_codes)
    raw_buyers: set[str] = set()
    if args.format == "online_retail":  # users who bought a non-product code in the raw log (POST buyers, ...)
        t = read_retail_table(path)
        for code, cust in zip(t.column("StockCode").to_pylist(), t.column("CustomerID").to_pylist(), strict=True):
            if code in non_product and cust is not None:
                raw_buyers.add(str(int(cust)))
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        s = make_settings(broker.bootstrap, Path(tmp))
        t0 = time.perf_counter()
        train_covisitation(events, s)
        train_s = time.perf_counter() - t0
        flow = FlowProcess(s, Path(tmp) / "flow.toml", workers=2).start()
        try:
            with ApiServer(s) as api, EventProducer.from_settings(s.kafka) as p:
                t0 = time.perf_counter()
                p.send_events(events, progress=True)
                wait_caught_up(s, flow, timeout_s=300)
                apply_s = time.perf_counter() - t0
                time.sleep(1.0)
                users = sorted({e.user_id for e in events})
                sample = random.Random(0).sample(users, min(args.sample, len(users)))
                buyers = sorted(raw_buyers & set(users))[: args.sample]
                with httpx.Client(base_url=api.url, timeout=10) as c:
                    bodies = [c.get("/v1/recommendations", params={"user_id": u, "n": 20}).json() for u in sample]
                    lists = [[i["item_id"] for i in b["items"]] for b in bodies]
                    lists += [[i["item_id"] for i in c.get("/v1/recommendations", params={"user_id": u, "n": 20})
                               .json()["items"]] for u in buyers]
                    lists.append([i["item_id"] for i in c.get("/v1/recommendations", params={"n": 100}).json()["items"]])
                    c.put("/v1/campaigns/similar", json={"scenario": "similar", "n": 20})
                    top = lists[-1][:50]
                    lists += [[i["item_id"] for i in c.get("/v1/recommendations", params={
                        "campaign": "similar", "item_id": item}).json()["items"]] for item in top]
        finally:
            flow.stop()
    served = sum(b["source"] != "popular" and len(b["items"]) > 0 for b in bodies)
    result = {"check": "replay", "file": str(path), "events": len(events), "users": len(users),
              "sampled": len(sample), "served_from_model": served, "train_s": round(train_s, 2),
              "replay_apply_s": round(apply_s, 2)}
    bad = sum(any(i in non_product for i in lst) for lst in lists)
    if args.format == "online_retail":
        result |= {"cleaning": report.__dict__, "lists_checked": len(lists), "non_product_buyers_checked": len(buyers),
                   "lists_with_a_non_product_code": bad}
    print(json.dumps(result))
    return 0 if served >= 0.95 * len(sample) and bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
