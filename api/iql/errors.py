"""Errors of the items query language and of the catalog index it runs on."""

from __future__ import annotations

__all__ = ["CatalogSchemaError", "CatalogWidthError", "IQLError"]


class IQLError(ValueError):
    """A query that cannot be parsed, compiled or bound, with the place it went wrong.

    Raised by the parser (syntax), the compiler (unknown attribute, type mismatch; at campaign
    save time) and the evaluator (a request parameter that is missing or has the wrong type).
    The API maps it to HTTP 400.

    Parameters
    ----------
    line, column : int
        1-based position in the query text of the offending token.
    expected : str
        What the language wanted there, in words (``"a value"``, ``"one of ')', 'AND', 'OR'"``).
    found : str
        What it got, quoted (``"'AND'"``, ``"end of input"``, ``"string 'cheap'"``).
    after : str, optional
        The token the expectation follows (``"'=='"``), named in the message when given.
    param : str, optional
        The request parameter (without ``$``) that is missing or does not fit its use, when that
        is the error (the API names it as the field of its 400).
    """

    def __init__(self, line: int, column: int, expected: str, found: str, after: str | None = None,
                 param: str | None = None) -> None:
        where = f" after {after}" if after else ""
        super().__init__(
            f"IQL error at line {line}, column {column}: expected {expected}{where}, found {found}"
        )
        self.line, self.column, self.expected, self.found, self.after = line, column, expected, found, after
        self.param = param

    def __repr__(self) -> str:
        return (
            f"IQLError(line={self.line}, column={self.column}, expected={self.expected!r}, "
            f"found={self.found!r}, after={self.after!r})"
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready body for an HTTP 400: position, expectation and the full message."""
        return {
            "line": self.line,
            "column": self.column,
            "expected": self.expected,
            "found": self.found,
            "message": str(self),
            **({"param": self.param} if self.param is not None else {}),
        }


class CatalogSchemaError(ValueError):
    """An item attribute whose value does not fit the attribute's type (or no type at all).

    Parameters
    ----------
    item_id : str
        The item being indexed.
    attribute : str
        The offending attribute.
    expected : str
        The attribute's type so far (``"number"``) or the supported kinds.
    value : object
        The value that was refused.
    """

    def __init__(self, item_id: str, attribute: str, expected: str, value: object) -> None:
        super().__init__(
            f"item {item_id!r}: attribute {attribute!r} must be {expected}; got {value!r} ({type(value).__name__})"
        )
        self.item_id, self.attribute, self.expected, self.value = item_id, attribute, expected, value


class CatalogWidthError(CatalogSchemaError):
    """An item that would add attribute names beyond the catalog's limit of distinct names
    (``api.catalog_max_attribute_names``; the rule is ``operators.catalog_rule.check_new_names``).

    Parameters
    ----------
    item_id : str
        The item being indexed.
    attribute : str
        The first new name it brings.
    reason : str
        The rule's message (the names, the count they would reach, the limit and its setting).
    """

    def __init__(self, item_id: str, attribute: str, reason: str) -> None:
        ValueError.__init__(self, f"item {item_id!r}: {reason}")
        self.item_id, self.attribute, self.expected, self.value = item_id, attribute, "a known name", None
