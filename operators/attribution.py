"""Attribution: which served list (campaign, arm) earns a reward for a feedback event.

Pure functions shared by the API's optimizer feed (``api/feedback.py``) and the analytics flow,
so the bandit and the dashboard never disagree. The rules, in order:

1. A feedback event is a rec_click or a campaign's goal event (``goal_types``).
2. It refers to a served list by ``request_id`` (any goal event type may carry it); without a
   ``request_id``, last-touch (``last_touch``): the newest list served to the same user before
   the event, within the window, that contains one of the event's items. "Before the event" is
   before its *attribution time* ``attribution_ts``: the older of its ``ts`` and the time the log
   received it (the Kafka timestamp of its record, stamped by the API's producer for events posted
   to ``/v1/events``), so a list served after such an event reached the server never earns it,
   whatever ``ts`` the client wrote. Both readers (the optimizer's and the analytics flow) fold an
   event only once the served lists of its partition have been read past that time (for an event
   naming a ``request_id``: past its receive time, as its list was served before it) plus
   ``SERVED_ORDER_SLACK_S`` (``served_lists_read``), or after a wall-clock wait when no newer list
   comes: so which lists are candidates does not depend on how the reads of the two topics
   interleave.
3. The served list must be known (an ``Impression``) and served to the event's user (lists served
   without a user id excepted); if the event names a ``campaign_id`` or an ``arm``, they must match
   the list's; if it names items, one of them must be on the list as displayed: the first
   ``rec_impression`` of a list (``IMPRESSION_TYPE``) narrows it to the items it shows (``shown``).
4. ``0 <= event.ts - impression.ts <= impression.window_s`` (late or early feedback is ignored).
5. One reward per served list (a Bernoulli trial: the list converted or it did not), one use
   per ``event_id`` (duplicates from producer retries are ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from operators.schema import Event

__all__ = ["Impression", "Reward", "Attribution", "REQUEST_TYPE", "ANONYMOUS_USER", "LAST_TOUCH_LISTS", "SERVED_ORDER_SLACK_S",
           "IMPRESSION_TYPE", "goal_types", "impression_of", "attribute", "shown_as", "attribution_ts", "attribution_time",
           "served_lists_read", "last_touch", "attribute_events"]

REQUEST_TYPE = "rec_request"
"""Event type of a served list: the API produces one per campaign list into the events topic."""
ANONYMOUS_USER = "anonymous"
"""User id (and Kafka key) of the record of a list served without a user id; such a list is bound to no user
(the optimizer credits it to any user's event naming it; the analytics flow, which finds a list among its
event's user's, only to events of this user id)."""
LAST_TOUCH_LISTS = 200
"""A user's newest served lists that last touch looks among (rule 2), in the optimizer's reader and the
analytics flow alike: with fewer in one of them, a user served more lists than that within a window would
have an event credited by one reader and not by the other."""
IMPRESSION_TYPE = "rec_impression"
"""Event type a client sends when it displays a served list (``request_id`` and the items shown)."""
SERVED_ORDER_SLACK_S = 1.0
"""How far out of their ``ts`` order two served lists of one partition may be appended, seconds: a list's ``ts``
is taken when its request starts, and its record is produced once the list is served (tens of ms at a loaded
p99), by one of several API workers, each with a few ms of linger (``operators.kafka``). A list appended later
than this after a newer one may be credited differently by two readers."""


class Impression(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One served list of a campaign (a pull of ``arm``), as registered by its ``rec_request`` event.

    Not tracked by Python's cycle collector (``gc=False``: its fields are strings, numbers and a
    list of strings, which cannot form cycles), so hundreds of thousands of open lists do not
    lengthen garbage-collection pauses.

    Attributes
    ----------
    request_id : str
        Id returned to the client with the list; feedback events carry it.
    campaign_id, arm : str
        The campaign and the arm the optimizer picked (``control`` for the held-out group).
    ts : float
        Epoch seconds the list was served.
    goal : str
        The campaign's goal event type (``click``, ``add_to_cart``, ``purchase``, ...).
    window_s : float
        Attribution window, seconds after ``ts``.
    user_id : str or None
        Who it was served to (last-touch matching); None for anonymous requests.
    segment : str
        Optimizer segment ("" when the campaign has none).
    items : list of str
        The served item ids, best first; once ``shown``, those of them the first ``rec_impression`` displayed.
    shown : bool
        A ``rec_impression`` of the list was applied (``shown_as``): later ones change nothing.
    """

    request_id: str
    campaign_id: str
    arm: str
    ts: float
    goal: str
    window_s: float
    user_id: str | None = None
    segment: str = ""
    items: list[str] = msgspec.field(default_factory=list)
    shown: bool = False


