"""A request's JSON body: the content-codings the API reads, and JSON's names for the types a body decodes to."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.json import json_response

__all__ = ["JSON_TYPES", "json_type", "refuse_content_coding"]

JSON_TYPES: dict[type, str] = {dict: "object", list: "array", str: "string", int: "number", float: "number",
                               bool: "boolean", type(None): "null"}
"""JSON's name for each type orjson decodes to (``type()`` is exact, so a bool is a boolean, not a number)."""


def json_type(value: object) -> str:
    """JSON's name for the type of ``value`` as orjson decoded it (``object``, ``array``, ``string``, ``number``,
    ``boolean``, ``null``), never a Python type name."""
    return JSON_TYPES.get(type(value), "unknown")


def _unsupported_coding(request: Request) -> str | None:
    """The first content-coding of the request other than ``identity`` (lower case), None if there is none."""
    for header in request.headers.getlist("content-encoding"):
        for coding in header.split(","):
            coding = coding.strip().lower()
            if coding and coding != "identity":
                return coding
    return None


def refuse_content_coding(request: Request) -> Response | None:
    """The 415 for a body in a content-coding other than ``identity`` (``gzip``, ``br``, ...), None for a plain one.

    The API reads bodies as sent: a compressed one would otherwise be parsed as JSON and refused as malformed
    (400). Call it before reading the body; the answer names the coding and says ``Accept-Encoding: identity``
    (RFC 7694)."""
    coding = _unsupported_coding(request)
    if coding is None:
        return None
    return json_response({"error": {"field": "content-encoding", "reason": (
        f"the API does not decode content-coding {coding[:100]!r}: send the JSON body uncompressed "
        "(no Content-Encoding, or identity)")}}, status_code=415, headers={"Accept-Encoding": "identity"})
