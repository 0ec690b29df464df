"""What ``api/request_metrics.py`` adds per request: the middleware around a no-op ASGI app, against the app alone.

The app answers at once (start + body), as a routed request it sets ``scope["route"]``; both sides run the same
coroutines on one event loop, ``--requests`` times per round, and the median over ``--rounds`` of the difference
per request is printed in µs (the CPU the API's hot path pays for its request counters and latency histogram).

Run: ``.venv/bin/python bench/request_metrics.py --requests 200000 --rounds 7``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's api/, not bench/api.py

from api.request_metrics import RequestMetricsMiddleware  # noqa: E402
from api.services import ApiMetrics  # noqa: E402

_ROUTE = Route("/v1/recommendations", lambda request: None)
_START: Message = {"type": "http.response.start", "status": 200, "headers": []}
_BODY: Message = {"type": "http.response.body", "body": b"{}"}


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    scope["route"] = _ROUTE
    await send(_START)
    await send(_BODY)


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


async def _per_request_s(app: object, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await app({"type": "http", "path": "/v1/recommendations"}, _receive, _send)  # type: ignore[operator]
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    m = ApiMetrics()
    wrapped = RequestMetricsMiddleware(_app, m.requests, m.latency)
    added, bare_all = [], []
    for _ in range(args.rounds):
        bare = asyncio.run(_per_request_s(_app, args.requests))
        timed = asyncio.run(_per_request_s(wrapped, args.requests))
        added.append(timed - bare)
        bare_all.append(bare)
    print(f"no-op app alone: {statistics.median(bare_all) * 1e6:.2f} µs/request; added by the middleware: "
          f"median {statistics.median(added) * 1e6:.2f} µs/request (min {min(added) * 1e6:.2f}, "
          f"max {max(added) * 1e6:.2f}; {args.rounds} rounds of {args.requests:,})")


if __name__ == "__main__":
    main()
