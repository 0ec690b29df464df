"""Lake benchmark: archive throughput next to the raw consume rate, bytes per event, and reading a
30-day window of N synthetic events from the lake and training on it, with peak memory. Not a test.

    .venv/bin/python bench/lake.py --quick                 # 100k events archived, 1M-event window
    .venv/bin/python bench/lake.py --window-events 10000000  # the issue's 10 M events

Archive: a Tansu broker, ``events`` with 4 partitions filled with synthetic-shop events; per round
the raw rate (one confluent-kafka consumer, ``assign()``, all partitions, 2,000-message batches,
values discarded) and then the archiving flow (``flows.archive.dataflow:flow``, 1 worker, default
``[lake]`` settings) from an empty lake until every manifest reaches the log end, wall time
including the flow's start-up. Window: the events are written straight into a lake (4 partitions
by user, the archiver's files and manifests), spread over 30 days; each round runs in a fresh
process (``_train``): ``read_interactions`` of the 30-day window (pushdown, record batches), then
``fit`` of the model; peak memory is the process's ``ru_maxrss``. Side by side, the old path: the
same events as JSONL, ``read_events_jsonl`` + ``events_to_log`` (``fusionrec train --events``).
Medians of ``--rounds``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.progress import progress_bar  # noqa: E402
from operators.schema import Event  # noqa: E402

DAY = 86400.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    """This process's peak resident set (``VmHWM``; ``ru_maxrss`` would include the parent's, kept over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def shop_events(n: int, seed: int = 0, days: float = 30.0, chunk: int = 500_000):
    """``n`` synthetic-shop events spread over ``days`` days, yielded in lists of ``chunk``."""
    from simulators.shop import SyntheticShop

    shop = SyntheticShop(n_items=20_000, n_users=20_000, seed=seed)
    it = shop.events(n, rate_per_s=n / (days * DAY))
    buf: list[Event] = []
    for e in it:
        buf.append(e)
        if len(buf) == chunk:
            yield buf
            buf = []
    if buf:
        yield buf


def write_lake(lake: Path, n: int, partitions: int = 4, jsonl: Path | None = None) -> None:
    """Fill ``lake`` with ``n`` events (and ``jsonl`` with the same events, when given)."""
    from operators.lake.schema import events_table
    from operators.lake.store import LakePartition
    from operators.schema import encode_event

    shutil.rmtree(lake, ignore_errors=True)  # a half-written lake of an interrupted run
    writers = [LakePartition(lake, "events", p) for p in range(partitions)]
    offsets = [0] * partitions
    out = open(jsonl, "wb") if jsonl else None  # noqa: SIM115
    with progress_bar(total=n, desc="lake", unit="ev") as bar:
        for chunk in shop_events(n):
            rows: list[list[tuple[int, int, Event]]] = [[] for _ in range(partitions)]
            for e in chunk:
                p = zlib.crc32(e.user_id.encode()) % partitions
                rows[p].append((p, offsets[p], e))
                offsets[p] += 1
                if out:
                    out.write(encode_event(e) + b"\n")
            for p, w in enumerate(writers):
                if rows[p]:
                    w.append(events_table(rows[p]), offsets[p])
            bar.update(len(chunk))
    if out:
        out.close()
    (lake / "_bench_n").write_text(str(n))


def child_train(args: argparse.Namespace) -> None:
    """One round in a fresh process: read the window (lake or JSONL), fit, print JSON."""
    from operators.lake.read import parse_window
    from operators.lake.training import read_window, window_bounds
    from operators.settings import Settings
    from operators.training import events_to_log, fit_model, read_events_jsonl, weighted_types

    s = Settings()
    base = _rss_mb()
    t0 = time.perf_counter()
    if args.jsonl:
        il = events_to_log(read_events_jsonl(Path(args.jsonl), s), weighted_types(s)[0])
    else:
        start, end = window_bounds(s, parse_window(args.window), Path(args.lake))
        il = read_window(s, start, end, Path(args.lake)).log
    read_s = time.perf_counter() - t0
    read_peak = _peak_mb()
    _, fit_s = fit_model(il, s, args.model)
    print(json.dumps({"read_s": read_s, "fit_s": fit_s, "interactions": il.n_events, "items": il.n_items,
                      "sessions": il.n_sessions, "base_mb": base, "read_peak_mb": read_peak,
                      "peak_mb": _peak_mb()}))


def _rounds(cmd: list[str], rounds: int) -> list[dict]:
    out = []
    for _ in range(rounds):
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


