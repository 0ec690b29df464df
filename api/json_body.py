"""A request's JSON body: the content-codings the API reads, and reading it within size and time bounds."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from api.errors import ApiError
from api.json import json_response

__all__ = ["read_body", "refuse_content_coding"]

log = logging.getLogger(__name__)


def _unsupported_coding(request: Request, header: str, understood: str) -> str | None:
    """The first coding in the request's ``header`` (``content-encoding`` or ``transfer-encoding``) other than
    ``understood`` (``identity``, ``chunked``), lower case; None if there is none."""
    for value in request.headers.getlist(header):
        for coding in value.split(","):
            coding = coding.strip().lower()
            if coding and coding != understood:
                return coding
    return None


def refuse_content_coding(request: Request) -> Response | None:
    """The 415 for a body in a content-coding other than ``identity`` (``gzip``, ``br``, ...) or a transfer-coding
    other than ``chunked``; None for a plain body.

    The API reads bodies as sent: a compressed one would otherwise be parsed as JSON and refused as malformed
    (400), and uvicorn's parsers undo only ``chunked``, so ``Transfer-Encoding: gzip, chunked`` reached the app
    as if it were plain. Call it before reading the body. The answer names the coding; a content-coding's says
    ``Accept-Encoding: identity`` (RFC 7694). RFC 9112 6.1 suggests 501 for a transfer coding the server does
    not understand; it is a 415 here because bad input is a 4xx at this API (a 5xx reads as the server's fault
    in a shop's monitoring)."""
    transfer = _unsupported_coding(request, "transfer-encoding", "chunked")
    if transfer is not None:
        return json_response({"error": {"field": "transfer-encoding", "reason": (
            f"the API does not decode transfer-coding {transfer[:100]!r}: send the body as it is, with "
            "Content-Length or Transfer-Encoding: chunked")}}, status_code=415)
    coding = _unsupported_coding(request, "content-encoding", "identity")
    if coding is None:
        return None
    return json_response({"error": {"field": "content-encoding", "reason": (
        f"the API does not decode content-coding {coding[:100]!r}: send the JSON body uncompressed "
        "(no Content-Encoding, or identity)")}}, status_code=415, headers={"Accept-Encoding": "identity"})


async def read_body(request: Request, limit: int, timeout_s: float, total_s: float,
                    limit_name: str = "api.max_body_bytes") -> bytes:
    """The body, read chunk by chunk: refused (413) as soon as it passes ``limit`` bytes (``limit_name`` in the
    message), before the rest arrives, and (408) when no chunk comes for ``timeout_s`` or the whole body has not
    come within ``total_s`` seconds (a half-sent or dripping request does not hold the connection). A client that
    closes the connection before its body is complete is a client error (400, which it never reads) and one INFO
    line, not an unhandled error with its traceback."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body", f"{declared} bytes > {limit_name}={limit}")
    chunks, n = [], 0
    stream = request.stream().__aiter__()
    deadline = time.monotonic() + total_s
    while True:
        left = deadline - time.monotonic()
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), min(timeout_s, max(left, 0.0)))
        except StopAsyncIteration:
            break
        except ClientDisconnect:
            log.info("%s %s: the client closed the connection after %d of %s body bytes", request.method,
                     request.url.path, n, declared or "?")
            raise ApiError(400, "body", "the client closed the connection before the body was complete") from None
        except TimeoutError:
            if left <= timeout_s:
                raise ApiError(408, "body", f"the body did not arrive within api.body_total_s={total_s:g} s") from None
            raise ApiError(408, "body", f"no data for api.body_timeout_s={timeout_s:g} s") from None
        n += len(chunk)
        if n > limit:
            raise ApiError(413, "body", f"more than {limit_name}={limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
