"""Schemathesis hooks of ``bench/fuzz_api.py``: what the API's schema says in words, taught to the generator.

Two rules of the campaign body are not JSON Schema: its ``filter`` and ``boosters`` are IQL
(``format: iql-filter`` / ``iql-boosters``, a context-free language whose attribute names and
types come from the live catalog), and arm names are unique within a campaign. So that positive
data is valid data, this module

- registers a strategy for each IQL format that writes conditions over the catalog's attributes
  (``FUZZ_CATALOG_ATTRIBUTES``: ``{"name": "type"}`` as ``GET /v1/catalog`` lists them), with
  every operator form of ``api/iql/LANGUAGE.md`` a campaign can use without request context;
- drops *positive* cases whose arms repeat a name (negative cases are left alone);
- points half of the *positive* cases of ``GET /v1/analytics/campaigns/{campaign_id}`` and
  ``GET /v1/items/{item_id}`` at ids that exist (``FUZZ_EXISTING_IDS``), so those operations run
  their report and lookup, not only a 404 (a valid id for another valid id: still positive data).

Nothing here filters failures or responses: every check of ``--checks all`` runs on every case.
Loaded by schemathesis from ``SCHEMATHESIS_HOOKS`` (a file path), set by ``bench/fuzz_api.py``.
"""

from __future__ import annotations

import json
import os
import string
from typing import Any

import schemathesis
from hypothesis import strategies as st

__all__ = ["boosters_strategy", "filter_strategy"]

_ATTRS: dict[str, str] = json.loads(os.environ.get("FUZZ_CATALOG_ATTRIBUTES", "{}"))
_EXISTING: dict[str, list[str]] = json.loads(os.environ.get("FUZZ_EXISTING_IDS", "{}"))
_POINTED = ("/v1/analytics/campaigns/{campaign_id}", "/v1/items/{item_id}")
_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " _-'é\"\\", max_size=12)
_NUM = st.one_of(st.integers(-10**6, 10**6).map(str),
                 st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.6g}"))
_OPS = ("==", "!=", "<", "<=", ">", ">=")


def _name(name: str) -> str:
    return name if name.isidentifier() and name.isascii() else f"`{name}`"


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _strings(draw: st.DrawFn) -> str:
    values = draw(st.lists(_TEXT.map(_literal), min_size=1, max_size=4))
    return "[" + ", ".join(values) + "]" if draw(st.booleans()) else "(" + ", ".join(values) + ")"


@st.composite
def _predicate(draw: st.DrawFn) -> str:
    if not _ATTRS:
        return draw(st.sampled_from(["true", "false", "1 < 2"]))
    name = draw(st.sampled_from(sorted(_ATTRS)))
    kind, a = _ATTRS[name], _name(name)
    null = draw(st.sampled_from(["", f"{a} IS NULL", f"{a} IS NOT NULL"]))
    if null and draw(st.integers(0, 5)) == 0:
        return null
    if kind == "string":
        form = draw(st.sampled_from(["eq", "in"]))
        if form == "eq":
            return f"{a} {draw(st.sampled_from(['==', '!=']))} {_literal(draw(_TEXT))}"
        return f"{a} {draw(st.sampled_from(['IN', 'NOT IN']))} {_strings(draw)}"
    if kind == "bool":
        return draw(st.sampled_from([a, f"{a} == true", f"{a} != false", f"NOT {a}", f"{a} IN [true]"]))
    if kind == "list of strings":
        form = draw(st.sampled_from(["CONTAINS", "ANY", "ALL"]))
        if form == "CONTAINS":
            return f"{a} CONTAINS {_literal(draw(_TEXT))}"
        return f"{a} {form} {_strings(draw)}"
    # number or timestamp
    value = draw(_NUM) if kind == "number" else draw(st.sampled_from(
        ["now() - 7d", "now() + 12h", "'2026-05-01'", "\"2024-01-01T10:00:00Z\"", "1700000000"]))
    form = draw(st.sampled_from(["cmp", "between", "arith", "in"]))
    if form == "between":
        lo, hi = sorted([draw(_NUM), draw(_NUM)], key=float) if kind == "number" else ("now() - 30d", "now()")
        return f"{a} {draw(st.sampled_from(['BETWEEN', 'NOT BETWEEN']))} {lo} AND {hi}"
    if form == "arith" and kind == "number":
        return f"{a} {draw(st.sampled_from(_OPS))} {value} * {draw(st.integers(1, 9))} - 1"  # arithmetic on values
    if form == "in" and kind == "number":
        return f"{a} IN [{', '.join(draw(st.lists(_NUM, min_size=1, max_size=4)))}]"
    return f"{a} {draw(st.sampled_from(_OPS))} {value}"


def _condition(depth: int = 3) -> st.SearchStrategy[str]:
    if depth == 0:
        return _predicate()
    inner = _condition(depth - 1)
    return st.one_of(
        _predicate(),
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["AND", "OR", "and", "Or"]), inner),
        inner.map(lambda c: f"NOT ({c})"),
        inner.map(lambda c: f"({c})"),
    )


def filter_strategy() -> st.SearchStrategy[str]:
    """IQL filters over ``FUZZ_CATALOG_ATTRIBUTES`` (or empty / white space: no filter)."""
    return st.one_of(st.sampled_from(["", "  "]), _condition())


def boosters_strategy() -> st.SearchStrategy[str]:
    """One to three ``BOOST <weight >= 0> IF <condition>`` clauses (or empty: none)."""
    clause = st.builds(lambda w, c: f"BOOST {w:g} IF {c}", st.floats(0, 100, allow_nan=False), _condition(2))
    return st.one_of(st.just(""), st.lists(clause, min_size=1, max_size=3).map("\n".join))


schemathesis.openapi.format("iql-filter", filter_strategy())
schemathesis.openapi.format("iql-boosters", boosters_strategy())


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """Positive campaign bodies: arm names unique (the schema's words; JSON Schema has no unique-by-key)."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return True
    arms = case.body.get("arms")
    if not isinstance(arms, list):
        return True
    names = [a.get("name") for a in arms if isinstance(a, dict)]
    return len(names) == len(set(names))


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Positive cases of the analytics report and the item lookup: every other one names an existing id."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive or case.operation.path not in _POINTED:
        return case
    for name, value in (case.path_parameters or {}).items():
        ids = _EXISTING.get(name)
        digest = sum(str(value).encode())
        if ids and digest % 2 == 0:
            case.path_parameters[name] = ids[digest // 2 % len(ids)]
    return case