class Reward(msgspec.Struct, frozen=True):
    """A served list that converted: the event that made it, and how long it took."""

    request_id: str
    campaign_id: str
    arm: str
    segment: str
    event_id: str
    event_type: str
    ts: float
    delay_s: float


@dataclass
class Attribution:
    """Result of ``attribute_events``: rewards, and why the other events earned none (reason -> count)."""

    rewards: list[Reward] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def goal_types(goal: str) -> frozenset[str]:
    """Event types that count as reaching ``goal``: a click goal also counts ``rec_click``.

    Examples
    --------
    >>> sorted(goal_types("click"))
    ['click', 'rec_click']
    >>> sorted(goal_types("purchase"))
    ['pos_purchase', 'purchase']
    """
    if goal in ("click", "rec_click"):
        return frozenset({"click", "rec_click"})
    if goal == "purchase":
        return frozenset({"purchase", "pos_purchase"})
    return frozenset({goal})


def impression_of(event: Event, default_goal: str = "click", default_window_s: float = 86400.0) -> Impression | None:
    """The served list a ``rec_request`` event registers (None if it lacks request_id or campaign_id).

    Extra fields read: ``goal``, ``window_s``, ``segment``, ``served_items`` (list of item ids;
    else the event's own items).
    """
    if event.request_id is None or event.campaign_id is None:
        return None
    extra = event.extra or {}
    window = extra.get("window_s")
    served = extra.get("served_items")
    return Impression(
        request_id=event.request_id, campaign_id=event.campaign_id, arm=event.arm or "unknown", ts=event.ts,
        goal=str(extra.get("goal") or default_goal),
        window_s=float(window) if isinstance(window, int | float) and not isinstance(window, bool) else default_window_s,
        user_id=None if event.user_id == ANONYMOUS_USER else event.user_id, segment=str(extra.get("segment") or ""),
        items=[str(i) for i in served] if isinstance(served, list) else event.item_ids())


def attribute(event: Event, impression: Impression | None) -> Reward | str:
    """Decide whether ``event`` rewards ``impression`` (rules 1, 3 and 4 of the module docstring).

    Returns
    -------
    Reward, or a reason string when it does not: ``unknown_request``, ``user_mismatch``, ``not_goal``,
    ``campaign_mismatch``, ``arm_mismatch``, ``not_in_list`` (the event names items, none of them on the
    list), ``before_serving``, ``outside_window``.
    """
    if impression is None:
        return "unknown_request"
    if impression.user_id is not None and impression.user_id != event.user_id:
        return "user_mismatch"
    if event.type not in goal_types(impression.goal):
        return "not_goal"
    if event.campaign_id is not None and event.campaign_id != impression.campaign_id:
        return "campaign_mismatch"
    if event.arm is not None and event.arm != impression.arm:
        return "arm_mismatch"
    named = event.item_ids()
    if named and not set(named).intersection(impression.items):
        return "not_in_list"
    delay = event.ts - impression.ts
    if delay < 0:
        return "before_serving"
    if delay > impression.window_s:
        return "outside_window"
    return Reward(impression.request_id, impression.campaign_id, impression.arm, impression.segment,
                  event.event_id, event.type, event.ts, delay)


def shown_as(impression: Impression, event: Event) -> Impression | None:
    """``impression`` narrowed by a ``rec_impression`` ``event``: its items the event shows, in the order shown,
    each once, and ``shown``; None when it changes nothing (already shown). An impression that shows none of
    the list's items marks it shown and keeps its items."""
    if impression.shown:
        return None
    served = set(impression.items)
    displayed = [i for i in dict.fromkeys(event.item_ids()) if i in served]
    return msgspec.structs.replace(impression, items=displayed or impression.items, shown=True)


