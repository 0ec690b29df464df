"""HTTP load benchmark: campaign recommendations with an IQL filter vs a trivial JSON endpoint, same app, same run.

    .venv/bin/python bench/api.py [--quick] [--items 5000] [--duration-s 20] [--connections 32] [--workers 2]
        [--ingest-rate 1000] [--rate-limit 1000000/second] [--rate 1000]

Starts a local Tansu broker, sends a synthetic catalog (with vectors) and a co-visitation model
trained on the synthetic shop, then runs the app under uvicorn with ``--workers`` processes
(uvloop + httptools) on loopback. The load generator is ``wrk`` (Debian package; one thread, a
fixed number of connections, a fixed duration: bounded), driven by a Lua script that picks a
random current item per request. Measured, alternating, ``--rounds`` times each:

* ``recommendations``: ``GET /v1/recommendations?campaign=pdp&item_id=<random>&max_price=<p>`` on a
  campaign ``similar`` (co-visitation ``similar_items``) with the filter
  ``category == context.item.category AND price < $max_price`` and a booster; the optimizer picks
  between two arms, and every served list is published as a ``rec_request`` event that both
  workers fold back (the full serving path, feedback reader included);
* ``trivial``: ``GET /healthz`` of the same app (a small JSON body, no work).

With ``--ingest-rate R`` the realtime flow runs too (one worker, the co-visitation model) while
synthetic events go into ``events`` at ``R`` per second for the whole measurement (issue 14's
condition); a probe thread then sends one event for a probe user every 0.5 s and polls that
user's list (on the same server wrk loads) until its ``last_event_ts`` shows the event: the
event -> visible latency, p50 / p99, with probes not visible within 10 s counted as misses.
``--rate-limit`` sets ``[api] rate_limit`` (default off); a limit above the offered load
measures what the limiter costs per request without answering 429. ``--rate R`` paces wrk's
connections to about ``R`` requests/s in all (exponential think times): the latency at a load the
server sustains, where the default (as fast as answered) measures it at saturation, where p99 is the
queue. Think times make a closed loop that sends less while the server stalls (coordinated
omission), so a paced p99 understates a stall's effect; the achieved req/s is printed.

Prints a table (best round of each, by throughput, and the median round), the command, and as the last
line one JSON object: ``rps``, ``p99_ms`` (recommendations), ``trivial_rps``, ``ratio`` (best rounds),
``median_ratio`` (recommendations / trivial req/s of adjacent rounds), ``cpu_ms`` / ``trivial_cpu_ms``
(the server's CPU per request: its processes' user + system time over a round / requests served;
on a shared machine it moves far less with other load than req/s does) (and ``visible_p50_ms`` /
``visible_p99_ms`` / ``visible_missed`` with ``--ingest-rate``).
Also printed and in the JSON line: ``loop_lag``, each worker's event-loop lag and collector pauses since
it started (``fusionrec_api_event_loop_lag_seconds`` and ``fusionrec_api_gc_pause_seconds`` of its
``/metrics``: wake-ups of a 10 ms sleeper late by more than 10 / 50 ms, collections over 20 ms by
generation); ``worker_rss_mb`` / ``worker_hwm_mb`` (VmRSS and peak VmHWM of
each uvicorn worker, read from /proc after the rounds) and the set-up times ``build_s`` (data and
model), ``send_s`` (catalog to the topic), ``catalog_ready_s`` (server start until ``/healthz``
counts every item), ``first_list_s`` (until 40 probe lists were answered). From ``SCALED_FROM``
(100,000) items on, the catalog, model and live events come from ``bench/scaled_shop.py``
(array operations: ``SyntheticShop`` takes hours to wire 1M items) and wrk draws item ids in Lua.
Targets (issue 5): >= 3,000 req/s, p99 <= 15 ms, >= 50 % of the trivial endpoint; (issue 14) the
same while the flow ingests 1,000 events/s, and event -> visible p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import tomli_w
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.scaled_shop import BenchData  # noqa: E402
from operators.broker import LocalBroker, free_port, wait_for_port  # noqa: E402
from operators.kafka import ensure_topics, platform_topics  # noqa: E402
from operators.scheduling import ONE_BOX_API_NICE  # noqa: E402
from operators.schema import Event, encode_event  # noqa: E402
from operators.settings import Settings  # noqa: E402
from simulators.producer import EventProducer  # noqa: E402
from tests.harness import FlowProcess, time_until_visible  # noqa: E402

FILTER = "category == context.item.category AND price < $max_price"
BOOSTERS = "BOOST 1.5 IF on_sale == true"

_LUA = """
local ids = {%s}
math.randomseed(%d)
request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("GET", "/v1/recommendations?campaign=pdp&item_id=" .. id .. "&max_price=200")
end
"""

_LUA_SCALED = """
math.randomseed(%d)
request = function()
  local id = string.format("i%%06d", math.random(0, %d))
  return wrk.format("GET", "/v1/recommendations?campaign=pdp&item_id=" .. id .. "&max_price=200")
