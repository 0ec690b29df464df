"""Cleora's column spec: ``"transient::session complex::item"`` parsed once, checked by name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.cleora.errors import GraphInputError

__all__ = ["Column", "parse_columns", "MODIFIERS"]

MODIFIERS = ("complex", "reflexive", "transient")


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a hyperedge row.

    Attributes
    ----------
    name : str
        Column name, e.g. ``"item"``.
    complex : bool
        The field holds several entities (a list, or space-separated in TSV).
    reflexive : bool
        Entities of this field are linked to each other (clique expansion of the field).
    transient : bool
        Entities of this column take part in propagation but are not returned
        (the virtual nodes of a star expansion).
    """

    name: str
    complex: bool = False
    reflexive: bool = False
    transient: bool = False

    def __str__(self) -> str:
        mods = [m for m in MODIFIERS if getattr(self, m)]
        return "::".join([*mods, self.name])


def parse_columns(spec: str | Sequence[str]) -> tuple[Column, ...]:
    """Parse a Cleora column spec.

    Parameters
    ----------
    spec : str or sequence of str
        Space-separated (or a list of) ``[modifier::]*name`` with modifiers from
        ``complex``, ``reflexive``, ``transient``; e.g. ``"complex::reflexive::item"`` (basket
        cliques) or ``"user complex::item"`` (user–item bipartite graph).

    Returns
    -------
    tuple of Column

    Raises
    ------
    GraphInputError
        On an unknown modifier (named), a duplicate or empty name, no columns, more than two
        columns, a single column that is not ``complex::reflexive``, a reflexive column that is
        not complex, or only transient columns.
    """
    parts = spec.split() if isinstance(spec, str) else list(spec)
    if not parts:
        raise GraphInputError("columns", "at least one column is required", spec)
    cols = []
    for part in parts:
        *mods, name = part.split("::")
        bad = [m for m in mods if m not in MODIFIERS]
        if bad:
            raise GraphInputError("columns", f"unknown modifier {bad[0]!r} in {part!r} "
                                  f"(known: {', '.join(MODIFIERS)})", spec)
        if not name:
            raise GraphInputError("columns", f"empty column name in {part!r}", spec)
        col = Column(name, "complex" in mods, "reflexive" in mods, "transient" in mods)
        if col.reflexive and not col.complex:
            raise GraphInputError("columns", f"reflexive column {name!r} must also be complex", spec)
        cols.append(col)
    names = [c.name for c in cols]
    if len(set(names)) != len(names):
        raise GraphInputError("columns", "column names must be unique", spec)
    if len(cols) > 2:
        raise GraphInputError("columns", f"at most two columns (one relation) are supported; got {len(cols)}",
                              spec)
    if len(cols) == 1 and not cols[0].reflexive:
        raise GraphInputError("columns", "a single column must be 'complex::reflexive::NAME' "
                              "(it has no other column to link to)", spec)
    if all(c.transient for c in cols):
        raise GraphInputError("columns", "at least one column must not be transient", spec)
    return tuple(cols)
