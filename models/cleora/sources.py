"""Hyperedge rows from Cleora TSV files, from the event log (one graph per event type) and from titles.

Every function returns plain rows plus the column spec to give to ``build_graph``; nothing
here knows about Kafka or the event schema classes — an event is a ``Mapping`` with the
project's fields: ``user_id``, optional ``session_id``, ``item_id`` or ``items`` (a list of
``{"item_id", "quantity", "price"}``), ``type`` and ``ts``.

Labels of the grouping column are prefixed with its name (``"user:17"``, ``"session:9"``) so
that a user and an item that share a shop id stay two nodes; item labels are the item ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from models.cleora.errors import GraphInputError

__all__ = ["read_tsv", "rows_from_events", "rows_from_titles", "EVENT_FIELDS"]

EVENT_FIELDS = ("event_id", "ts", "type", "user_id", "session_id", "item_id", "items", "quantity", "price",
                "store_id", "query")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def read_tsv(path: Path | str) -> Iterator[str]:
    """Lines of a Cleora-style TSV file (one hyperedge per line), without the newline.

    Fields are separated by tab, entities of a complex field by space; ``build_graph``
    splits them according to its column spec. Blank lines are skipped.
    """
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if line.strip():
                yield line


def _event_items(ev: Mapping[str, Any], i: int) -> list[str]:
    if "items" in ev and ev["items"] is not None:
        items = ev["items"]
        if not isinstance(items, list):
            raise GraphInputError(f"event {i}: items", "must be a list of {item_id, quantity, price}", items)
        return [str(it["item_id"]) for it in items if isinstance(it, Mapping) and it.get("item_id") not in (None, "")]
    item = ev.get("item_id")
    return [] if item in (None, "") else [str(item)]


def rows_from_events(
    events: Iterable[Mapping[str, Any]],
    *,
    group_by: Literal["user_id", "session_id", "event"] = "session_id",
    types: Collection[str] | None = None,
    shape: Literal["bipartite", "clique"] = "bipartite",
    item_to_node: Mapping[str, str] | Callable[[str], str | None] | None = None,
) -> tuple[list[list[Any]], str]:
    """Rows of one interaction graph from events.

    Parameters
    ----------
    events : iterable of mappings
        Events in the project's format (any order; the graph does not depend on it).
    group_by : {"user_id", "session_id", "event"}
        What an item links to: a user, a session (falls back to the user when an event has
        no ``session_id``), or each event itself (a basket hyperedge from ``items``).
    types : collection of str, optional
        Event types to keep (e.g. ``{"purchase"}``); all when None.
    shape : {"bipartite", "clique"}
        ``"bipartite"``: rows ``[group_label, items]`` with columns
        ``"<group> complex::item"`` (user–item, session–item graphs; the group gets a vector);
        ``"clique"``: rows ``[items]`` with columns ``"complex::reflexive::item"`` (items of a
        group linked to each other, Cleora's usual session/basket graph).
    item_to_node : mapping or callable, optional
        Map an item id to another node (e.g. its brand for a user–brand graph); items
        mapping to None/absent are skipped.

    Returns
    -------
    (rows, columns) : list of rows and the column spec for ``build_graph``.

    Raises
    ------
    GraphInputError
        If an event has an unknown ``group_by`` field value (missing user_id), a non-list
        ``items``, or ``group_by`` is not one of the three names.
    """
    if group_by not in ("user_id", "session_id", "event"):
        raise GraphInputError("group_by", "must be 'user_id', 'session_id' or 'event'", group_by)
    if shape not in ("bipartite", "clique"):
        raise GraphInputError("shape", "must be 'bipartite' or 'clique'", shape)
    mapper = item_to_node.get if isinstance(item_to_node, Mapping) else item_to_node
    groups: dict[str, list[str]] = {}
    for i, ev in enumerate(events):
        if types is not None and ev.get("type") not in types:
            continue
        items = _event_items(ev, i)
        if mapper is not None:
            items = [m for m in map(mapper, items) if m is not None]
        if group_by == "event":
            key = f"event:{ev.get('event_id', i)}"
        else:
            who = ev.get(group_by)
            if who in (None, "") and group_by == "session_id":
                who = ev.get("user_id")
            if who in (None, ""):
                raise GraphInputError(f"event {i}: {group_by}", "is required to group items", ev)
            key = f"{'user' if group_by == 'user_id' or ev.get('session_id') in (None, '') else 'session'}:{who}"
        groups.setdefault(key, []).extend(items)
    if shape == "clique":
        return [[items] for items in groups.values()], "complex::reflexive::item"
    name = "event" if group_by == "event" else group_by.removesuffix("_id")
    return [[key, items] for key, items in groups.items()], f"{name} complex::item"


def rows_from_titles(titles: Mapping[str, str], *, transient_items: bool = True,
                     min_word_len: int = 2) -> tuple[list[list[Any]], str]:
    """Star-expansion rows of a text graph: each item is the virtual node linking its title words.

    Parameters
    ----------
    titles : mapping of item id to title text
    transient_items : bool
        Items are transient virtual nodes (only words are returned); set False to also get
        item vectors (the mean of their words' vectors after propagation).
    min_word_len : int
        Shorter words are dropped. Words are lower-cased runs of letters/digits.

    Returns
    -------
    (rows, columns) : rows ``[item_id, words]``, columns ``"[transient::]item complex::word"``.
    """
    rows = []
    for item, title in titles.items():
        words = [w for w in _WORD.findall(str(title).lower()) if len(w) >= min_word_len]
        rows.append([str(item), [f"w:{w}" for w in words]])
    return rows, f"{'transient::' if transient_items else ''}item complex::word"
