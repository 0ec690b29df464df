"""Which (new item, known item) pairs an event creates: the stream side of M′·Q for new items.

An item the trained version does not know gets a graph position from the known items it is
used with: an event on item ``i`` pairs ``i`` with the user's ``window`` previous items and
with the other items of the same event (a basket). A pair of one unknown and one known item
counts one link for the unknown one (``state.item_links``); pairs of two known or two unknown
items count nothing. The partitions publish their counts to the ``item-links`` topic, and the
catalog overlay codes the item by M′·Q (``models.emde.cold_start.inductive_codes``).
"""

from __future__ import annotations

from collections.abc import Container, Sequence

__all__ = ["new_item_links"]


def new_item_links(before: Sequence[str], items: Sequence[str], known: Container[str],
                   window: int = 5) -> list[tuple[str, str]]:
    """(unknown item, known item) pairs of one event, in a deterministic order.

    Parameters
    ----------
    before : sequence of str
        The user's item history before this event, oldest first (the last ``window`` count).
    items : sequence of str
        The event's items.
    known : container of str
        Item ids of the trained version.
    window : int, default 5
        Previous items each event item is paired with.

    Returns
    -------
    list of (new_item, known_item); empty (fast path) when every item involved is known.

    Examples
    --------
    >>> new_item_links(["a", "b", "n1"], ["n2"], known={"a", "b"}, window=2)
    [('n2', 'b')]
    >>> new_item_links(["a"], ["n1", "b"], known={"a", "b"})
    [('n1', 'a'), ('n1', 'b')]
    """
    ctx = list(dict.fromkeys(before[-window:])) if window > 0 else []
    if all(i in known for i in items) and all(j in known for j in ctx):
        return []
    out: list[tuple[str, str]] = []
    for n, i in enumerate(items):
        i_known = i in known
        for j in ctx + [x for x in items[n + 1:] if x not in ctx]:
            if j == i:
                continue
            j_known = j in known
            if i_known and not j_known:
                out.append((j, i))
            elif j_known and not i_known:
                out.append((i, j))
    return out
