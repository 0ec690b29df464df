"""Slow clients cannot hold connections: uvicorn's HTTP protocols with a request-head deadline and size bound.

uvicorn times out idle keep-alive connections (``timeout_keep_alive``) but not a client that opens a
connection and never finishes its request line and headers (slowloris: nothing sent, or a byte now
and then, each byte re-arming nothing). ASGI middleware cannot help: it runs only once the head is
parsed. These subclasses of uvicorn's own protocols add, per connection:

- a **head deadline**: the request line and headers must be complete within ``api.header_timeout_s``
  of the connection opening or of the previous response ending (keep-alive); otherwise the
  connection is closed, with a ``408`` if the client had sent part of a request. Dripping bytes does
  not extend it. A request whose head is complete is never cut (bodies have ``api.body_timeout_s``);
- a **head size bound**: a head (request line, headers and the blank line that ends them) over
  ``api.max_header_bytes`` is a ``431`` and the connection is closed, checked on each chunk *before*
  the parser sees it, so the chunk that completes a head counts too and the app never sees the
  request (uvicorn's ``h11_max_incomplete_event_size`` binds only the h11 parser, and only an
  incomplete head; this binds httptools too). Bytes after the blank line are the body's
  (``api.max_body_bytes``).

Use :func:`server_config` to run the app (tests, benches), or give uvicorn the import string
``api.http_protocol:HttpProtocol`` (``--http``): without :class:`ServerConfig` the limits come from
``Settings().api`` (``fusionrec.toml`` / ``FUSIONREC_*``, as ``create_app()`` reads them).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from operators.settings import ApiSettings, Settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency; h11 is uvicorn's fallback
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

__all__ = ["GuardedH11Protocol", "HttpProtocol", "SERVER_STOPPING", "ServerConfig", "server_config"]

SERVER_STOPPING = "fusionrec.server_stopping"
"""Key of the lifespan state holding the app's callable for "the server stops taking requests"."""

_log = logging.getLogger("uvicorn.error")

_HEAD_END = re.compile(rb"\n\r?\n")
"""The blank line that ends a request head (CRLF CRLF; both parsers also take bare LFs)."""


class ServerConfig(uvicorn.Config):
    """A uvicorn ``Config`` that carries the API's connection limits to :class:`HttpProtocol`.

    Picklable (module-level class, plain attributes), so ``workers > 1`` works.
    """

    def __init__(self, app: Any, api: ApiSettings, **kwargs: Any) -> None:
        kwargs.setdefault("http", HttpProtocol)
        kwargs.setdefault("timeout_keep_alive", api.keep_alive_s)
        kwargs.setdefault("h11_max_incomplete_event_size", api.max_header_bytes)
        kwargs.setdefault("proxy_headers", api.forwarded_allow_ips is not None)  # else X-Forwarded-For is ignored
        kwargs.setdefault("forwarded_allow_ips", api.forwarded_allow_ips)
        super().__init__(app, **kwargs)
        self.header_timeout_s = api.header_timeout_s
        self.max_header_bytes = api.max_header_bytes


def server_config(app: Any, api: ApiSettings, **kwargs: Any) -> ServerConfig:
    """uvicorn ``Config`` for ``app`` (an ASGI app or an import string) with ``api``'s connection limits.

    ``kwargs`` go to ``uvicorn.Config`` (host, port, log_level, workers, factory, ...).
    """
    return ServerConfig(app, api, **kwargs)


@functools.cache
def _file_settings() -> ApiSettings:
    return Settings().api


class _HeadGuard:
    """Mixin over a uvicorn HTTP protocol (first in the bases): head deadline and head size (module docstring)."""

    # uvicorn's own attributes of the protocol classes
    config: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    app_state: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        api = None if isinstance(self.config, ServerConfig) else _file_settings()
        self._head_timeout_s: float = api.header_timeout_s if api else self.config.header_timeout_s
        self._max_head_bytes: int = api.max_header_bytes if api else self.config.max_header_bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_tail: bytes | None = None  # last 2 bytes of the pending head; None until its first line starts

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_head_deadline()

    def shutdown(self) -> None:
        """The server stops (called per connection before it waits for the requests in flight): the app is told."""
        _server_stopping(self.app_state)
        super().shutdown()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        mid_body = cycle is not None and not cycle.response_complete and cycle.more_body
        if not mid_body:  # a head is pending: count its bytes in this chunk before the parser takes them
            end = self._head_end(data)
            if self._head_bytes + (len(data) if end is None else end) > self._max_head_bytes:
                _log.info("request head over %d bytes: 431, closed", self._max_head_bytes)
                self._refuse(431, "Request Header Fields Too Large", "request line and headers too large")
                return
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing() or mid_body:
            return
        if self.cycle is not cycle:  # a head completed in this chunk
            self._head_bytes, self._head_tail = 0, None
            return
        self._head_bytes += len(data)
        started = data.lstrip(b"\r\n") if self._head_tail is None else data
        if started:
            self._head_tail = ((self._head_tail or b"") + started[-2:])[-2:]

    def _head_end(self, data: bytes) -> int | None:
        """Offset in ``data`` just past the blank line that ends the pending head; None if it does not end here.

        Empty lines before a request line end nothing (both parsers skip them)."""
        tail, start = self._head_tail, 0
        if tail is None:
            start = len(data) - len(data.lstrip(b"\r\n"))
            tail = b""
        m = _HEAD_END.search(tail + data[start:start + 2])  # a blank line across the previous chunk
        if m is None or m.end() <= len(tail):
            m = _HEAD_END.search(data, start)
            return None if m is None else m.end()
        return start + m.end() - len(tail)

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm_head_deadline()  # before uvicorn starts a pipelined request, whose head is complete
        super().on_response_complete()  # type: ignore[misc]

    def _arm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_bytes, self._head_tail = 0, None
        self._head_timer = self.loop.call_later(self._head_timeout_s, self._head_deadline_passed)

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        waiting = self.cycle is None or self.cycle.response_complete
        if self.transport.is_closing() or self.transport.get_protocol() is not self or not waiting:
            return  # closed, upgraded, or a request is being served: its response re-arms the deadline
        if self._head_bytes:
            _log.info("request head not complete after %.1f s (%d bytes): 408, closed", self._head_timeout_s,
                      self._head_bytes)
            self._refuse(408, "Request Timeout", "request line and headers not received in time")
        else:
            self.transport.close()

    def _refuse(self, status: int, reason: str, msg: str) -> None:
        body = msg.encode("ascii")
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                             % (status, reason.encode("ascii"), len(body), body))
        self.transport.close()


def _server_stopping(app_state: dict[str, Any]) -> None:
    """Tell the app the server stops taking requests (its lifespan put ``SERVER_STOPPING`` in the state)."""
    hook = app_state.get(SERVER_STOPPING)
    if callable(hook):
        hook()


class GuardedH11Protocol(_HeadGuard, H11Protocol):
    """uvicorn's h11 protocol with the head deadline and size bound."""


HttpProtocol: type[asyncio.Protocol]
"""The protocol to run: guarded httptools when installed (uvicorn's ``auto`` choice), else guarded h11."""

if HttpToolsProtocol is not None:
    class GuardedHttpToolsProtocol(_HeadGuard, HttpToolsProtocol):
        """uvicorn's httptools protocol with the head deadline and size bound."""

    HttpProtocol = GuardedHttpToolsProtocol
    __all__ += ["GuardedHttpToolsProtocol"]
else:  # pragma: no cover
    HttpProtocol = GuardedH11Protocol
