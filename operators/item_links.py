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


def new_item_links(before: Sequence[str], items: Sequence[str], known: Container[str], window: int = 5, *,
                   before_ts: Sequence[float] | None = None, ts: float = 0.0, max_gap_s: float = float("inf"),
                   max_items: int = 50) -> list[tuple[str, str]]:
    """(unknown item, known item) pairs of one event, in a deterministic order.

    Parameters
    ----------
    before : sequence of str
        The user's item history before this event, oldest first (the last ``window`` count).
    items : sequence of str
        The event's items (repeats count once; the first ``max_items`` distinct ones count).
    known : container of str
        Item ids of the trained version.
    window : int, default 5
        Previous items each event item is paired with.
    before_ts : sequence of float, optional
        Event times of ``before`` (epoch seconds); with ``ts``, previous items older than
        ``max_gap_s`` before the event are not paired (a new visit is not the same context).
    ts : float
        This event's time, epoch seconds.
    max_gap_s : float, default inf
    max_items : int, default 50
        Bounds the pairs of a huge basket to ``max_items * (window + max_items)``.

    Returns
    -------
    list of (new_item, known_item); empty (fast path) when every item involved is known.

    Examples
    --------
    >>> new_item_links(["a", "b", "n1"], ["n2"], known={"a", "b"}, window=2)
    [('n2', 'b')]
    >>> new_item_links(["a"], ["n1", "b"], known={"a", "b"})
    [('n1', 'a'), ('n1', 'b')]
    >>> new_item_links(["a"], ["a", "n1"], known={"a"})  # a pair counts once per event
    [('n1', 'a')]
    >>> new_item_links(["a", "b"], ["n1"], {"a", "b"}, before_ts=[0.0, 100.0], ts=1000.0, max_gap_s=1800.0)
    [('n1', 'a'), ('n1', 'b')]
    >>> new_item_links(["a", "b"], ["n1"], {"a", "b"}, before_ts=[0.0, 100.0], ts=1850.0, max_gap_s=1800.0)
    [('n1', 'b')]
    """
    start = max(len(before) - window, 0) if window > 0 else len(before)
    recent = before[start:]
    if all(i in known for i in items) and all(j in known for j in recent):  # the common case: no allocation
        return []
    if before_ts is not None and max_gap_s != float("inf"):
        recent = [i for i, t in zip(recent, before_ts[start:]) if ts - t <= max_gap_s]
    ctx = list(dict.fromkeys(recent))
    basket = list(dict.fromkeys(items))[:max_items]
    is_known = {x: x in known for x in dict.fromkeys(ctx + basket)}
    if all(is_known.values()):  # the unknown items were beyond the time gap or the basket cap
        return []
    out: list[tuple[str, str]] = []
    counted: set[tuple[str, str]] = set()  # each unordered pair once, whichever list holds it
    for n, i in enumerate(basket):
        i_known = is_known[i]
        for j in ctx + basket[n + 1:]:
            if j == i or is_known[j] == i_known:
                continue
            pair = (j, i) if i_known else (i, j)
            if pair not in counted:
                counted.add(pair)
                out.append(pair)
    return out
