"""API keys with scopes: ``admin`` (campaigns, catalog, analytics, metrics) and ``client`` (recommendations, events).

A pure ASGI middleware (no per-request task overhead). When ``require_keys`` is on (the
default), a request to a scoped path needs ``X-API-Key: <key>`` (or ``Authorization: Bearer
<key>``): no or an unknown key -> 401, a key without the path's scope -> 403. Admin keys hold
both scopes. Paths without a scope (``/healthz``, the OpenAPI schema, the dashboard's static
page, whose data calls need the admin key) are open. The scopes a request's key holds are left in
its ASGI scope (``holds_scope``), for what an endpoint of the client scope keeps to admin keys
(``explain``, ``n`` above ``api.client_max_n`` on ``GET /v1/recommendations``).

Closed by default: no key is built in (``api.admin_keys``/``api.client_keys`` come from the
config file or ``FUSIONREC_API__*_KEYS``), and ``exposure_problem`` refuses a bind address other
than loopback unless keys are required, an admin key is set and no development key is.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from operators.exposure import DEV_KEYS, exposure_problem, is_loopback

__all__ = ["ApiKeyMiddleware", "DEV_KEYS", "KEY_SCOPES", "exposure_problem", "holds_scope", "is_loopback",
           "presented_key", "scope_of"]

_SCOPED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("/metrics", "admin"),
    ("/v1/campaigns", "admin"),
    ("/v1/items", "admin"),
    ("/v1/catalog", "admin"),
    ("/v1/analytics", "admin"),
    ("/v1/recommendations", "client"),
    ("/v1/events", "client"),
)


KEY_SCOPES = "fusionrec.key_scopes"
"""ASGI scope entry: the frozenset of scopes the request's key holds, set by :class:`ApiKeyMiddleware` on a scoped
path (absent when keys are not required)."""


def holds_scope(scope: Scope, need: str) -> bool:
    """Whether the request's key holds ``need``; True when keys are not required (every caller holds every scope)."""
    granted = scope.get(KEY_SCOPES)
    return granted is None or need in granted


def scope_of(path: str) -> str | None:
    """The scope a path needs, or None for an open path."""
    for prefix, scope in _SCOPED_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return scope
    return None


class ApiKeyMiddleware:
    """Checks the key of scoped requests.

    Parameters
    ----------
    app : ASGI app
    admin_keys, client_keys : iterable of str
        Keys of each scope (from ``ApiSettings``).
    """

    def __init__(self, app: ASGIApp, admin_keys: Iterable[str], client_keys: Iterable[str]) -> None:
        self.app = app
        self.scopes: dict[str, frozenset[str]] = {k: frozenset({"admin", "client"}) for k in admin_keys}
        for k in client_keys:
            self.scopes.setdefault(k, frozenset({"client"}))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        need = scope_of(scope["path"])
        if need is None:
            await self.app(scope, receive, send)
            return
        key = presented_key(scope["headers"])
        if not key:
            await _deny(send, 401, "missing API key (X-API-Key header or Authorization: Bearer)")
            return
        granted = self.scopes.get(key)
        if granted is None:
            await _deny(send, 401, "unknown API key")
            return
        if need not in granted:
            await _deny(send, 403, f"this key lacks the {need!r} scope")
            return
        scope[KEY_SCOPES] = granted
        await self.app(scope, receive, send)


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The API key a request presents: ``X-API-Key``, or ``Authorization: Bearer <key>`` (stripped);
    the last such header wins. None when there is none (an ``Authorization`` of another scheme is
    not a key). The one reading of the headers: :class:`ApiKeyMiddleware` authenticates with it and
    ``api.rate_limit`` counts callers by it."""
    key = None
    for name, value in headers:
        if name == b"x-api-key":
            key = value.decode("latin-1")
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            key = value[7:].decode("latin-1").strip()
    return key


async def _deny(send: Send, status: int, reason: str) -> None:
    body = orjson.dumps({"error": {"field": "api_key", "reason": reason}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'ApiKey realm="fusionrec"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
