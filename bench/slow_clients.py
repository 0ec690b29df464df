"""1,000 half-sent requests against the API: held open, or closed at the head deadline? And the others' latency.

Starts a local broker and the API over HTTP (limiter off, ``api.header_timeout_s`` as given), then
per round opens ``--connections`` sockets that each send part of a request head (nothing, half a
request line, headers without their end, in turn) and never finish it, while one client sends
``GET /v1/recommendations`` one at a time. For ``--hold-s`` seconds it records when the server
closes each socket, and the client's latency. Run with the guarded protocol (``api/http_protocol.py``,
the default) and with plain uvicorn httptools (the old path), ``--rounds`` times each; prints
medians: sockets still open at the end, seconds to close them all (first / last), GET p50 / p99 /
max and GETs answered.

Run: ``.venv/bin/python bench/slow_clients.py --connections 1000 --hold-s 40 --rounds 3``
"""

from __future__ import annotations

import argparse
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from api.http_protocol import HttpProtocol, server_config  # noqa: E402
from operators.broker import LocalBroker, free_port, wait_for_port  # noqa: E402
from operators.kafka import ensure_topics, platform_topics  # noqa: E402
from operators.settings import Settings  # noqa: E402

HALF_SENT = [b"", b"GET /v1/recommendations?user_id=u", b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
             b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Le"]


def _round(port: int, n: int, hold_s: float) -> dict[str, float]:
    lat: list[float] = []
    stop = threading.Event()

    def steady() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                c.get("/v1/recommendations", params={"user_id": "u1"})
                lat.append(time.perf_counter() - t0)
                time.sleep(0.01)

    t = threading.Thread(target=steady, daemon=True)
    t.start()
    sel = selectors.DefaultSelector()
    opened: dict[socket.socket, float] = {}
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if HALF_SENT[i % len(HALF_SENT)]:
            sock.sendall(HALF_SENT[i % len(HALF_SENT)])
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        opened[sock] = time.monotonic()
    closed_after: list[float] = []
    end = time.monotonic() + hold_s
    while time.monotonic() < end:  # the whole hold, so both protocols serve the client as long
        if not sel.get_map():
            time.sleep(0.2)
            continue
        for key, _ in sel.select(timeout=0.2):
            sock = key.fileobj
            try:
                if sock.recv(65536):  # type: ignore[union-attr]
                    continue  # the 408, then the close
            except BlockingIOError:
                continue
            except ConnectionResetError:
                pass
            closed_after.append(time.monotonic() - opened[sock])  # type: ignore[index]
            sel.unregister(sock)
    still_open = len(sel.get_map())
    for sock in opened:
        sock.close()
    stop.set()
    t.join(30)
    a = np.array(lat) * 1000
    return {"open": still_open, "first_s": min(closed_after, default=float("nan")),
            "last_s": max(closed_after, default=float("nan")), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()), "gets": len(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--hold-s", type=float, default=40.0, help="how long the half-sent requests are watched")
    ap.add_argument("--header-timeout-s", type=float, default=10.0, help="api.header_timeout_s (default 10)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    modes = {"head deadline (api/http_protocol.py)": HttpProtocol, "plain uvicorn httptools (old)": "httptools"}
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with LocalBroker(free_port()) as broker, tempfile.TemporaryDirectory() as tmp:
        s = Settings(kafka={"brokers": broker.bootstrap, "partitions": 1},
                     stream={"state_dir": Path(tmp) / "state", "model_dir": Path(tmp) / "models"},
                     api={"require_keys": False, "rate_limit": None, "header_timeout_s": args.header_timeout_s})
        ensure_topics(s.kafka.brokers, platform_topics(s))
        for r in range(args.rounds):
            for name, http in modes.items():
                port = free_port()
                server = uvicorn.Server(server_config(create_app(s), s.api, host="127.0.0.1", port=port,
                                                     log_level="error", http=http, backlog=4096))
                th = threading.Thread(target=server.run, daemon=True)
                th.start()
                wait_for_port("127.0.0.1", port, 30)
                results[name].append(_round(port, args.connections, args.hold_s))
                print(f"round {r + 1}, {name}: {results[name][-1]}", flush=True)
                server.should_exit = True
                th.join(30)
    print(f"\n{args.connections} half-sent requests held for up to {args.hold_s:g} s "
          f"(api.header_timeout_s {args.header_timeout_s:g}), one client GETting meanwhile; medians of {args.rounds}")
    print(f"{'protocol':<40}{'still open':>11}{'closed from s':>14}{'to s':>7}{'GET p50 ms':>11}"
          f"{'p99 ms':>8}{'max ms':>8}{'GETs':>7}")
    for name, rs in results.items():
        med = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
        print(f"{name:<40}{med['open']:>11.0f}{med['first_s']:>14.1f}{med['last_s']:>7.1f}{med['p50_ms']:>11.1f}"
              f"{med['p99_ms']:>8.1f}{med['max_ms']:>8.1f}{med['gets']:>7.0f}")


if __name__ == "__main__":
    main()