def attribution_ts(event: Event, received_ts: float | None) -> float:
    """The time last-touch attribution takes ``event`` to have happened: the older of its ``ts`` and
    ``received_ts`` (epoch s, the Kafka timestamp of its record; None when the log gave none)."""
    return attribution_time(event.ts, received_ts)


def attribution_time(ts: float, received_ts: float | None) -> float:
    """``attribution_ts`` from an event's ``ts`` alone (a reader that has not parsed the event), epoch s."""
    return ts if received_ts is None else min(ts, received_ts)


def served_lists_read(event: Event, received_ts: float | None, served_clock: float) -> bool:
    """True once every list ``event`` can be credited to has been read, given ``served_clock``: the newest ``ts``
    of the lists read from the served partition of its user (rule 2 of the module docstring). An event naming a
    ``request_id`` waits by its receive time (its list was served before it, whatever its ``ts`` says), any
    other by its ``attribution_ts``."""
    at = received_ts if event.request_id is not None and received_ts is not None else attribution_ts(event, received_ts)
    return at + SERVED_ORDER_SLACK_S <= served_clock


def last_touch(event: Event, served: Sequence[Impression], received_ts: float | None = None) -> Impression | None:
    """The newest of ``served`` (one user's lists, any order) served at or before the event's
    ``attribution_ts`` (its ``ts``, or ``received_ts`` when older), within its window, holding one of
    the event's items; None if there is none."""
    items = set(event.item_ids())
    until = attribution_ts(event, received_ts)
    best: Impression | None = None
    for imp in served:
        if imp.ts <= until and event.ts <= imp.ts + imp.window_s and items.intersection(imp.items):
            if best is None or imp.ts > best.ts:
                best = imp
    return best


def attribute_events(
    events: Iterable[Event],
    find: Callable[[str], Impression | None],
    *,
    rewarded: Container[str] = frozenset(),
    seen_event_ids: Container[str] = frozenset(),
    served_to: Callable[[str], Sequence[Impression]] | None = None,
    received_ts: float | None = None,
) -> Attribution:
    """Rewards earned by ``events`` (all five rules), in event order.

    Parameters
    ----------
    events : iterable of Event
        Any events; those that are neither rec_click nor a goal of the list they refer to are skipped.
    find : callable request_id -> Impression or None
        Look-up of served lists.
    rewarded : container of str
        request_ids that already earned their reward (earlier batches).
    seen_event_ids : container of str
        event_ids already used (earlier batches).
    served_to : callable user_id -> sequence of Impression, optional
        A user's recent lists; enables last-touch for events without ``request_id``.
    received_ts : float, optional
        When the log received ``events`` (the Kafka timestamp of their records, epoch s): last touch
        takes no list served after it (``attribution_ts``).

    Returns
    -------
    Attribution
        ``rewards`` (at most one per request_id, one per event_id) and skip counts by reason
        (``no_request`` for events without request_id and no last-touch match, ``duplicate_event``,
        ``already_rewarded`` plus those of ``attribute``).
    """
    out = Attribution()
    new_rewarded: set[str] = set()
    new_events: set[str] = set()
    for ev in events:
        if ev.event_id in seen_event_ids or ev.event_id in new_events:
            out.skip("duplicate_event")
            continue
        if ev.request_id is not None:
            imp = find(ev.request_id)
        elif served_to is not None:
            imp = last_touch(ev, served_to(ev.user_id), received_ts)
            if imp is None:
                out.skip("no_request")
                continue
        else:
            out.skip("no_request")
            continue
        decision = attribute(ev, imp)
        if isinstance(decision, str):
            out.skip(decision)
            continue
        if decision.request_id in rewarded or decision.request_id in new_rewarded:
            out.skip("already_rewarded")
            continue
        new_rewarded.add(decision.request_id)
        new_events.add(ev.event_id)
        out.rewards.append(decision)
    return out
