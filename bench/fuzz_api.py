"""Extended conformance fuzz of the API: schemathesis from ``/openapi.json`` with ``--checks all``.

Starts a local broker, the topics, a small catalog and the API over HTTP (keys required, the
admin key sent: it holds both scopes), creates two campaigns so requests reach the campaign path,
the IQL filter and the optimizer, then runs the schemathesis CLI with ``--max-examples N`` per
operation (every phase: examples, coverage, fuzzing, stateful) and every check, none excluded
(``bench/schemathesis.toml``), and prints its summary. ``bench/fuzz_hooks.py`` teaches the generator
the two rules of a campaign body JSON Schema cannot state (IQL formats over the catalog's
attributes, unique arm names). Exit code 0 only when schemathesis found no failure (no 5xx, every
conformance check passes).

Run: ``.venv/bin/python bench/fuzz_api.py --max-examples 1000`` (about 30-60 min on 2 cores);
``tests/api/test_fuzz.py::test_extended_conformance`` (marker ``slow``) runs it with 1,000.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from api.http_protocol import server_config  # noqa: E402
from operators.analytics.topic import (  # noqa: E402
    CounterRow,
    GroupRow,
    Record,
    TopItemsRow,
    encode_record,
    record_key,
)
from operators.broker import LocalBroker, free_port, wait_for_port  # noqa: E402
from operators.kafka import ensure_topics, make_producer, platform_topics  # noqa: E402
from operators.settings import Settings  # noqa: E402
from simulators.producer import EventProducer  # noqa: E402
from simulators.shop import SyntheticShop  # noqa: E402

ADMIN = "fuzz-admin-key-0123456789"
CAMPAIGNS = {
    "home": {"scenario": "personalized", "filter": "price < $max_price"},
    "pdp": {"scenario": "similar", "arms": [{"name": "a", "strategy": "similar"}, {"name": "b", "strategy": "visual"}]},
}


def _seed_analytics(s: Settings, c: httpx.Client) -> None:
    """Two days of hourly analytics rows for each campaign (as the analytics flow writes them), so
    ``GET /v1/analytics/campaigns/{id}`` runs its report (ranges, buckets, uplift), not only a 404."""
    now = int(time.time()) // 3600 * 3600
    p = make_producer(s.kafka.brokers)
    for cid in CAMPAIGNS:
        rows: list[Record] = [TopItemsRow(0, cid, [("i000001", 9), ("i000002", 4)], [("i000001", 2)])]
        for h in range(48):
            bucket = now - h * 3600
            rows += [CounterRow(0, cid, arm, arm, bucket, [20.0, 18.0, 3.0, 2.0 + h % 3, 1.0, 0.0, 1.0, 0.0, 12.5])
                     for arm in ("a", "b")]
            rows += [GroupRow(0, cid, g, bucket, [5.0, 3.0, 2.0, 1.0 + h % 2, 2.0, 25.0, 300.0])
                     for g in ("exposed", "control")]
        for r in rows:
            p.produce(s.analytics.topic, key=record_key(r), value=encode_record(r))
    assert p.flush(30) == 0
    deadline = time.monotonic() + 30
    while any(c.get(f"/v1/analytics/campaigns/{cid}").status_code != 200 for cid in CAMPAIGNS):
        if time.monotonic() > deadline:
            raise RuntimeError("the seeded analytics rows did not reach the API")
        time.sleep(0.2)


def run(max_examples: int, workers: int = 1, seed: int = 0, extra: list[str] | None = None) -> int:
    """Fuzz a fresh API; returns schemathesis' exit code (0 = no failure)."""
    with LocalBroker(free_port()) as broker, tempfile.TemporaryDirectory() as tmp:
        s = Settings(kafka={"brokers": broker.bootstrap, "partitions": 1},
                     stream={"state_dir": Path(tmp) / "state", "model_dir": Path(tmp) / "models"},
                     # the limiter would answer most requests 429 and hide the endpoints (it has its own test)
                     api={"admin_keys": [ADMIN], "client_keys": ["fuzz-client-key-0123456789"], "rate_limit": None})
        ensure_topics(s.kafka.brokers, platform_topics(s))
        with EventProducer.from_settings(s.kafka) as producer:
            producer.send_catalog(SyntheticShop(n_items=50, n_users=5, seed=2).catalog())
        port = free_port()
        server = uvicorn.Server(server_config(create_app(s), s.api, host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_for_port("127.0.0.1", port, 30)
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, headers={"X-API-Key": ADMIN}, timeout=10) as c:
                deadline = time.monotonic() + 30
                while c.get("/healthz").json().get("catalog_items", 0) < 50 and time.monotonic() < deadline:
                    time.sleep(0.1)
                for cid, body in CAMPAIGNS.items():
                    c.put(f"/v1/campaigns/{cid}", json=body).raise_for_status()
                attributes = c.get("/v1/catalog").json()["attributes"]
                _seed_analytics(s, c)
            # the IQL formats and the unique arm names, for the generator (bench/fuzz_hooks.py)
            env = dict(os.environ, SCHEMATHESIS_HOOKS=str(Path(__file__).with_name("fuzz_hooks.py")),
                       FUZZ_CATALOG_ATTRIBUTES=json.dumps(attributes),
                       FUZZ_EXISTING_IDS=json.dumps({"campaign_id": list(CAMPAIGNS),
                                                     "item_id": [f"i{i:06d}" for i in range(0, 50, 7)]}))
            cmd = [str(Path(sys.executable).with_name("schemathesis")), "--config-file",
                   str(Path(__file__).with_name("schemathesis.toml")), "run", f"{base}/openapi.json", "--checks", "all",
                   "--max-examples", str(max_examples), "--header", f"X-API-Key: {ADMIN}",
                   "--workers", str(workers), "--seed", str(seed), "--request-timeout", "20",
                   "--suppress-health-check", "all", "--output-sanitize", "false", *(extra or [])]
            print("$", " ".join(cmd), flush=True)
            return subprocess.call(cmd, cwd=tmp, env=env)  # schemathesis keeps its cache in the working directory
        finally:
            server.should_exit = True
            thread.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-examples", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args, extra = ap.parse_known_args()
    sys.exit(run(args.max_examples, args.workers, args.seed, extra))


if __name__ == "__main__":
    main()
