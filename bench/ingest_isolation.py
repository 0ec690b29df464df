"""Does one bulk client stall everyone else? GET latency while another client posts 1,000-event batches.

Starts a local broker and the API over HTTP (keys required, limiter off), then for ``--seconds``:
one thread posts batches of 1,000 valid events back to back while another sends
``GET /v1/recommendations`` one at a time and records its latency. Run once with big batches
validated on a worker thread (the default, ``api/events.py``) and once inline on the event loop
(the old path), ``--rounds`` times each; prints medians of p50 / p99 / max GET latency and the
batches accepted. Also shows that a 60,000-event body (4.8 MB, the issue's case) is refused
before it is parsed.

Run: ``.venv/bin/python bench/ingest_isolation.py --seconds 10 --rounds 3``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import api.events as events_module  # noqa: E402
from api.app import create_app  # noqa: E402
from api.http_protocol import server_config  # noqa: E402
from operators.broker import LocalBroker, free_port, wait_for_port  # noqa: E402
from operators.kafka import ensure_topics, platform_topics  # noqa: E402
from operators.settings import Settings  # noqa: E402

KEY = "bench-client-key-0123456789"


def _round(url: str, seconds: float) -> dict[str, float]:
    batch = orjson.dumps([{"type": "view", "user_id": f"u{i % 500}", "item_id": f"i{i % 2000}"}
                          for i in range(1000)])
    stop = threading.Event()
    posted = [0]

    def post() -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY, "content-type": "application/json"},
                          timeout=30) as c:
            while not stop.is_set():
                if c.post("/v1/events", content=batch).status_code == 202:
                    posted[0] += 1

    t = threading.Thread(target=post)
    lat: list[float] = []
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as c:
        t.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            c.get("/v1/recommendations", params={"user_id": "u1", "n": 10})
            lat.append(time.perf_counter() - t0)
        stop.set()
        t.join()
    a = np.array(lat) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()),
            "gets": len(lat), "batches": posted[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with LocalBroker(free_port()) as broker, tempfile.TemporaryDirectory() as tmp:
        s = Settings(kafka={"brokers": broker.bootstrap, "partitions": 2},
                     stream={"state_dir": Path(tmp) / "state", "model_dir": Path(tmp) / "models"},
                     api={"client_keys": [KEY], "admin_keys": ["bench-admin-key-0123456789"], "rate_limit": None})
        ensure_topics(s.kafka.brokers, platform_topics(s))
        port = free_port()
        server = uvicorn.Server(server_config(create_app(s), s.api, host="127.0.0.1", port=port, log_level="error"))
        th = threading.Thread(target=server.run, daemon=True)
        th.start()
        wait_for_port("127.0.0.1", port, 30)
        url = f"http://127.0.0.1:{port}"
        big = b"[" + b",".join([b'{"type":"view","user_id":"u1","item_id":"i1","ts":1}'] * 60_000) + b"]"
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/v1/events", content=big, headers={"X-API-Key": KEY}, timeout=30)
        print(f"60,000 events ({len(big) / 1e6:.1f} MB): {r.status_code} in {1000 * (time.perf_counter() - t0):.0f} ms "
              f"({r.json()['error']['reason']})")
        results: dict[str, list[dict[str, float]]] = {"worker thread (default)": [], "inline (old path)": []}
        default = events_module._INLINE_EVENTS
        for _ in range(args.rounds):
            for name in results:
                events_module._INLINE_EVENTS = default if name.startswith("worker") else 10**9
                results[name].append(_round(url, args.seconds))
        events_module._INLINE_EVENTS = default
        server.should_exit = True
        th.join(10)
    print(f"\nGET /v1/recommendations while another client posts 1,000-event batches "
          f"({args.rounds} rounds of {args.seconds:g} s, medians)")
    print(f"{'batches validated':<26}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'GETs':>8}{'batches':>9}")
    for name, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"{name:<26}{med['p50_ms']:>9.1f}{med['p99_ms']:>9.1f}{med['max_ms']:>9.1f}{med['gets']:>8.0f}"
              f"{med['batches']:>9.0f}")


if __name__ == "__main__":
    main()
