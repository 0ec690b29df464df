"""The analytics join for one user: served lists <- impressions, clicks, carts, orders -> increments.

Pure functions over one user's ``AnalyticsUser`` state (no Bytewax, no RocksDB); the flow calls
``apply_event`` for each event of a partition, in offset order (all events of a user are on one
partition, so per-user order is the log order).

Which served list an event belongs to is decided by ``operators/attribution.py`` (shared with the
optimizer, so the bandit and the dashboard never disagree):

* ``rec_request`` records of the server-only ``served`` topic (one per served list, from the API;
  ``apply_served``) register the list: ``request_id``, ``campaign_id``, ``arm``; optional extra
  fields ``scenario``, ``goal``, ``window_s``, ``segment`` and ``served_items`` (or ``items``).
  Nothing else registers a list: feedback naming an unknown list counts for nothing, and a
  ``rec_request`` on ``events`` (clients can write there) is skipped (``request_on_events``).
* ``rec_impression`` counts once per list (a list re-displayed is one impression); its items are
  what was actually shown, kept only where the list served them (each once: an impression of 900
  invented ids counts none of them). ``rec_click`` counts once per (list, item), for an item of
  the list (as shown, else as served); a click on anything else is skipped (``click_not_in_list``).
* add-to-carts and order lines are attributed per item: by ``request_id`` when the event has one,
  else **last touch** (``attribution.last_touch``): the newest list served to the user before
  the event, within that list's attribution window (``window_s``, default from settings), that
  contains the item. An order counts once per list it is attributed to, with its attributed
  items and revenue (quantity x price).
* ``rewards``: ``attribution.attribute_events`` exactly as the optimizer applies it (goal event,
  one reward per list).
* Control group: a ``rec_request`` with ``arm == "control"`` puts the user in the campaign's
  control group, any other list in the exposed group (first assignment wins). Every order after
  that counts for the group: orders, items, revenue (with sums of squares for intervals) and
  converted users.

Duplicates: an ``event_id`` seen among the user's last ``_RECENT_IDS``, or within 15 minutes of
event time (``operators/dedupe.py``), is skipped; impressions
and clicks are also deduplicated by list (and item), whatever their event ids. Late events are
counted in the time bucket of their own ``ts``; a conversion is attributed once the lists served
before it have been read (``flows/analytics/logic.py`` holds it until then: ``attribution``'s rule 2),
so a list served after it is never credited.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from operators.attribution import (
    IMPRESSION_TYPE,
    LAST_TOUCH_LISTS,
    Impression,
    Reward,
    attribute,
    attribute_events,
    impression_of,
    last_touch,
    shown_as,
)
from operators.control_group import CONTROL, CONTROL_ARM, EXPOSED
from operators.dedupe import remember_event
from operators.schema import Event

__all__ = ["COUNTER_FIELDS", "GROUP_FIELDS", "JoinRules", "Served", "Membership", "AnalyticsUser",
           "Increments", "apply_event", "apply_served", "encode_user", "decode_user"]

COUNTER_FIELDS: tuple[str, ...] = ("requests", "impressions", "impressed_items", "clicks", "carts", "orders",
                                   "order_items", "revenue", "rewards")
"""Counters per campaign x arm x scenario x bucket (attributed carts/orders/items/revenue)."""
GROUP_FIELDS: tuple[str, ...] = ("users", "converted", "orders", "items", "items_sq", "revenue", "revenue_sq")
"""Stats per campaign x group (exposed/control) x bucket: users assigned, converted, order sums."""

_C = {f: i for i, f in enumerate(COUNTER_FIELDS)}
_G = {f: i for i, f in enumerate(GROUP_FIELDS)}
_RECENT_IDS = 256


@dataclass(frozen=True)
class JoinRules:
    """Configuration of the join (from ``AnalyticsSettings``).

    Attributes
    ----------
    bucket_s : int
        Width of a time bucket, seconds (buckets start at multiples of it, epoch seconds).
    window_s : float
        Attribution window of lists that do not carry ``window_s``.
    campaign_windows_s : dict of str to float
        Per-campaign windows (override ``window_s``).
    default_goal : str
        Goal of lists that do not carry ``goal``.
    """

    bucket_s: int = 3600
    window_s: float = 86400.0
    campaign_windows_s: dict[str, float] = field(default_factory=dict)
    default_goal: str = "click"
    cart_types: frozenset[str] = frozenset({"add_to_cart"})
    order_types: frozenset[str] = frozenset({"purchase", "pos_purchase"})
    request_type: str = "rec_request"
    impression_type: str = IMPRESSION_TYPE
    click_type: str = "rec_click"

    def bucket(self, ts: float) -> int:
        return int(ts // self.bucket_s) * self.bucket_s


class Served(msgspec.Struct, array_like=True):
    """A list served to the user, as the join knows it."""

    imp: Impression
    scenario: str
    requested: bool = False
    impressed: bool = False
    clicked: list[str] = msgspec.field(default_factory=list)


class Membership(msgspec.Struct, array_like=True):
    group: str
    since_ts: float
    converted: bool = False


class AnalyticsUser(msgspec.Struct):
    """One user's join state (stored per user in the analytics database)."""

    served: list[Served] = msgspec.field(default_factory=list)
    groups: dict[str, Membership] = msgspec.field(default_factory=dict)
    rewarded: list[str] = msgspec.field(default_factory=list)
    recent_event_ids: list[str] = msgspec.field(default_factory=list)
    recent_event_ts: list[float] = msgspec.field(default_factory=list)
    last_ts: float = 0.0


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(AnalyticsUser)


