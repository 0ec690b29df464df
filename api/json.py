"""orjson responses, and JSON's names for the types a request body decodes to."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

__all__ = ["JSON_TYPES", "json_response", "json_type"]


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status_code,
                    media_type="application/json", headers=headers)


JSON_TYPES: dict[type, str] = {dict: "object", list: "array", str: "string", int: "number", float: "number",
                               bool: "boolean", type(None): "null"}
"""JSON's name for each type orjson decodes to (``type()`` is exact, so a bool is a boolean, not a number)."""


def json_type(value: object) -> str:
    """JSON's name for the type of ``value`` as orjson decoded it (``object``, ``array``, ``string``, ``number``,
    ``boolean``, ``null``), never a Python type name."""
    return JSON_TYPES.get(type(value), "unknown")
