"""Per-caller rate limits: a pure ASGI middleware over the ``limits`` library (moving windows, in memory).

The caller is the pair (API key, client address): the client key is shared by every shopper
of a shop, so limiting the key alone would throttle the whole shop for one abuser. The key is one
of the configured keys as ``api.auth.presented_key`` reads it (the header the authentication
reads); any other value, or none, counts as no key, so headers that name no configured key
(``Authorization: junk-1``, ``junk-2``, ...; a key padded with spaces) do not make a new caller. Over the limit
-> 429 with ``Retry-After`` (seconds) and a JSON error naming ``api_key``. ``/healthz`` and
``/readyz`` (the orchestrator's probes: cheap, no I/O) are never limited, and never reach the
limiter's storage: its in-memory backend starts a short-lived expiry thread from the calling
thread when none runs, and a probe every 50 ms during start-up was found (py-spy) holding the
event loop, where the optimizer's fold runs, in ``Thread.start``. The same backend, for limited
requests, started a new expiry thread whenever its last one (a 10 ms ``threading.Timer``) had
finished: up to 100 ``Thread.start`` calls a second on the event loop under load, each waiting for
the GIL. :class:`SweptMemoryStorage` keeps the library's storage and strategies and moves the expiry
sweep to one long-lived thread. Each API process counts its own callers (a replica's limit is per
process). ``POST /v1/events`` is also charged by what its body holds (:class:`EventRateLimiter`): its events, and
the item ids they name.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping

import orjson
from limits import RateLimitItem, storage, strategies
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import presented_key
from operators.settings import parse_rate_limit

__all__ = ["EVENTS", "ITEM_IDS", "EventRateLimiter", "RateLimitMiddleware", "SweptMemoryStorage", "caller",
           "parse_rate_limit"]  # the parser lives with the settings

_EXEMPT = frozenset({"/healthz", "/readyz"})

EVENTS = "events"
"""The unit of ``api.event_rate_limit``: a request of n events costs n."""
ITEM_IDS = "item ids"
"""The unit of ``api.event_item_rate_limit``: each event's distinct item ids (``item_id`` and basket lines)."""


class SweptMemoryStorage(storage.MemoryStorage):
    """``limits``' in-memory storage whose expired entries are swept every ``sweep_s`` seconds by one
    daemon thread, instead of by a ``threading.Timer`` started from the caller after each 10 ms.

    Counting is unchanged (the moving window compares each entry's time itself); the sweep only
    frees memory of callers that went quiet, including their keys (the library keeps an empty list
    per key ever seen, and a caller can invent keys). ``close`` stops the thread.
    """

    def __init__(self, sweep_s: float = 1.0) -> None:
        super().__init__()
        self._sweep_s = sweep_s
        self._closed = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_forever, name="rate-limit-sweep", daemon=True)
        self._sweeper.start()

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 - overrides the base's private hook
        """No per-call timer: :meth:`_sweep_forever` expires entries."""

    def _sweep_forever(self) -> None:
        while not self._closed.wait(self._sweep_s):
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]
            for key in [k for k, v in list(self.events.items()) if not v]:
                with self.locks[key]:
                    if not self.events.get(key):
                        self.events.pop(key, None)
                        self.locks.pop(key, None)

    def close(self) -> None:
        """Stop the sweeping thread (idempotent)."""
        self._closed.set()


class RateLimitMiddleware:
    """Refuses callers over ``limits`` (e.g. ``"200/second;5000/minute"``, the ``limits`` notation);
    ``keys`` are the configured API keys (a caller is one of them, or none, and its address).

    Raises
    ------
    ValueError
        If ``limits`` does not parse (at start-up, naming the setting).
    """

    def __init__(self, app: ASGIApp, limits: str, keys: Iterable[str] = ()) -> None:
        self.app = app
        self.keys = frozenset(keys)  # the configured keys: any other presented value counts as none
        self.items = parse_rate_limit(limits)
        self.limiter = strategies.MovingWindowRateLimiter(SweptMemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _EXEMPT:
            await self.app(scope, receive, send)
            return
        who = caller(scope, self.keys)
        for item in self.items:
            if not self.limiter.hit(item, who):
                reset = self.limiter.get_window_stats(item, who).reset_time
                await _too_many(send, max(1, math.ceil(reset - time.time())), str(item))
                return
        await self.app(scope, receive, send)


def caller(scope: Scope, keys: frozenset[str]) -> str:
    """Who a request counts for: the configured key it presents (else none) and its client address."""
    key = presented_key(scope["headers"])
    if key not in keys:
        key = ""
    client = scope.get("client") or ("?", 0)
    return f"{key}|{client[0]}"


class EventRateLimiter:
    """What one caller may post to ``POST /v1/events``, charged per request: its events against
    ``api.event_rate_limit`` and the item ids they name against ``api.event_item_rate_limit`` (either may be off).

    Events, because 1,000-event batches at the request rate were 200,000 events/s for one caller (more than the
    flow applies, and a lever on popularity); item ids, because events may name items the catalogue does not hold
    yet and each new id grows the flow's and the API's per-item state: 60 view events of 2,500-line baskets named
    150,000 invented ids in one request. Shares the caller of :class:`RateLimitMiddleware`; the two counts are kept
    apart (``unit`` is part of the counter's key).

    Raises
    ------
    ValueError
        If ``limits`` or ``item_limits`` does not parse.
    """

    def __init__(self, limits: str | None, keys: Iterable[str] = (), item_limits: str | None = None) -> None:
        self.keys = frozenset(keys)
        self.budgets: dict[str, list[RateLimitItem]] = {
            unit: parse_rate_limit(spec) for unit, spec in ((EVENTS, limits), (ITEM_IDS, item_limits)) if spec}
        """The limits of each unit charged (``EVENTS``, ``ITEM_IDS``); a unit without limits is not counted."""
        self.limiter = strategies.MovingWindowRateLimiter(SweptMemoryStorage())

    def largest(self, unit: str) -> int | None:
        """The most ``unit`` one request may cost: more never fits the smallest window (the handler answers 422,
        not a 429 whose retry could never succeed); None when ``unit`` is not limited."""
        items = self.budgets.get(unit)
        return min(item.amount for item in items) if items else None

    def retry_after_s(self, scope: Scope, costs: Mapping[str, int]) -> tuple[int, str] | None:
        """Charge the request's caller ``costs`` (units -> amount, e.g. ``{EVENTS: 60, ITEM_IDS: 150_000}``): None
        if every limit of every unit allows it, else (seconds until the window allows it, the limit that refused it,
        e.g. ``"300000 item ids per 1 minute"``). A refused request counts nothing, in any unit."""
        who = caller(scope, self.keys)
        charged = [(unit, item, cost) for unit, items in self.budgets.items() if (cost := costs.get(unit, 0)) > 0
                   for item in items]
        for unit, item, cost in charged:
            if not self.limiter.test(item, unit, who, cost=cost):
                reset = self.limiter.get_window_stats(item, unit, who).reset_time
                return (max(1, math.ceil(reset - time.time())),
                        f"{item.amount} {unit} per {item.multiples} {item.GRANULARITY.name}")
        for unit, item, cost in charged:
            self.limiter.hit(item, unit, who, cost=cost)
        return None


async def _too_many(send: Send, retry_after_s: int, limit: str) -> None:
    body = orjson.dumps({"error": {"field": "api_key", "reason": f"rate limit exceeded ({limit} per key and client)",
                                   "retry_after_s": retry_after_s}})
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after_s).encode())]})
    await send({"type": "http.response.body", "body": body})