def encode_user(u: AnalyticsUser) -> bytes:
    return bytes((1,)) + _enc.encode(u)


def decode_user(raw: bytes) -> AnalyticsUser:
    """Inverse of ``encode_user``; raises ValueError on an unknown version byte."""
    if not raw or raw[0] != 1:
        raise ValueError(f"analytics user state: unknown version byte {raw[:1]!r}")
    return _dec.decode(raw[1:])


@dataclass
class Increments:
    """What a batch adds: counters, group stats, item counts (all deltas) and skip reasons."""

    counters: dict[tuple[str, str, str, int], list[float]] = field(default_factory=dict)
    groups: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)
    items: dict[tuple[str, str, str], int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def count(self, s: Served, bucket: int, name: str, amount: float = 1.0) -> None:
        k = (s.imp.campaign_id, s.imp.arm, s.scenario, bucket)
        row = self.counters.get(k)
        if row is None:
            row = self.counters[k] = [0.0] * len(COUNTER_FIELDS)
        row[_C[name]] += amount

    def group(self, campaign: str, group: str, bucket: int, **amounts: float) -> None:
        k = (campaign, group, bucket)
        row = self.groups.get(k)
        if row is None:
            row = self.groups[k] = [0.0] * len(GROUP_FIELDS)
        for name, a in amounts.items():
            row[_G[name]] += a

    def item(self, campaign: str, kind: str, item_id: str) -> None:
        k = (campaign, kind, item_id)
        self.items[k] = self.items.get(k, 0) + 1

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _extra(ev: Event, name: str) -> object:
    return (ev.extra or {}).get(name)


def _find(user: AnalyticsUser, request_id: str | None) -> Served | None:
    if request_id is None:
        return None
    for s in reversed(user.served):
        if s.imp.request_id == request_id:
            return s
    return None


def _register(user: AnalyticsUser, ev: Event, rules: JoinRules) -> Served | None:
    """The list a served-list record registers (``attribution.impression_of``); the known one if seen before."""
    s = _find(user, ev.request_id)
    if s is not None:
        return s
    window = rules.campaign_windows_s.get(ev.campaign_id or "", rules.window_s)
    imp = impression_of(ev, rules.default_goal, window)
    if imp is None:
        return None
    s = Served(imp=imp, scenario=str(_extra(ev, "scenario") or "default"))
    user.served.append(s)
    return s


def _join_group(user: AnalyticsUser, campaign: str, group: str, ts: float, inc: Increments, rules: JoinRules) -> None:
    if campaign not in user.groups:
        user.groups[campaign] = Membership(group=group, since_ts=ts)
        inc.group(campaign, group, rules.bucket(ts), users=1.0)


def _on_request(user: AnalyticsUser, ev: Event, rules: JoinRules, inc: Increments) -> None:
    s = _register(user, ev, rules)
    if s is None:
        inc.skip("unknown_request")
        return
    if s.requested:
        inc.skip("duplicate_request")
        return
    s.requested = True
    inc.count(s, rules.bucket(ev.ts), "requests")
    _join_group(user, s.imp.campaign_id, CONTROL if s.imp.arm == CONTROL_ARM else EXPOSED, ev.ts, inc, rules)


def _on_impression(user: AnalyticsUser, ev: Event, rules: JoinRules, inc: Increments) -> None:
    shown = ev.item_ids()
    s = _find(user, ev.request_id)
    if s is None:
        inc.skip("unknown_request")
        return
    if s.impressed:
        inc.skip("duplicate_impression")
        return
    s.impressed = True
    served = set(s.imp.items)
    shown = [i for i in dict.fromkeys(shown) if i in served]  # the list's own items, each once
    s.imp = shown_as(s.imp, ev) or s.imp  # what was displayed is what can be credited (as the optimizer does)
    b = rules.bucket(ev.ts)
    inc.count(s, b, "impressions")
    inc.count(s, b, "impressed_items", float(len(shown)))
    for item in shown:
        inc.item(s.imp.campaign_id, "impressed", item)
    _join_group(user, s.imp.campaign_id, EXPOSED, ev.ts, inc, rules)


def _on_click(user: AnalyticsUser, ev: Event, rules: JoinRules, inc: Increments) -> None:
    s = _find(user, ev.request_id)
    if s is None:
        inc.skip("unknown_request")
        return
    item = ev.item_id or ""
    if item not in s.imp.items:
        inc.skip("click_not_in_list")
        return
    if item in s.clicked:
        inc.skip("duplicate_click")
        return
    s.clicked.append(item)
    inc.count(s, rules.bucket(ev.ts), "clicks")
    inc.item(s.imp.campaign_id, "clicked", item)


def _match(user: AnalyticsUser, line: Event, received_ts: float | None = None) -> Served | None:
    """The list a one-item event is credited to (attribution.py's rules, without the goal test)."""
    if line.request_id is not None:
        s = _find(user, line.request_id)
        if s is None:
            return None
        ok = attribute(line, msgspec.structs.replace(s.imp, goal=line.type))
        return s if isinstance(ok, Reward) else None
    imp = last_touch(line, [s.imp for s in user.served], received_ts)
    return None if imp is None else _find(user, imp.request_id)


def _lines(ev: Event) -> list[tuple[str, float, float]]:
    """(item_id, quantity, price) of an order or cart event; price 0 when absent."""
    if ev.items:
        return [(ln.item_id, ln.quantity, ln.price or 0.0) for ln in ev.items]
    if ev.item_id is not None:
        return [(ev.item_id, ev.quantity if ev.quantity is not None else 1.0, ev.price or 0.0)]
    return []


def _on_cart(user: AnalyticsUser, ev: Event, rules: JoinRules, inc: Increments, received_ts: float | None) -> None:
    b = rules.bucket(ev.ts)
    for item, _, _ in _lines(ev):
        s = _match(user, msgspec.structs.replace(ev, item_id=item, items=None), received_ts)
        if s is not None:
            inc.count(s, b, "carts")


def _on_order(user: AnalyticsUser, ev: Event, rules: JoinRules, inc: Increments, received_ts: float | None) -> None:
    b = rules.bucket(ev.ts)
    lines = _lines(ev)
    per_list: dict[str, tuple[Served, float, float]] = {}
    for item, qty, price in lines:
        s = _match(user, msgspec.structs.replace(ev, item_id=item, items=None), received_ts)
        if s is not None:
            _, q0, r0 = per_list.get(s.imp.request_id, (s, 0.0, 0.0))
            per_list[s.imp.request_id] = (s, q0 + qty, r0 + qty * price)
    for s, qty, rev in per_list.values():
        inc.count(s, b, "orders")
        inc.count(s, b, "order_items", qty)
        inc.count(s, b, "revenue", rev)
    n = sum(q for _, q, _ in lines)
    v = sum(q * p for _, q, p in lines)
    for campaign, m in user.groups.items():
        if m.since_ts <= ev.ts:
            inc.group(campaign, m.group, b, orders=1.0, items=n, items_sq=n * n, revenue=v, revenue_sq=v * v,
                      converted=0.0 if m.converted else 1.0)
            m.converted = True


def _rewards(user: AnalyticsUser, ev: Event, rules: JoinRules, inc: Increments, received_ts: float | None) -> None:
    att = attribute_events([ev], lambda rid: (s.imp if (s := _find(user, rid)) else None),
                           rewarded=set(user.rewarded),
                           served_to=lambda _u: [s.imp for s in user.served[-LAST_TOUCH_LISTS:]],  # as the optimizer
                           received_ts=received_ts)
    for r in att.rewards:
        s = _find(user, r.request_id)
        if s is not None:
            inc.count(s, rules.bucket(ev.ts), "rewards")
            user.rewarded.append(r.request_id)


def _prune(user: AnalyticsUser) -> None:
    """Forget lists whose window closed a day before the user's newest event; keep the newest ``LAST_TOUCH_LISTS``."""
    horizon = user.last_ts - 86400.0
    user.served = [s for s in user.served if s.imp.ts + s.imp.window_s >= horizon][-LAST_TOUCH_LISTS:]
    live = {s.imp.request_id for s in user.served}
    user.rewarded = [r for r in user.rewarded if r in live]


def apply_served(user: AnalyticsUser, ev: Event, rules: JoinRules, inc: Increments) -> None:
    """Register the list of one served-list record (``rec_request``) of ``user`` and count its request.

    Lists are registered by ``request_id`` once (a re-sent record is ``duplicate_request``); they
    do not enter the user's event-id window, so how far the served topic is read ahead of the
    events never changes which duplicate events are caught.
    """
    if ev.type != rules.request_type:
        inc.skip("not_a_served_list")
        return
    _on_request(user, ev, rules, inc)


def apply_event(user: AnalyticsUser, ev: Event, rules: JoinRules, inc: Increments,
                received_ts: float | None = None) -> bool:
    """Add the effect of ``ev`` to ``inc`` and update ``user`` in place.

    Parameters
    ----------
    user : AnalyticsUser
        State of ``ev.user_id`` (mutated).
    ev : Event
        Any event; types the analytics do not use only update the user's clock.
    rules : JoinRules
    inc : Increments
        Accumulates counter deltas (mutated).
    received_ts : float, optional
        When the log received ``ev`` (its record's Kafka timestamp, epoch s): last touch takes no list
        served after it (``operators.attribution.attribution_ts``).

    Returns
    -------
    bool
        False if ``ev.event_id`` was already applied (a duplicate; nothing counted).
    """
    if not remember_event(user.recent_event_ids, user.recent_event_ts, ev.event_id, ev.ts,
                          max(user.last_ts, ev.ts), keep_min=_RECENT_IDS):
        inc.skip("duplicate_event")
        return False
    t = ev.type
    if t == rules.request_type:  # not from the server: served lists travel on their own topic
        inc.skip("request_on_events")
    elif t == rules.impression_type:
        _on_impression(user, ev, rules, inc)
    elif t == rules.click_type:
        _on_click(user, ev, rules, inc)
    elif t in rules.cart_types:
        _on_cart(user, ev, rules, inc, received_ts)
    elif t in rules.order_types:
        _on_order(user, ev, rules, inc, received_ts)
    if user.served and t != rules.request_type and t != rules.impression_type:
        _rewards(user, ev, rules, inc, received_ts)
    if ev.ts > user.last_ts:
        user.last_ts = ev.ts
        _prune(user)
    return True
