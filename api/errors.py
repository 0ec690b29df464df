"""HTTP errors as JSON that names the field: ``{"error": {"field": ..., "reason": ...}}``."""

from __future__ import annotations

import logging
from collections import Counter
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Match

from operators.parse import json_type

__all__ = ["MAX_ECHO_CHARS", "ApiError", "exception_handlers", "given_once", "once_params", "slash_redirect",
           "validate_params"]

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger(__name__)

MAX_ECHO_CHARS = 500
"""Longest string an error body holds (its field, its reason, an echoed value or IQL token): a longer one is cut
here and marked with how many characters were left out, so a 4,000-character input is never sent back whole."""


class ApiError(Exception):
    """A request the API refuses: HTTP ``status``, the offending ``field`` and the ``reason``."""

    def __init__(self, status: int, field: str, reason: str, **extra: object) -> None:
        super().__init__(f"{field}: {reason}")
        self.status, self.field, self.reason, self.extra = status, field, reason, extra

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, field={self.field!r}, reason={self.reason!r})"


def validate_params(model: type[M], data: dict[str, object]) -> M:
    """Validate query/body data with pydantic; the first error becomes a 422 ``ApiError``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "$"
        given = err.get("input")  # echoed only when it is a scalar: a nested input may be any size or depth
        expected = _JSON_EXPECTED.get(err["type"])
        reason = err["msg"] if expected is None else f"must be {expected}; got {json_type(given)}"
        raise ApiError(422, field, reason, value=given if isinstance(given, str | int | float | bool) else None) from exc


_JSON_EXPECTED = {"dict_type": "a JSON object", "model_type": "a JSON object", "model_attributes_type": "a JSON object",
                  "list_type": "a JSON array", "string_type": "a string", "int_type": "an integer",
                  "float_type": "a number", "bool_type": "a boolean"}
"""What a pydantic type error expected, in JSON's terms: pydantic's own message names Python's (``Input should be a
valid dictionary or instance of ArmIn``); the reason then names the JSON type sent (``...; got null``)."""


def given_once(name: str, count: int, how: str = "") -> ApiError:
    """The 422 for a request parameter given ``count`` > 1 times, naming it (``how``: how to give several values)."""
    return ApiError(422, name, f"must be given once{how}; got {count} {name}= parameters")


def once_params(query: QueryParams) -> dict[str, str]:
    """The query as one value per name; a name given more than once (``from=0&from=1``) is a 422 naming it
    (``given_once``), instead of one of the values taken silently."""
    items = query.multi_items()
    out = dict(items)
    if len(out) < len(items):
        name, count = next((k, n) for k, n in Counter(k for k, _ in items).items() if n > 1)
        raise given_once(name, count)
    return out


def _bounded(value: object) -> object:
    """``value`` with every string in it at most ``MAX_ECHO_CHARS`` long (plus the marker saying what was cut)."""
    if isinstance(value, str) and len(value) > MAX_ECHO_CHARS:
        return f"{value[:MAX_ECHO_CHARS]}… ({len(value) - MAX_ECHO_CHARS} more characters)"
    if isinstance(value, list | tuple):
        return [_bounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _bounded(v) for k, v in value.items()}
    return value


def _error(status: int, field: str, reason: str, **extra: object) -> JSONResponse:
    """The one place error bodies are built: whatever a message or an extra echoes of the input is bounded."""
    body: dict[str, object] = {"field": field, "reason": reason}
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse({"error": _bounded(body)}, status_code=status)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.field, exc.reason, **exc.extra)


def _matches_a_route(request: Request, path: str) -> bool:
    scope = {**request.scope, "path": path}
    return any(route.matches(scope)[0] is not Match.NONE for route in request.app.routes)


def slash_redirect(request: Request) -> str | None:
    """Where a path that matches no route is redirected: the same path with its trailing slash removed (or one
    added) when a route holds that form, as Starlette's ``redirect_slashes`` does, but as a *relative* reference
    built from the path as sent (``raw_path``) and the query, never from the client's ``Host`` header (Starlette's
    absolute ``Location`` took it: ``Host: evil.example`` was answered ``Location: http://evil.example/...``, which
    a shared cache in front of the API could hand to every client). None when there is nothing to redirect to."""
    path = request.scope["path"]
    if path == "/" or _matches_a_route(request, path):  # a route matched and answered 404 itself (a static file)
        return None
    alt = path.rstrip("/") if path.endswith("/") else path + "/"
    if not _matches_a_route(request, alt):
        return None
    raw: bytes = request.scope.get("raw_path") or path.encode()
    raw = raw.rstrip(b"/") if path.endswith("/") else raw + b"/"
    query: bytes = request.scope.get("query_string", b"")
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and (location := slash_redirect(request)) is not None:
        return RedirectResponse(location, status_code=307)
    resp = _error(exc.status_code, "path" if exc.status_code in (404, 405) else "$", str(exc.detail))
    if exc.status_code == 405:  # RFC 9110: list every method the path has (routes may split them)
        allowed: set[str] = set()
        for route in request.app.routes:
            if route.matches(request.scope)[0] != Match.NONE:
                allowed |= getattr(route, "methods", None) or set()
        resp.headers["Allow"] = ", ".join(sorted(allowed))
    elif exc.headers:
        resp.headers.update(exc.headers)
    return resp


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, "$", f"internal error: {type(exc).__name__}")


exception_handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _server_error}
