"""CPU per campaign request of the API in one process, without HTTP: the handler plus the fold of its served list.

    .venv/bin/python bench/api_cpu.py [--tree PATH] [--items 5000] [--requests 20000] [--rounds 3] [--fresh]

``bench/api.py`` measures the served API under ``wrk`` (req/s, latency, and the server's CPU per
request), but on a shared 2-core box the other jobs move even its CPU per request by ±20 %. This
bench takes the machine's load out as far as it can: the same app (``create_app``, the same
campaign, filter, booster, arms and catalog as ``bench/api.py``; feedback reader on) is called
directly through ASGI on one event loop, one request at a time, with the loop free between
requests (the feedback fold drains there, as in the server). Per round it counts the process's
CPU time (``time.process_time``: the loop, the reader thread and librdkafka's threads) from the
first request until every served list of the round has been folded back, divided by the
requests: ``cpu_us``; ``net_cpu_us`` subtracts what the process spends idle over as long (its
background threads' polling, measured for 3 s before the rounds: the part that grows with wall
time, i.e. with the machine's load, not with requests); and the handler's own time per request (``handler_us`` p50 / p99 / max,
wall clock inside ``app(...)``). One process folds each list once (a server with ``w`` workers
folds it ``w`` times); no HTTP parsing, no socket writes.

``--items`` sizes the catalog (from 100,000 on built by ``bench/scaled_shop.py``, always this
script's copy); ``--fresh`` draws new random items for every round, so a large catalog's caches
miss as they do under ``wrk``'s random items (by default the rounds repeat the warm-up's requests).
``--tree PATH`` measures the code of another checkout (a ``git worktree`` of an older commit) with
this script: side-by-side comparisons run both trees alternately from one file. Prints a table and
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _app_scope(query: bytes, method: str = "GET", path: str = "/v1/recommendations") -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query,
            "headers": [(b"host", b"bench"), (b"content-type", b"application/json")], "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000), "root_path": "", "state": {}}


async def _call(app: Any, scope: dict[str, Any], body: bytes = b"") -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _run(a: argparse.Namespace, settings: Any, n_items: int, item_id: Callable[[int], str]
               ) -> list[dict[str, float]]:
    import numpy as np

    from api.app import create_app
    from bench.api import BOOSTERS, FILTER  # the tree's own bench constants (the campaign of bench/api.py)

    app = create_app(settings)
    rounds: list[dict[str, float]] = []
    async with app.router.lifespan_context(app):
        svc = app.state.services
        deadline = time.monotonic() + 60
        deadline += n_items / 2000  # 1M items: ~9 min at most
        while svc.catalog_view.index.capacity < n_items and time.monotonic() < deadline:
            svc.catalog_view.sync()
            await asyncio.sleep(0.1)
        body = {"scenario": "similar", "filter": FILTER, "boosters": BOOSTERS, "n": 10,
                "arms": [{"name": "covisit", "strategy": "similar"}, {"name": "visual", "strategy": "visual"}]}
        status, out = await _call(app, _app_scope(b"", "PUT", "/v1/campaigns/pdp"), json.dumps(body).encode())
        assert status in (200, 201), out
        rng = np.random.default_rng(a.seed)
        def draw() -> list[bytes]:
            return [f"campaign=pdp&item_id={item_id(int(i))}&max_price=200".encode()
                    for i in rng.integers(n_items, size=a.requests)]

        queries = draw()
        for q in queries:  # warm-up, the same requests: the rounds measure the steady state (caches filled)
            status, out = await _call(app, _app_scope(q))
            assert status == 200, out
            await asyncio.sleep(0)
        await _wait_folded(svc)
        c0, w0 = time.process_time(), time.monotonic()
        await asyncio.sleep(3.0)  # idle: the readers' and clients' background threads poll anyway
        idle_per_s = (time.process_time() - c0) / (time.monotonic() - w0)
        profiler = None
        if a.profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        for _ in range(a.rounds):
            if a.fresh:
                queries = draw()
            await _wait_folded(svc)
            served0 = svc.fold.n_served
            handler: list[float] = []
            cpu0, wall0 = time.process_time(), time.monotonic()
            for q in queries:
                t0 = time.perf_counter()
                status, out = await _call(app, _app_scope(q))
                handler.append(time.perf_counter() - t0)
                assert status == 200, out
                await asyncio.sleep(0)  # the loop runs the fold between requests, as in the server
            await _wait_folded(svc, served0 + len(queries))
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            h = np.array(handler) * 1e6
            rounds.append({"cpu_us": cpu / len(queries) * 1e6,
                           "net_cpu_us": (cpu - idle_per_s * wall) / len(queries) * 1e6, "idle_cpu_per_s": idle_per_s,
                           "handler_p50_us": float(np.percentile(h, 50)),
                           "handler_p99_us": float(np.percentile(h, 99)), "handler_max_us": float(h.max())})
            print(f"round: {rounds[-1]}", flush=True)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(a.profile)
    return rounds


async def _wait_folded(svc: Any, n_served: int | None = None, timeout_s: float = 60.0) -> None:
    """Until the reader has folded ``n_served`` lists (None: until its queue is empty)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reader = svc.reader
        if (svc.fold.n_served >= n_served) if n_served is not None else not reader._queue:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"lists not folded within {timeout_s} s: {svc.fold.n_served} of {n_served}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout whose code is measured (default: this one)")
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true",
                    help="each round draws new random items (caches as cold as wrk's random items make them) "
                         "instead of repeating the warm-up's requests")
    ap.add_argument("--profile", type=Path, default=None,
                    help="write a cProfile of the rounds (the event loop's thread) to this file")
    a = ap.parse_args()
    tree = a.tree.resolve()
    sys.path.insert(0, str(tree))
    import uvloop

    from bench.api import _settings
    from operators.broker import LocalBroker
    from simulators.producer import EventProducer

    # the data of this script's tree (bench/scaled_shop.py), built with the measured tree's modules
    spec = importlib.util.spec_from_file_location("_bench_data_of_script", ROOT / "bench" / "scaled_shop.py")
    assert spec is not None and spec.loader is not None
    bench_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_data)

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-cpu-"))
    try:
        with LocalBroker() as broker:
            s = _settings(broker.bootstrap, tmp)
            data = bench_data.BenchData.build(a.items, a.seed, s)
            with EventProducer.from_settings(s.kafka) as producer:
                producer.send_catalog(data.records)
            rounds = uvloop.run(_run(a, s, data.n_items, data.item_id))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"\nAPI in one process (ASGI, no HTTP), {a.items:,} items, {a.requests:,} requests x {a.rounds} rounds"
          f"{' (new random items each round)' if a.fresh else ''}, "
          f"tree {tree}\n")
    print("| CPU us / request (median) | rounds | net of idle polling (median) | rounds "
          "| handler p50 / p99 / max us (median) |")
    print("|--:|---|--:|---|--:|")
    per_round = ", ".join(f"{r['cpu_us']:.1f}" for r in rounds)
    net_rounds = ", ".join(f"{r['net_cpu_us']:.1f}" for r in rounds)
    print(f"| {med['cpu_us']:.1f} | {per_round} | {med['net_cpu_us']:.1f} | {net_rounds} | "
          f"{med['handler_p50_us']:.1f} / {med['handler_p99_us']:.1f} / {med['handler_max_us']:.0f} |")
    print(f"command: .venv/bin/python bench/api_cpu.py {' '.join(sys.argv[1:])}".rstrip())
    print(json.dumps({"bench": "api_cpu", "tree": str(tree), "items": a.items, "fresh": a.fresh, **{k: round(v, 2) for k, v in med.items()},
                      "cpu_us_rounds": [round(r["cpu_us"], 2) for r in rounds],
                      "net_cpu_us_rounds": [round(r["net_cpu_us"], 2) for r in rounds]}))


if __name__ == "__main__":
    main()
