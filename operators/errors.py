"""Errors of operators/: ``BadEvent`` names the field, the reason and the value."""

from __future__ import annotations

__all__ = ["OperatorError", "BadEvent"]


class OperatorError(Exception):
    """Root of errors raised by ``operators/``."""


class BadEvent(OperatorError, ValueError):
    """An event that breaks the contract; ``field`` is a JSON path such as ``items[2].item_id``."""

    def __init__(self, field: str, reason: str, value: object = None) -> None:
        shown = value if not isinstance(value, (bytes, str)) or len(value) <= 80 else value[:80]
        super().__init__(f"{field}: {reason}; got {shown!r}")
        self.field, self.reason, self.value = field, reason, value