end
"""
"""A catalog of ``bench.scaled_shop.SCALED_FROM`` items or more: ids made in Lua (a literal list of 1M ids is too big a chunk)."""

_DONE_LUA = """
done = function(summary, latency, requests)
  io.write(string.format("P999_US %d\\n", latency:percentile(99.9)))
end
"""
"""Appended to every wrk script: prints the 99.9th latency percentile (wrk's --latency stops at 99)."""

_PACED_LUA = """
delay = function()
  return -math.log(1 - math.random()) * %.3f
end
"""
"""Appended with ``--rate``: each connection waits an exponential think time (mean ``connections / rate``)
after each response, so the offered load is about ``rate`` when latency is well below the think time."""


def _settings(bootstrap: str, tmp: Path, feedback: bool = True, rate_limit: str = "") -> Settings:
    tag = uuid.uuid4().hex[:8]
    s = Settings(
        kafka={"brokers": bootstrap, "events_topic": f"events-{tag}", "served_topic": f"served-{tag}", "dead_topic": f"dead-{tag}",
               "topn_topic": f"topn-{tag}", "catalog_topic": f"catalog-{tag}", "item_links_topic": f"links-{tag}", "partitions": 2},
        stream={"state_dir": tmp / "state", "model_dir": tmp / "models", "serving_dir": tmp / "serving"},
        # a load bench on loopback: no rate limit ("" = off; None would be dropped from the TOML file and
        # the default 200/s would answer most requests 429)
        api={"state_dir": tmp / "api", "feedback": feedback, "require_keys": False, "rate_limit": rate_limit},
    )
    ensure_topics(s.kafka.brokers, platform_topics(s))
    return s


def _wrk(url: str, script: Path | None, duration_s: float, connections: int) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:.0f}s", "--latency", "--timeout", "2s"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    p999 = re.search(r"P999_US (\d+)", out)
    return {"rps": rps, "p50_ms": ms("50"), "p99_ms": ms("99"),
            "p999_ms": float(p999.group(1)) / 1000 if p999 else float("nan"), "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
            "socket_errors": 1.0 if errors else 0.0}


def _workers_rss_mb(server_pid: int) -> list[dict[str, float]]:
    """VmRSS and VmHWM (peak) in MB of each uvicorn worker: the server's child processes other than
    multiprocessing's resource tracker."""
    try:
        children = open(f"/proc/{server_pid}/task/{server_pid}/children").read().split()
    except OSError:
        return []
    out = []
    for pid in children:
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        if b"resource_tracker" in cmd:
            continue
        kb = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
        out.append({"pid": float(pid), "rss_mb": int(kb.get("VmRSS", 0)) / 1024, "hwm_mb": int(kb.get("VmHWM", 0)) / 1024})
    return out


def _buckets(families: dict[str, Metric], name: str, **labels: str) -> dict[float, float]:
    """Cumulative bucket counts ``{le: count}`` of one histogram of a parsed ``/metrics`` page (``labels``: which
    series, e.g. ``generation="1"``)."""
    fam = families.get(name)
    return {float(x.labels["le"]): x.value for x in (fam.samples if fam else [])
            if x.name.endswith("_bucket") and all(x.labels.get(k) == v for k, v in labels.items())}


