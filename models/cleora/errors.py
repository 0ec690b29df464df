"""Errors of the Cleora package, under ``models.errors.ModelError``."""

from __future__ import annotations

from models.errors import ModelError, ModelFormatError

__all__ = ["GraphInputError", "EmptyGraphError", "StoreFormatError"]


class GraphInputError(ModelError, ValueError):
    """Bad graph input; the message names the field (or row), the reason and the value."""

    def __init__(self, field: str, reason: str, value: object = None) -> None:
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{field}: {reason}; got {shown}")
        self.field, self.reason, self.value = field, reason, value


class EmptyGraphError(GraphInputError):
    """No hyperedge with two or more distinct nodes was found, so there is nothing to embed."""


class StoreFormatError(ModelFormatError):
    """An embedding store directory is missing a file or its manifest disagrees with the arrays."""
