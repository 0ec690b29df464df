"""Requests whose campaign filter selects a few items scattered through the arm's ranking: latency per request.

    .venv/bin/python bench/selective_filter.py [--items 1000000] [--requests 12] [--baseline-tree DIR]

A client holding the public key chooses a request parameter such as ``$max_price``; a low one makes the
filter ``price < $max_price`` select a few items spread over the whole catalog. When the arm's own
candidates do not hold them, ``api.serving._from_model`` fills the list from the arm's whole ranking.
This bench measures what one such request costs on a real API process.

It uses one local Tansu broker and the catalog and co-visitation model of ``bench.scaled_shop`` (from
100,000 items on). Then, for each source tree (this one, and ``--baseline-tree`` if given, e.g. a
``git worktree`` of an older commit), it starts one uvicorn worker on that tree. Two campaigns run
against it, a ``similar`` arm and a ``visual`` arm, each with the filter ``price < $max_price``.

For each arm, ``$max_price`` is set just above the k-th cheapest price, so the filter selects k items
(k = 0, 3, 30 and 1,000). ``--requests`` requests are made, each for another current item, one at a time
over HTTP. The bench prints the median and the maximum wall time per request, a table, the command, and
a last JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import tomli_w

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api import _settings  # noqa: E402
from bench.scaled_shop import BenchData  # noqa: E402
from operators.broker import LocalBroker, free_port, wait_for_port  # noqa: E402
from simulators.producer import EventProducer  # noqa: E402

SELECTED = (0, 3, 30, 1000)
ARMS = ("similar", "visual")


def _measure(tree: Path, config: Path, data: BenchData, cheapest: np.ndarray, requests: int) -> dict[str, list[float]]:
    """Median ms per request for each (arm, k selected) on one API worker started from ``tree``."""
    port = free_port()
    env = dict(os.environ, FUSIONREC_CONFIG=str(config), PYTHONPATH=str(tree))
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1", "--log-level", "warning"],
                              env=env, cwd=tree, start_new_session=True)
    out: dict[str, list[float]] = {}
    try:
        wait_for_port("127.0.0.1", port, 60)
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        deadline = time.monotonic() + 60 + data.n_items / 2000
        while c.get("/healthz").json()["catalog_items"] < data.n_items:
            if time.monotonic() > deadline:
                raise TimeoutError("the catalog was not ready")
            time.sleep(0.5)
        for arm in ARMS:
            r = c.put(f"/v1/campaigns/sel-{arm}", json={"scenario": "similar", "filter": "price < $max_price", "n": 10,
                                                        "arms": [{"name": arm, "strategy": arm}]})
            assert r.status_code in (200, 201), r.text
        for k in SELECTED:
            max_price = float(cheapest[k]) if k else float(cheapest[0])  # price < the k-th cheapest: k items
            for arm in ARMS:
                ms, got = [], 0
                for q in range(requests + 1):  # the first one warms the arm up (not counted)
                    t0 = time.perf_counter()
                    r = c.get("/v1/recommendations", params={"campaign": f"sel-{arm}", "max_price": max_price,
                                                             "item_id": data.item_id((1000 + 7919 * q) % data.n_items)})
                    if q:
                        ms.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200, r.text
                    got = len(r.json()["items"])
                out[f"{arm} k={k}"] = [statistics.median(ms), max(ms), float(got)]
                print(f"{tree}: {arm}, filter selects {k}: median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms, "
                      f"{got} items", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000, help="catalog items (>= 100,000: bench.scaled_shop)")
    ap.add_argument("--requests", type=int, default=12, help="requests per (arm, k)")
    ap.add_argument("--baseline-tree", type=Path, default=None, help="another source tree to measure the same way")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    trees = [ROOT] + ([a.baseline_tree.resolve()] if a.baseline_tree else [])
    tmp = Path(tempfile.mkdtemp(prefix="bench-selective-"))
    results: dict[str, dict[str, list[float]]] = {}
    with LocalBroker() as broker:
        s = _settings(broker.bootstrap, tmp)
        data = BenchData.build(a.items, a.seed, s)
        records = list(data.records)
        cheapest = np.sort(np.array([r["price"] for r in records], dtype=np.float64))
        with EventProducer.from_settings(s.kafka) as producer:
            producer.send_catalog(records)
        del records
        config = tmp / "fusionrec.toml"
        config.write_text(tomli_w.dumps(s.model_dump(mode="json", exclude_none=True)))
        for tree in trees:
            results[str(tree)] = _measure(tree, config, data, cheapest, a.requests)
    print(f"\n{a.items:,} items, one API worker, {a.requests} requests per row (median / max ms per request)\n")
    print("| arm | items the filter selects | " + " | ".join(f"`{Path(t).name}`" for t in results) + " |")
    print("|---|--:|" + "--:|" * len(results))
    for k in SELECTED:
        for arm in ARMS:
            cells = " | ".join(f"{r[f'{arm} k={k}'][0]:.1f} / {r[f'{arm} k={k}'][1]:.1f}" for r in results.values())
            print(f"| {arm} | {k:,} | {cells} |")
    print("\ncommand: .venv/bin/python bench/selective_filter.py " + " ".join(sys.argv[1:]))
    print(json.dumps({"items": a.items, "requests": a.requests, "median_ms": {t: {k: v[0] for k, v in r.items()}
                                                                            for t, r in results.items()}}))


if __name__ == "__main__":
    main()