def _above(buckets: dict[float, float], le: float) -> float:
    """Observations above the bucket bound ``le``."""
    return buckets.get(float("inf"), 0.0) - buckets.get(le, 0.0)


def _loop_lag_by_worker(url: str, scrapes: int = 16) -> list[dict[str, float]]:
    """Each worker's event-loop lag and collector pauses over its life (``/metrics`` of the worker a new
    connection reaches, told apart by ``process_start_time_seconds``; workers started in the same 10 ms
    merge): wake-ups of the 10 ms probe late by more than 10 / 50 ms, and collections longer than 20 ms by
    generation."""
    seen: dict[float, dict[str, float]] = {}
    for _ in range(scrapes):
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text)}
        start = families.get("process_start_time_seconds")
        lag = _buckets(families, "fusionrec_api_event_loop_lag_seconds")
        row = {"wakeups": lag.get(float("inf"), 0.0), "late_10ms": _above(lag, 0.01), "late_50ms": _above(lag, 0.05)}
        for gen in "012":
            row[f"gc{gen}_over_20ms"] = _above(_buckets(families, "fusionrec_api_gc_pause_seconds", generation=gen), 0.02)
        seen[start.samples[0].value if start else 0.0] = row
    return list(seen.values())


def _session_cpu_s(sid: int) -> float:
    """CPU seconds (user + system) so far of every process in session ``sid``: the API server and its
    workers (their Kafka client threads included). Per request it is the server's cost, which other
    load on a shared machine changes far less than it changes req/s."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Ingest:
    """The realtime flow plus a paced producer of synthetic events, and event -> visible probes.

    The load's events are generated and encoded before ``start`` (``rate`` per second for
    ``seconds``, stamped on that schedule from ``start`` on), so the bench process only hands
    bytes to librdkafka while it measures. ``start`` launches the flow and a thread producing them
    at ``rate`` per second until ``stop``; a second thread sends one event for one of 50 probe users
    (users of their own, so the load never touches them) every 0.5 s and polls ``url`` for that
    user's list until ``last_event_ts`` reaches the event's time (10 s at most: a miss).
    """

    def __init__(self, settings: Settings, tmp: Path, item_id: Callable[[int], str], n_items: int,
                 events: list[Event], rate: float, url: str) -> None:
        self.settings, self.rate, self.url = settings, rate, url
        self.flow = FlowProcess(settings, tmp / "flow.toml")
        self.stop_event = threading.Event()
        self.visible_ms: list[float] = []
        self.missed = 0
        self.sent = 0
        self.item_id, self.n_items = item_id, n_items
        start_ts = time.time() + 5.0
        self.load = [(e.user_id.encode(), encode_event(msgspec.structs.replace(e, ts=start_ts + i / rate)))
                     for i, e in enumerate(events)]
        self.threads = [threading.Thread(target=self._produce, daemon=True),
                        threading.Thread(target=self._probe, daemon=True)]

    def start(self) -> Ingest:
        self.flow.start()
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
        self.flow.stop()

    def reset(self) -> None:
        """Forget the probes so far (the next measurement's own)."""
        self.visible_ms, self.missed = [], 0

    def _produce(self) -> None:
        topic = self.settings.kafka.events_topic
        with EventProducer.from_settings(self.settings.kafka) as producer:
            t0 = time.monotonic()
            for key, value in self.load:
                if self.stop_event.is_set():
                    break
                producer.produce(topic, key, value)
                self.sent += 1
                if self.sent % 100 == 0:
                    ahead = self.sent / self.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        self.stop_event.wait(ahead)
            producer.flush(10)

    def _probe(self) -> None:
        rng = np.random.default_rng(1)
        client = httpx.Client(base_url=self.url, timeout=5)
        with EventProducer.from_settings(self.settings.kafka) as producer:
            i = 0
            while not self.stop_event.is_set():
                user = f"probe-user-{i % 50}"
                event = Event(event_id=f"probe-{i}", ts=time.time(), type="view", user_id=user,
                              item_id=self.item_id(int(rng.integers(self.n_items))))
                i += 1
                ms = time_until_visible(producer, client, self.settings.kafka.events_topic, event)
                if ms is None:
                    self.missed += 1
                else:
                    self.visible_ms.append(ms)
                self.stop_event.wait(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 s per measurement, 2 rounds")
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--duration-s", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="offered requests/s over all connections (exponential think times; 0: as fast as answered, "
                         "the saturated closed loop); the latency at a rate the server sustains, as an SLO reads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ingest-rate", type=float, default=0.0,
                    help="events/s into the running realtime flow during the load (0: no flow)")
    ap.add_argument("--rate-limit", default="", help="[api] rate_limit, e.g. 1000000/second ('' = off)")
    ap.add_argument("--autogroup-nice", default=str(ONE_BOX_API_NICE),
                    help="api.autogroup_nice of the API's session ('none': unchanged); the default is fusionrec run's")
    ap.add_argument("--no-feedback", action="store_true",
                    help="api.feedback=false: no events reader (lists counted by the serving worker only)")
    a = ap.parse_args()
    if a.quick:
        a.duration_s, a.rounds = 8.0, 2
    if shutil.which("wrk") is None:
        sys.exit("bench/api.py needs wrk: apt-get install wrk")

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    server: subprocess.Popen[bytes] | None = None
    ingest: Ingest | None = None
    ingested = 0
    timings: dict[str, float] = {}
    rss: list[dict[str, float]] = []
    workers_loop: list[dict[str, float]] = []
    try:
        with LocalBroker() as broker:
            s = _settings(broker.bootstrap, tmp, feedback=not a.no_feedback, rate_limit=a.rate_limit)
            t0 = time.monotonic()
            data = BenchData.build(a.items, a.seed, s)
            timings["build_s"] = time.monotonic() - t0
            t0 = time.monotonic()
            with EventProducer.from_settings(s.kafka) as producer:
                producer.send_catalog(data.records)
            timings["send_s"] = time.monotonic() - t0
            config = tmp / "fusionrec.toml"
            config.write_text(tomli_w.dumps(s.model_dump(mode="json", exclude_none=True)))
            port = free_port()
            env = dict(os.environ, FUSIONREC_CONFIG=str(config), PYTHONPATH=str(ROOT))
            if a.autogroup_nice != "none":
                env["FUSIONREC_API__AUTOGROUP_NICE"] = a.autogroup_nice
            server = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1",
                 "--port", str(port), "--workers", str(a.workers), "--loop", "uvloop", "--http", "httptools",
                 "--no-access-log", "--log-level", "warning"],
                env=env, cwd=tmp, start_new_session=True)
            t_start = time.monotonic()
            url = f"http://127.0.0.1:{port}"
            wait_for_port("127.0.0.1", port, 60)
            c = httpx.Client(base_url=url, timeout=10)
            deadline = time.monotonic() + 60 + data.n_items / 2000  # 1M items: ~9 min at most
            stalls = 0
            while time.monotonic() < deadline:
                try:
                    r = c.get("/healthz")
                except httpx.TimeoutException:  # a worker's event loop busy > 10 s (the catalog applied on it)
                    stalls += 1
                    continue
                if r.status_code == 200 and r.json()["catalog_items"] == data.n_items:
                    break
                time.sleep(0.2)
            if stalls:
                print(f"start-up: /healthz timed out (10 s) {stalls} times", flush=True)
            timings["catalog_ready_s"] = time.monotonic() - t_start
            body = {"scenario": "similar", "filter": FILTER, "boosters": BOOSTERS, "n": 10,
                    "arms": [{"name": "covisit", "strategy": "similar"}, {"name": "visual", "strategy": "visual"}]}
            r = c.put("/v1/campaigns/pdp", json=body, timeout=600)  # its worker applies the catalog first
            assert r.status_code in (200, 201), r.text
            time.sleep(2 * s.api.campaign_check_s + 0.2)  # the other worker picks the campaign up
            script = tmp / "recs.lua"
            paced = _PACED_LUA % (a.connections * 1000.0 / a.rate) if a.rate > 0 else ""
            if data.ids is not None:
                script.write_text(_LUA % (",".join(f'"{i}"' for i in data.ids), a.seed) + _DONE_LUA + paced)
            else:
                script.write_text(_LUA_SCALED % (a.seed, data.n_items - 1) + _DONE_LUA + paced)
            plain = tmp / "plain.lua"
            plain.write_text(_DONE_LUA + paced)
            answered = 0
            for probe in range(40):  # both workers answer the campaign (and warm their caches)
                r = c.get("/v1/recommendations", params={"campaign": "pdp", "item_id": data.item_id(probe),
                                                         "max_price": 200}, timeout=600)  # the 1st applies the catalog
                assert r.status_code == 200, r.text
                answered += bool(r.json()["items"])
            assert answered >= 20, f"only {answered} of 40 probes got items"
            timings["first_list_s"] = time.monotonic() - t_start
            _wrk(url + "/healthz", None, 2, a.connections)  # warm-up
            _wrk(url + "/", script, 2, a.connections)
            if a.ingest_rate > 0:
                seconds = 2 * a.rounds * (a.duration_s + 1) + 150  # the rounds, the warm-up and slack
                ingest = Ingest(s, tmp, data.item_id, data.n_items, data.events(int(a.ingest_rate * seconds), a.ingest_rate),
                                a.ingest_rate, url).start()
                deadline = time.monotonic() + 120
                while not ingest.visible_ms and time.monotonic() < deadline:  # the flow is up and publishing
                    time.sleep(0.5)
                assert ingest.visible_ms, f"no probe event became visible in 120 s:\n{ingest.flow.log_text()[-2000:]}"
                ingest.reset()
            runs: dict[str, list[dict[str, float]]] = {"recommendations": [], "trivial": []}
            for _ in range(a.rounds):
                for name, target, lua in (("trivial", url + "/healthz", plain), ("recommendations", url + "/", script)):
                    cpu0, t0 = _session_cpu_s(server.pid), time.monotonic()
                    r = _wrk(target, lua, a.duration_s, a.connections)
                    r["cpu_ms"] = (_session_cpu_s(server.pid) - cpu0) * 1000 / max(r["rps"] * (time.monotonic() - t0), 1.0)
                    runs[name].append(r)
            rss = _workers_rss_mb(server.pid)
            workers_loop = _loop_lag_by_worker(url)
            if ingest is not None:
                ingest.stop()
                ingested = ingest.sent
            arms = c.get("/v1/campaigns/pdp/arms").json()
            if any(r["non2xx"] for v in runs.values() for r in v):  # say what the failures were
                codes: dict[int, int] = {}
                sample = ""
                for probe in range(200):
                    r = c.get("/v1/recommendations", params={"campaign": "pdp",
                                                             "item_id": data.item_id(probe % data.n_items),
                                                             "max_price": 200})
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    sample = sample or ("" if r.status_code == 200 else f"{r.status_code} {r.text[:300]}")
                print(f"after the load, 200 probes: {codes}; e.g. {sample}", flush=True)
    finally:
        if ingest is not None and not ingest.stop_event.is_set():
            ingest.stop()
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)

    best = {k: max(v, key=lambda r: r["rps"]) for k, v in runs.items()}
    med = {k: statistics.median(r["rps"] for r in v) for k, v in runs.items()}
    print(f"\nAPI load, loopback, uvicorn {a.workers} workers (uvloop, httptools), wrk -t1 -c{a.connections}, "
          f"{a.duration_s:.0f} s x {a.rounds} rounds, {a.items:,} items, feedback reader "
          f"{'off' if a.no_feedback else 'on'}"
          f"{f', paced to ~{a.rate:,.0f} req/s offered' if a.rate > 0 else ', saturated (no pacing)'}\n")
    cpu = {k: statistics.median(r["cpu_ms"] for r in v) for k, v in runs.items()}
    print("| endpoint | best req/s | median req/s | p50 ms (best) | p99 ms (best) | median p50 / p99 / p99.9 ms "
          "| worst p99 ms | non-2xx | median server CPU ms / request |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for k in ("recommendations", "trivial"):
        b, v = best[k], runs[k]
        mid = " / ".join(f"{statistics.median(r[q] for r in v):.2f}" for q in ("p50_ms", "p99_ms", "p999_ms"))
        print(f"| {k} | {b['rps']:,.0f} | {med[k]:,.0f} | {b['p50_ms']:.2f} | {b['p99_ms']:.2f} | {mid} "
              f"| {max(r['p99_ms'] for r in v):.2f} | {b['non2xx']:.0f} | {cpu[k]:.3f} |")
    ratio = best["recommendations"]["rps"] / best["trivial"]["rps"]
    served = sum(x["pulls"] for x in arms["arms"])
    per_arm = ", ".join(f"{x['arm']} {x['pulls']:,}" for x in arms["arms"])
    print(f"\nrecommendations / trivial = {ratio:.0%}; lists served and folded back by the optimizer: {served:,} "
          f"({per_arm})")
    extra: dict[str, object] = {"rate_limit": a.rate_limit or None, "offered_rate": a.rate or None}
    if ingest is not None:
        vis = np.array(ingest.visible_ms) if ingest.visible_ms else np.array([np.nan])
        extra.update(ingest_rate=a.ingest_rate, ingested=ingested, probes=len(ingest.visible_ms) + ingest.missed,
                     visible_p50_ms=round(float(np.percentile(vis, 50)), 1),
                     visible_p99_ms=round(float(np.percentile(vis, 99)), 1), visible_missed=ingest.missed)
        print(f"flow ingesting {a.ingest_rate:,.0f} events/s ({ingested:,} sent): event -> visible p50 "
              f"{extra['visible_p50_ms']} ms, p99 {extra['visible_p99_ms']} ms over {extra['probes']} probes, "
              f"{ingest.missed} not visible within 10 s")
    if workers_loop:
        extra["loop_lag"] = workers_loop
        for w in workers_loop:
            print(f"worker event loop: {w['late_10ms']:,.0f} of {w['wakeups']:,.0f} wake-ups late > 10 ms, "
                  f"{w['late_50ms']:,.0f} > 50 ms; collections > 20 ms by generation 0 / 1 / 2: "
                  f"{w['gc0_over_20ms']:.0f} / {w['gc1_over_20ms']:.0f} / {w['gc2_over_20ms']:.0f} (since start)")
    if rss:
        extra.update(worker_rss_mb=[round(w["rss_mb"], 1) for w in rss], worker_hwm_mb=[round(w["hwm_mb"], 1) for w in rss])
        print("API workers after the rounds: RSS " + ", ".join(f"{w['rss_mb']:,.0f}" for w in rss) + " MB (peak "
              + ", ".join(f"{w['hwm_mb']:,.0f}" for w in rss) + " MB)")
    extra.update({k: round(v, 1) for k, v in timings.items()})
    print("set-up: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
          + " (build: data and model; send: catalog to the topic; catalog_ready: server start to /healthz showing "
            "every item; first_list: to 40 answered probes)")
    print(f"command: .venv/bin/python bench/api.py {' '.join(sys.argv[1:])}".rstrip())
    print(json.dumps({"api": "recommendations+filter", "rps": round(best["recommendations"]["rps"], 1),
                      "p99_ms": round(best["recommendations"]["p99_ms"], 2),
                      "median_p99_ms": round(statistics.median(r["p99_ms"] for r in runs["recommendations"]), 2),
                      "trivial_rps": round(best["trivial"]["rps"], 1), "ratio": round(ratio, 3),
                      "median_rps": round(med["recommendations"], 1), "items": a.items, "workers": a.workers,
                      "median_ratio": round(statistics.median(r["rps"] / t["rps"] for r, t in
                                                              zip(runs["recommendations"], runs["trivial"], strict=True)), 3),
                      "cpu_ms": round(cpu["recommendations"], 4), "trivial_cpu_ms": round(cpu["trivial"], 4),
                      "feedback": not a.no_feedback, "autogroup_nice": a.autogroup_nice, **extra}))


if __name__ == "__main__":
    main()
