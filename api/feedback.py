"""The optimizer's feed: served lists become pulls, feedback events become rewards.

``FeedbackFold`` is the in-memory fold over the served-list and events topics: ``rec_request``
records of the server-only ``served`` topic (one per list a campaign served, produced by
``GET /v1/recommendations``) are pulls, and feedback events of ``events``
(whoever produced them: ``POST /v1/events``, the shop's own producers, simulators) are rewards.
Every API worker and replica folds the same messages, so all of them hold the same optimizer
state, and the analytics flow joins the same events. Which event rewards which list is decided
by ``operators/attribution.py`` (shared with analytics).

A feedback event can be read before the list it refers to (another partition when the client
used another user id): it is parked under its request_id and attributed when the list arrives
(at most ``max_orphans`` lists awaited, the oldest go first, and ``_PARKED_PER_LIST`` events each, kept
without their extra fields and with at most ``_PARKED_ITEMS`` item ids, the list's items being all that
attribution by request id reads of them: memory stays bounded whatever a client posts). Feedback naming a list served without a campaign is not parked:
such lists are never published on ``served`` (``skipped["no_campaign_list"]``). Lists stay open for attribution until their
window has passed (by the served clock) or ``max_open`` newer lists exist.

Snapshots (``api/feedback_reader.py``) hold everything the fold's future depends on: the arms, the open
and rewarded lists, the parked events (``ParkedList``, in parking order) and the counters and clocks
(``FoldCounters``), so a fold restored from a snapshot and fed the rest of the topics ends in the same
state as one fed the topics from their start. ``take_deltas`` gives what changed since the last call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable

import msgspec

from api.optimizer import OptimizerConfig, ThompsonOptimizer
from api.request_ids import names_campaign_list
from operators.attribution import (
    ANONYMOUS_USER,
    IMPRESSION_TYPE,
    LAST_TOUCH_LISTS,
    REQUEST_TYPE,
    Impression,
    attribute_events,
    impression_of,
    shown_as,
)
from operators.schema import BasketLine, Event

__all__ = ["FeedbackFold", "FoldCounters", "FoldDeltas", "ParkedList"]

_PARKED_PER_LIST = 32  # feedback events parked per awaited list (one reward per list; the first goal wins)
_PARKED_ITEMS = 100  # item ids kept per parked event (rule 3 reads them: one must be on the list)


class ParkedList(msgspec.Struct, frozen=True, array_like=True):
    """The feedback events parked for one list not read yet, as a snapshot keeps them.

    ``seq`` orders the parked lists (the oldest is evicted first at ``max_orphans``); ``events`` are
    stripped as ``FeedbackFold`` parks them, oldest first.
    """

    seq: int
    events: tuple[Event, ...]


class FoldCounters(msgspec.Struct, array_like=True):
    """The fold's counters and clocks, as a snapshot keeps them (see ``FeedbackFold``'s attributes)."""

    n_served: int
    n_rewards: int
    clock: float
    event_clock: float
    next_park_seq: int
    skipped: dict[str, int]
    by_campaign: dict[str, dict[str, int]]


class FoldDeltas(msgspec.Struct):
    """What changed since the last ``take_deltas``: lists opened (None: closed), lists rewarded (None:
    forgotten), lists whose parked events changed (None: none parked any more: attributed or evicted)."""

    opened: dict[str, Impression | None]
    rewarded: dict[str, float | None]
    parked: dict[str, ParkedList | None]


class FeedbackFold:
    """Pulls and rewards from served lists and events (windowed popularity is the flow's:
    ``api/window_popularity.py``).

    Parameters
    ----------
    optimizer : ThompsonOptimizer
        Receives ``record(pulls=1)`` per list and ``record(rewards=1)`` per attributed list.
    config_of : callable campaign_id -> OptimizerConfig
        The campaign's optimizer knobs (discount half-life) at fold time.
    max_open, max_orphans : int
        Bounds of the lists kept for attribution and of the parked early feedback.
    declares : callable (campaign_id, arm) -> bool, optional
        Whether a campaign exists and declares the arm; lists of others are not counted
        (``skipped["unknown_arm"]``), so the optimizer's keys stay bounded.
    segment_of : callable (campaign_id, segment) -> str, optional
        The segment a list counts for: the campaign's declared segment, else ``""``
        (``skipped["undeclared_segment"]`` counts the lists moved), so the optimizer's keys stay bounded
        by what the campaign declares even for lists served before it changed its segments.
    max_segments : int
        Segments kept per campaign (a last bound across edits of the declared ones); lists of further
        segments count for segment ``""``.
    """

    def __init__(self, optimizer: ThompsonOptimizer, config_of: Callable[[str], OptimizerConfig],
                 max_open: int = 200_000, max_orphans: int = 10_000,
                 declares: Callable[[str, str], bool] | None = None, max_segments: int = 100,
                 segment_of: Callable[[str, str], str] | None = None) -> None:
        self.optimizer, self.config_of = optimizer, config_of
        self.declares, self.max_segments, self.segment_of = declares, max_segments, segment_of
        self._segments: dict[str, set[str]] = {}
        self.max_open, self.max_orphans = max_open, max_orphans
        self.open: OrderedDict[str, Impression] = OrderedDict()
        self.rewarded: OrderedDict[str, float] = OrderedDict()  # request_id -> end of its window
        self.by_user: dict[str, deque[str]] = {}
        self.orphans: OrderedDict[str, list[Event]] = OrderedDict()  # request_id -> parked events, oldest first
        self._park_seq: dict[str, int] = {}  # request_id -> its ParkedList.seq
        self._next_seq = 0
        self.clock = 0.0  # newest served list's time
        self.event_clock = 0.0  # newest folded event's time
        self.n_served = self.n_rewards = 0
        self.skipped: dict[str, int] = {}
        self.by_campaign: dict[str, dict[str, int]] = {}  # campaign -> served, rewards, open_lists, skipped:<reason>
        self.open_delta: dict[str, Impression | None] = {}
        self.rewarded_delta: dict[str, float | None] = {}
        self.parked_delta: set[str] = set()  # request_ids whose parked events changed
        self.lock = threading.RLock()  # snapshot takes it around take_deltas, which takes it too

    # ---- folding -------------------------------------------------------------------------

    def served(self, imp: Impression) -> None:
        """One list served: a pull for its arm; open it for attribution."""
        if self.declares is not None and not self.declares(imp.campaign_id, imp.arm):
            self.skipped["unknown_arm"] = self.skipped.get("unknown_arm", 0) + 1
            return
        seg = self.segment_of(imp.campaign_id, imp.segment) if imp.segment and self.segment_of else imp.segment
        if seg != imp.segment:
            self.skipped["undeclared_segment"] = self.skipped.get("undeclared_segment", 0) + 1
            imp = msgspec.structs.replace(imp, segment=seg)
        seen = self._segments.setdefault(imp.campaign_id, {""})
        if imp.segment not in seen:
            if len(seen) > self.max_segments:
                imp = msgspec.structs.replace(imp, segment="")
            else:
                seen.add(imp.segment)
        with self.lock:
            cfg = self.config_of(imp.campaign_id)
            self.optimizer.record((imp.campaign_id, imp.arm, imp.segment), imp.ts, cfg, pulls=1)
            self.n_served += 1
            self._count(imp.campaign_id, "served")
            if imp.request_id not in self.open:
                self._count(imp.campaign_id, "open_lists")
            self.open[imp.request_id] = imp
            self.open_delta[imp.request_id] = imp
            if imp.user_id is not None:
                q = self.by_user.setdefault(imp.user_id, deque(maxlen=LAST_TOUCH_LISTS))
                q.append(imp.request_id)
            self.clock = max(self.clock, imp.ts)
            parked = self.orphans.pop(imp.request_id, [])
            if parked:
                del self._park_seq[imp.request_id]
                self.parked_delta.add(imp.request_id)
            for ev in parked:
                if ev.type == IMPRESSION_TYPE:
                    self._shown(ev)
                else:
                    self._feedback(ev)
            self._expire()

    def served_record(self, ev: Event) -> None:
        """One record of the server-only served-list topic: a ``rec_request`` registers its list."""
        imp = impression_of(ev) if ev.type == REQUEST_TYPE else None
        if imp is not None:
            self.served(imp)

    def event(self, ev: Event, received_ts: float | None = None) -> None:
        """One event of ``events``: a reward if it converts a served list. ``received_ts`` is its record's Kafka
        timestamp (epoch s): last touch takes no list served after it (``operators.attribution.attribution_ts``).

        A ``rec_request`` here did not come from the server (served lists travel on their own topic)
        and counts for nothing (``skipped["request_on_events"]``).
        """
        if ev.type == REQUEST_TYPE:
            self.skipped["request_on_events"] = self.skipped.get("request_on_events", 0) + 1
            return
        if ev.ts > self.event_clock:
            self.event_clock = ev.ts
        if ev.request_id is None and ev.user_id not in self.by_user:
            return
        with self.lock:
            if ev.type == IMPRESSION_TYPE:
                self._shown(ev)
            else:
                self._feedback(ev, received_ts)

    def _shown(self, ev: Event) -> None:
        """A ``rec_impression``: its list is narrowed to the items it displays (``attribution.shown_as``; rule 3),
        as the analytics flow does; it rewards nothing. Parked while its list is unknown."""
        rid = ev.request_id
        imp = self.open.get(rid) if rid is not None else None
        if imp is None:
            if rid is not None:
                self._park(ev)
            return
        if (imp.user_id or ANONYMOUS_USER) != ev.user_id:
            return  # the analytics flow finds a list among its user's only (a list served without one: "anonymous")
        narrowed = shown_as(imp, ev)
        if narrowed is not None:
            self.open[imp.request_id] = self.open_delta[imp.request_id] = narrowed

    def _served_to(self, user_id: str) -> list[Impression]:
        return [imp for rid in self.by_user.get(user_id, ()) if (imp := self.open.get(rid)) is not None]

    def _feedback(self, ev: Event, received_ts: float | None = None) -> None:
        res = attribute_events([ev], self.open.get, rewarded=self.rewarded, served_to=self._served_to,
                               received_ts=received_ts)
        for r in res.rewards:
            imp = self.open[r.request_id]
            self.optimizer.record((r.campaign_id, r.arm, r.segment), r.ts, self.config_of(r.campaign_id), rewards=1)
            self.rewarded[r.request_id] = self.rewarded_delta[r.request_id] = imp.ts + imp.window_s
            self.n_rewards += 1
            self._count(r.campaign_id, "rewards")
        known = self.open.get(ev.request_id) if ev.request_id is not None else None
        # counted under the list's campaign, or under the campaign the event names only when lists of it
        # were served here: a client's invented campaign ids make no counter rows
        campaign = known.campaign_id if known is not None else ev.campaign_id
        if known is None and campaign not in self.by_campaign:
            campaign = None
        for reason, n in res.skipped.items():
            if reason == "unknown_request" and ev.request_id is not None:
                self._park(ev)
            else:
                self.skipped[reason] = self.skipped.get(reason, 0) + n
                if campaign is not None:
                    self._count(campaign, f"skipped:{reason}", n)

    def _park(self, ev: Event) -> None:
        """Keep feedback that names a list not read yet (bounded: see the module docstring)."""
        rid = ev.request_id
        assert rid is not None
        if not names_campaign_list(rid):
            self.skipped["no_campaign_list"] = self.skipped.get("no_campaign_list", 0) + 1
            return
        parked = self.orphans.get(rid)
        if parked is None:
            parked = self.orphans[rid] = []
            self._park_seq[rid] = self._next_seq
            self._next_seq += 1
            while len(self.orphans) > self.max_orphans:
                evicted, _ = self.orphans.popitem(last=False)
                del self._park_seq[evicted]
                self.parked_delta.add(evicted)
        if len(parked) >= _PARKED_PER_LIST:
            self.skipped["parked_full"] = self.skipped.get("parked_full", 0) + 1
            return
        self.parked_delta.add(rid)
        items = ev.item_ids()[:_PARKED_ITEMS]
        parked.append(Event(event_id=ev.event_id, ts=ev.ts, type=ev.type, user_id=ev.user_id,
                            campaign_id=ev.campaign_id, arm=ev.arm, request_id=rid,
                            items=tuple(BasketLine(i) for i in items) or None))

    def _count(self, campaign_id: str, name: str, n: int = 1) -> None:
        row = self.by_campaign.setdefault(campaign_id, {"served": 0, "rewards": 0, "open_lists": 0})
        row[name] = row.get(name, 0) + n

    def campaign_counters(self, campaign_id: str) -> dict[str, object]:
        """This API worker's feedback counters of one campaign: lists served (pulls), rewards, lists
        open for attribution, and feedback events skipped by reason (those naming the campaign or one of its lists);
        since the topics' start (a restored fold starts from the snapshot's counters)."""
        with self.lock:
            row = dict(self.by_campaign.get(campaign_id, {}))
        skipped = {k[8:]: v for k, v in row.items() if k.startswith("skipped:")}
        return {"served": row.get("served", 0), "rewards": row.get("rewards", 0),
                "open_lists": row.get("open_lists", 0), "skipped": skipped}

    def _expire(self) -> None:
        """Close lists whose window has passed, by the older of the two clocks (served lists, events):
        a list stays open until the events of its window have been read, however the reads of the
        two topics interleave (a new node reads the served lists of a day long before its events)."""
        clock = min(self.clock, self.event_clock)
        while self.open:
            rid, imp = next(iter(self.open.items()))
            if imp.ts + imp.window_s >= clock and len(self.open) <= self.max_open:
                break
            del self.open[rid]
            self.open_delta[rid] = None
            self._count(imp.campaign_id, "open_lists", -1)
            q = self.by_user.get(imp.user_id) if imp.user_id is not None else None
            if q is not None and q and q[0] == rid:
                q.popleft()
                if not q:
                    del self.by_user[imp.user_id]  # type: ignore[arg-type]
        while self.rewarded:
            rid, end = next(iter(self.rewarded.items()))
            if end >= clock and len(self.rewarded) <= self.max_open:
                break
            del self.rewarded[rid]
            self.rewarded_delta[rid] = None

    # ---- snapshot support ----------------------------------------------------------------

    def take_deltas(self) -> FoldDeltas:
        """Lists opened/closed, rewarded/forgotten and parked/un-parked since the last call (a list's
        parked events as they are now)."""
        with self.lock:
            parked = {rid: self._parked_list(rid) for rid in self.parked_delta}
            d = FoldDeltas(opened=self.open_delta, rewarded=self.rewarded_delta, parked=parked)
            self.open_delta, self.rewarded_delta, self.parked_delta = {}, {}, set()
            return d

    def _parked_list(self, rid: str) -> ParkedList | None:
        events = self.orphans.get(rid)
        return None if events is None else ParkedList(self._park_seq[rid], tuple(events))

    def parked_lists(self) -> list[tuple[str, ParkedList]]:
        """Every list's parked events, oldest parked first (for a full snapshot)."""
        with self.lock:
            return [(rid, ParkedList(self._park_seq[rid], tuple(evs))) for rid, evs in self.orphans.items()]

    def counters(self) -> FoldCounters:
        """A copy of the counters and clocks (for a snapshot)."""
        with self.lock:
            return FoldCounters(n_served=self.n_served, n_rewards=self.n_rewards, clock=self.clock,
                                event_clock=self.event_clock, next_park_seq=self._next_seq, skipped=dict(self.skipped),
                                by_campaign={c: dict(row) for c, row in self.by_campaign.items()})

    def restore(self, open_lists: list[Impression], rewarded: dict[str, float],
                parked: list[tuple[str, ParkedList]] | None = None, counters: FoldCounters | None = None) -> None:
        """Load open lists (served order), rewarded lists, parked events and counters from a snapshot
        (after the optimizer's arms: the segments each campaign already counts are taken from them, so a
        restart does not admit ``max_segments`` more). Parked events are bounded as ``_park`` bounds them
        (the oldest lists go first). Without ``counters`` (a snapshot that has none) the counters start
        from zero but for the open lists."""
        with self.lock:
            for campaign_id, _arm, segment in self.optimizer.arms:
                self._segments.setdefault(campaign_id, {""}).add(segment)
            for imp in sorted(open_lists, key=lambda i: i.ts):
                if imp.request_id not in self.open:
                    self._count(imp.campaign_id, "open_lists")
                self.open[imp.request_id] = imp
                if imp.user_id is not None:
                    self.by_user.setdefault(imp.user_id, deque(maxlen=LAST_TOUCH_LISTS)).append(imp.request_id)
                self.clock = max(self.clock, imp.ts)
            for rid, end in sorted(rewarded.items(), key=lambda kv: kv[1]):
                self.rewarded[rid] = end
            for rid, pl in sorted(parked or (), key=lambda kv: kv[1].seq):
                self.orphans[rid] = list(pl.events[:_PARKED_PER_LIST])
                self._park_seq[rid] = pl.seq
                self._next_seq = max(self._next_seq, pl.seq + 1)
            while len(self.orphans) > self.max_orphans:
                del self._park_seq[self.orphans.popitem(last=False)[0]]
            if counters is not None:
                self.n_served, self.n_rewards = counters.n_served, counters.n_rewards
                self.clock, self.event_clock = counters.clock, counters.event_clock
                self._next_seq = max(self._next_seq, counters.next_park_seq)
                self.skipped = dict(counters.skipped)
                self.by_campaign = {c: dict(row) for c, row in counters.by_campaign.items()}
