"""A straightforward recount of an event log by the documented rules (the oracle of the tests).

Written independently of operators/analytics/join.py: plain dicts and loops over the log in the
order the stream reads it (per user, log order = partition order), no pruning, no RocksDB.
"""

from __future__ import annotations

from collections import defaultdict

from operators.schema import Event

FIELDS = ("requests", "impressions", "impressed_items", "clicks", "carts", "orders", "order_items", "revenue",
          "rewards")
GFIELDS = ("users", "converted", "orders", "items", "items_sq", "revenue", "revenue_sq")


def recount(log: list[Event], bucket_s: int = 3600, window_s: float = 86400.0) -> tuple[dict, dict]:
    """Counters per (campaign, arm, scenario, bucket) and group stats per (campaign, group, bucket)."""
    counters: dict = defaultdict(lambda: dict.fromkeys(FIELDS, 0.0))
    groups: dict = defaultdict(lambda: dict.fromkeys(GFIELDS, 0.0))
    seen: set[str] = set()
    lists: dict[str, dict] = {}                      # request_id -> list info
    by_user: dict[str, list[dict]] = defaultdict(list)
    member: dict[str, dict[str, dict]] = defaultdict(dict)  # user -> campaign -> {"group", "since", "converted"}
    rewarded: set[str] = set()

    def b(ts: float) -> int:
        return int(ts // bucket_s) * bucket_s

    def key(li: dict, ts: float) -> tuple:
        return (li["campaign"], li["arm"], li["scenario"], b(ts))

    def newest_with(user: str, items: set[str], ts: float) -> dict | None:
        ok = [li for li in by_user[user] if li["ts"] <= ts <= li["ts"] + li["window"] and items & set(li["items"])]
        return max(ok, key=lambda li: li["ts"]) if ok else None

    for e in log:
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        x = e.extra or {}
        if e.type == "rec_request":
            li = {"rid": e.request_id, "campaign": e.campaign_id, "arm": e.arm, "scenario": x.get("scenario", "default"),
                  "ts": e.ts, "window": x.get("window_s", window_s), "items": list(x.get("served_items", [])),
                  "impressed": False, "clicked": set()}
            lists[e.request_id] = li
            by_user[e.user_id].append(li)
            counters[key(li, e.ts)]["requests"] += 1
            if e.campaign_id not in member[e.user_id]:
                group = "control" if e.arm == "control" else "exposed"
                member[e.user_id][e.campaign_id] = {"group": group, "since": e.ts, "converted": False}
                groups[(e.campaign_id, group, b(e.ts))]["users"] += 1
        elif e.type == "rec_impression":
            li = lists[e.request_id]
            if not li["impressed"]:
                li["impressed"] = True
                shown = [i for i in dict.fromkeys(e.item_ids()) if i in li["items"]]  # served items, once each
                li["items"] = shown or li["items"]
                counters[key(li, e.ts)]["impressions"] += 1
                counters[key(li, e.ts)]["impressed_items"] += len(shown)
        elif e.type == "rec_click":
            li = lists[e.request_id]
            if e.item_id in li["items"] and e.item_id not in li["clicked"]:
                li["clicked"].add(e.item_id)
                counters[key(li, e.ts)]["clicks"] += 1
        elif e.type == "add_to_cart":
            li = newest_with(e.user_id, {e.item_id}, e.ts)
            if li is not None:
                counters[key(li, e.ts)]["carts"] += 1
        elif e.type == "purchase":
            lines = [(ln.item_id, ln.quantity, ln.price or 0.0) for ln in e.items]
            per: dict[str, list] = {}
            for item, q, p in lines:
                li = newest_with(e.user_id, {item}, e.ts)
                if li is not None:
                    acc = per.setdefault(li["rid"], [li, 0.0, 0.0])
                    acc[1] += q
                    acc[2] += q * p
            for li, q, r in per.values():
                c = counters[key(li, e.ts)]
                c["orders"] += 1
                c["order_items"] += q
                c["revenue"] += r
            li = newest_with(e.user_id, {i for i, _, _ in lines}, e.ts)  # the optimizer's reward (goal purchase)
            if li is not None and li["rid"] not in rewarded:
                rewarded.add(li["rid"])
                counters[key(li, e.ts)]["rewards"] += 1
            n, v = sum(q for _, q, _ in lines), sum(q * p for _, q, p in lines)
            for campaign, m in member[e.user_id].items():
                if m["since"] <= e.ts:
                    g = groups[(campaign, m["group"], b(e.ts))]
                    g["orders"] += 1
                    g["items"] += n
                    g["items_sq"] += n * n
                    g["revenue"] += v
                    g["revenue_sq"] += v * v
                    if not m["converted"]:
                        m["converted"] = True
                        g["converted"] += 1
    return dict(counters), dict(groups)
