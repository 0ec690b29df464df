"""The identifier rule, defined once: what a user, item, session, store or event id may be and its canonical form.

Every edge applies it (API parameters and bodies, the Kafka parse, replay readers, the catalog
publisher and index), so the same id arriving as ``12345``, ``12345.0`` or ``"12345.0"`` is one id.

=================  ==============================================================================
rule               canonical form
=================  ==============================================================================
JSON integer       its decimal string (``12345`` -> ``"12345"``), never via float formatting
JSON float         only when integral and exact (``|x| < 2**53``): ``12345.0`` -> ``"12345"``;
                   ``1.5``, NaN, inf are refused
string             surrounding white space removed; a decimal integer written with a zero
                   fraction loses it (``"12345.0"`` -> ``"12345"``, how spreadsheets and pandas
                   write integer ids); other text is kept as is
length             1 .. ``MAX_ID_CHARS`` (256) characters after that
characters         any printable Unicode, spaces, ``/ + % &`` included; control, format and
                   line-separator characters (tab, newline, NUL, zero-width, U+2028) are refused,
                   and so are lone surrogates and U+FFFD (bytes that were not UTF-8, e.g. ``%ff``)
bool, null, other  refused
=================  ==============================================================================
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import BeforeValidator

__all__ = ["MAX_ID_CHARS", "BadId", "CanonicalId", "canonical_id", "has_control", "is_canonical_id"]

MAX_ID_CHARS = 256
_ZERO_FRACTION = re.compile(r"^([+-]?\d+)\.0+$")
_EXACT_FLOAT = float(2**53)


class BadId(ValueError):
    """An id that breaks the rule; ``reason`` says which part, ``value`` is what was given."""

    def __init__(self, reason: str, value: object) -> None:
        shown = value[:80] + "…" if isinstance(value, str) and len(value) > 80 else value
        super().__init__(f"{reason}; got {shown!r}")
        self.reason, self.value = reason, value


_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})  # control, format, surrogate, line/paragraph separators


def has_control(s: str) -> bool:
    """True if ``s`` holds a control, format or surrogate character or a line/paragraph separator (what no id,
    and no value a request names items by, may hold)."""
    return any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in s)


def canonical_id(value: object) -> str:
    """The canonical string of an id (see the module's table).

    Parameters
    ----------
    value : str, int or float
        The id as it arrived (JSON value, CSV cell, Kafka key text, URL path segment).

    Returns
    -------
    str, 1 .. ``MAX_ID_CHARS`` printable characters.

    Raises
    ------
    BadId
        If the value is of another kind, empty, too long, holds a control character, or is a
        float that is not an exact integer.

    Examples
    --------
    >>> canonical_id(12345), canonical_id(12345.0), canonical_id(" 12345.0 "), canonical_id("a/b c")
    ('12345', '12345', '12345', 'a/b c')
    """
    if isinstance(value, bool) or value is None:
        raise BadId("must be a string or an integer", value)
    if isinstance(value, int):
        s = str(value)
    elif isinstance(value, float):
        if not (value == value and abs(value) < _EXACT_FLOAT and value.is_integer()):
            raise BadId("must be a string or an integer (a number with a fraction, or one beyond 2**53 that JSON "
                        "parsers turn into an inexact float, is not an id: send it as a string)", value)
        s = str(int(value))
    elif isinstance(value, str):
        s = value.strip()
        m = _ZERO_FRACTION.match(s)
        if m is not None:
            s = m.group(1).lstrip("+")
    else:
        raise BadId("must be a string or an integer", value)
    if not s:
        raise BadId("must be a non-empty string", value)
    if len(s) > MAX_ID_CHARS:
        raise BadId(f"must be at most {MAX_ID_CHARS} characters (has {len(s)})", value)
    if not s.isprintable() and has_control(s):
        raise BadId("must not hold control characters (tab, newline, NUL, ...)", value)
    if not s.isascii() and "\ufffd" in s:  # a decoder replaced bytes that were not UTF-8
        raise BadId("must be valid UTF-8 (it holds U+FFFD: bytes that were not UTF-8, e.g. %ff)", value)
    return s


def is_canonical_id(value: object) -> bool:
    """True if ``value`` is already a canonical id string (``canonical_id(value) == value``)."""
    try:
        return isinstance(value, str) and canonical_id(value) == value
    except BadId:
        return False


def _pydantic_id(value: object) -> str:
    return canonical_id(value)


CanonicalId = Annotated[str, BeforeValidator(_pydantic_id)]
"""A pydantic field type applying the rule (``BadId`` becomes a validation error naming the field)."""