def _med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def bench_window(args: argparse.Namespace, work: Path) -> dict:
    lake = work / f"lake-{args.window_events}"
    jsonl = work / f"events-{args.jsonl_events}.jsonl"
    if not (lake / "_bench_n").exists():
        write_lake(lake, args.window_events)
    small = work / f"lake-{args.jsonl_events}"
    if not jsonl.exists() or not (small / "_bench_n").exists():
        write_lake(small, args.jsonl_events, jsonl=jsonl)
    me = [sys.executable, str(Path(__file__).resolve()), "_train", "--model", args.model, "--window", "30d"]
    res = {}
    for name, cmd in ((f"lake {args.window_events:,}", me + ["--lake", str(lake)]),
                      (f"lake {args.jsonl_events:,}", me + ["--lake", str(small)]),
                      (f"jsonl {args.jsonl_events:,}", me + ["--jsonl", str(jsonl)])):
        rows = _rounds(cmd, args.rounds)
        res[name] = {k: _med(rows, k) for k in rows[0]}
        print(f"{name}: {json.dumps(res[name])}", flush=True)
    files = [p for p in (lake / "events").rglob("*.parquet")]
    res["lake_bytes_per_event"] = sum(p.stat().st_size for p in files) / args.window_events
    res["lake_files"] = len(files)
    res["jsonl_bytes_per_event"] = jsonl.stat().st_size / args.jsonl_events
    return res


def bench_archive(args: argparse.Namespace, work: Path) -> dict:
    from confluent_kafka import Consumer, TopicPartition

    from operators.broker import LocalBroker
    from operators.kafka import high_watermarks
    from operators.lake.store import lake_manifests
    from simulators.producer import EventProducer
    from tests.harness import FlowProcess, make_settings

    out: dict = {"raw_consume_per_s": [], "archive_per_s": [], "archive_steady_per_s": [], "startup_s": [],
                 "bytes_per_event": []}
    with LocalBroker() as b:
        s = make_settings(b.bootstrap, work / "arch", partitions=4)
        events = [e for chunk in shop_events(args.archive_events, seed=1, days=2.0) for e in chunk]
        with EventProducer.from_settings(s.kafka) as p:
            p.send_events(events, progress=True)
        end = high_watermarks(s.kafka.brokers, s.kafka.events_topic)
        total = sum(end.values())
        for r in range(args.rounds):
            c = Consumer({"bootstrap.servers": s.kafka.brokers, "group.id": "bench", "enable.auto.commit": False,
                          "fetch.wait.max.ms": 20})
            c.assign([TopicPartition(s.kafka.events_topic, p, 0) for p in end])
            t0, n = time.perf_counter(), 0
            while n < total:
                n += sum(1 for m in c.consume(2000, 0.5) if not m.error())
            out["raw_consume_per_s"].append(total / (time.perf_counter() - t0))
            c.close()
            lake_dir = work / f"arch-lake-{r}"
            sr = s.model_copy(update={"lake": s.lake.model_copy(update={
                "lake_dir": lake_dir, "flush_interval_s": args.flush_interval_s})})
            t0 = time.perf_counter()
            flow = FlowProcess(sr, work / f"arch-{r}.toml", flow="flows.archive.dataflow:flow").start()
            first: tuple[float, int] | None = None
            try:
                while True:
                    done = {m.partition: m.next_offset for m in lake_manifests(lake_dir, "events")}
                    if first is None and done:
                        first = (time.perf_counter(), sum(done.values()))
                    if all(done.get(p, 0) >= e for p, e in end.items()):
                        break
                    if not flow.alive():
                        raise RuntimeError(flow.log_text()[-3000:])
                    time.sleep(0.01)
                t_end = time.perf_counter()
                out["archive_per_s"].append(total / (t_end - t0))
                assert first is not None
                out["startup_s"].append(first[0] - t0)
                out["archive_steady_per_s"].append((total - first[1]) / max(t_end - first[0], 1e-9))
            finally:
                flow.stop()
            ms = lake_manifests(lake_dir, "events")
            out["bytes_per_event"].append(sum(f.bytes for m in ms for f in m.files) / sum(m.rows for m in ms))
            print(f"round {r}: raw {out['raw_consume_per_s'][-1]:,.0f}/s, archive {out['archive_per_s'][-1]:,.0f}/s "
                  f"(after the first commit {out['archive_steady_per_s'][-1]:,.0f}/s), "
                  f"{out['bytes_per_event'][-1]:.1f} B/event", flush=True)
    return {k: statistics.median(v) for k, v in out.items()} | {"events": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", nargs="?", default="all", choices=["all", "archive", "window", "_train"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--archive-events", type=int, default=1_000_000)
    ap.add_argument("--flush-interval-s", type=float, default=1.0, help="[lake] flush_interval_s of the archiver")
    ap.add_argument("--window-events", type=int, default=10_000_000)
    ap.add_argument("--jsonl-events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="covisit")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fusionrec-bench-lake")
    ap.add_argument("--lake")
    ap.add_argument("--jsonl")
    ap.add_argument("--window", default="30d")
    args = ap.parse_args()
    if args.mode == "_train":
        return child_train(args)
    if args.quick:
        args.archive_events, args.window_events, args.jsonl_events = 200_000, 1_000_000, 200_000
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict = {"cpus": os.cpu_count()}
    if args.mode in ("all", "archive"):
        result["archive"] = bench_archive(args, args.work)
    if args.mode in ("all", "window"):
        result["window"] = bench_window(args, args.work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
