"""An answer given before the request's body was read to its end closes the connection: a pure ASGI middleware.

Any early answer — the key check's 401/403, the rate limit's 429, a 415 for a content-coding, a 404, 405 or a 422
on the path, the 413 and 408 of ``api/json_body.py`` — leaves the rest of the body on the wire. Kept alive, the
server would have to read and discard it, and what it reads after the answer counts as the next request's head:
a 401 on a 200 kB upload was followed by a 431 (the head size bound of ``api/http_protocol.py``) or, for a body
still arriving after ``api.header_timeout_s``, a 408 "request line and headers not received in time". So such an
answer says ``Connection: close`` and the server closes the connection after it (RFC 9110 15.5.14, 9112 9.6),
whatever answered. A request without a body (no ``Content-Length`` or one of 0, no ``Transfer-Encoding``), or one
the app read to its end, keeps its connection.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CloseUnreadBodyMiddleware", "has_body"]


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body: a ``Transfer-Encoding``, or a ``Content-Length`` other than 0."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class CloseUnreadBodyMiddleware:
    """Adds ``Connection: close`` to an answer that starts before the request's body was received to its end
    (module docstring); uvicorn then closes the connection once the answer is sent.

    Parameters
    ----------
    app : ASGI app
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        body_done = False

        async def receive_tracked() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True  # the body's last chunk, or the client hung up
            return message

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_done:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive_tracked, send_closing)
