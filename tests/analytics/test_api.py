"""The analytics view and endpoints: merge, downsampling, a year x 100 campaigns, params, admin scope."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from api.analytics.endpoints import AnalyticsService, CampaignParams, analytics_routes, campaign_report
from api.analytics.view import AnalyticsView, Series
from operators.analytics.topic import CounterRow, GroupRow, TopItemsRow
from operators.kafka import TopicSpec, ensure_topics
from operators.settings import Settings
from tests.harness import ApiServer, make_settings

H = 3600
T0 = 1_700_000_000 // H * H


def row(p: int, bucket: int, impressions: float, clicks: float, campaign: str = "c", arm: str = "a") -> CounterRow:
    return CounterRow(p, campaign, arm, "home", bucket, [impressions, impressions, 0, clicks, 0, 0, 0, 0, 0])


def test_series_upsert_keeps_buckets_sorted_and_overwrites():
    s = Series(2)
    for b in [5, 1, 9, 3, 3, 7, 1] + list(range(100, 140)):
        s.upsert(b, [b, 1.0])
    b, v = s.range(None, None)
    assert b.tolist() == [1, 3, 5, 7, 9, *range(100, 140)]
    assert v[:, 0].tolist() == b.tolist()
    assert s.range(3, 9)[0].tolist() == [3, 5, 7]


def test_view_sums_partitions_and_downsamples():
    v = AnalyticsView()
    v.load([row(0, T0, 10, 1), row(1, T0, 5, 2), row(0, T0 + H, 7, 0), row(0, T0, 12, 3)])  # last overwrites
    sl = v.arms("c", None, None, H)[("a", "home")]
    assert sl.buckets.tolist() == [T0, T0 + H]
    assert sl.values[:, 1].tolist() == [17, 7] and sl.values[:, 3].tolist() == [5, 0]
    day = v.arms("c", None, None, 86400)[("a", "home")]
    assert day.values[:, 1].sum() == 24 and len(day.buckets) <= 2
    assert v.arms("c", T0 + H, None, H)[("a", "home")].values[:, 1].tolist() == [7]


def test_top_items_sum_partitions():
    v = AnalyticsView()
    v.load([TopItemsRow(0, "c", [("x", 5), ("y", 2)], [("x", 1)]), TopItemsRow(1, "c", [("y", 4)], [])])
    assert v.top_items("c", 5) == {"impressed": [("y", 6), ("x", 5)], "clicked": [("x", 1)]}


def test_a_year_of_hourly_buckets_for_100_campaigns_stays_small_and_fast():
    v = AnalyticsView()
    vals = [5.0, 100.0, 800.0, 10.0, 3.0, 2.0, 4.0, 50.0, 2.0]
    for c in range(100):
        for arm in ("a", "b"):
            for h in range(365 * 24):
                v.apply("", CounterRow(0, f"c{c:03d}", arm, "home", T0 + H * h, vals))
        for g in ("exposed", "control"):
            for d in range(365):
                v.apply("", GroupRow(0, f"c{c:03d}", g, T0 + 86400 * d, [10, 5, 6, 12, 30, 60.0, 700.0]))
    svc = AnalyticsService(Settings(), None, v)  # type: ignore[arg-type]  # no reader: the view is fed directly
    t = time.perf_counter()
    rep = campaign_report(svc, "c042", CampaignParams())
    took = time.perf_counter() - t
    points = len(rep["arms"][0]["buckets"])
    assert 0 < points <= 400 and rep["bucket_s"] == 86400  # auto: a year of hours -> days
    assert rep["totals"]["impressions"] == 2 * 365 * 24 * 100
    assert took < 1.0
    t = time.perf_counter()
    assert len([v.arms(c, None, None, 100 * 365 * 86400) for c in v.campaigns()]) == 100
    assert time.perf_counter() - t < 2.0


def test_to_at_or_before_from_is_an_empty_range_with_the_uplift_up_to_to():
    v = AnalyticsView()
    v.load([row(0, T0 + H * h, 10, h) for h in range(4)] +
           [GroupRow(0, "c", g, T0 + H * h, [10, 5, 6, 12, 30, 60.0, 700.0 + h]) for g in ("exposed", "control")
            for h in range(4)])
    svc = AnalyticsService(Settings(), None, v)  # type: ignore[arg-type]  # no reader: the view is fed directly
    empty = campaign_report(svc, "c", CampaignParams.model_validate({"from": T0 + 3 * H, "to": T0 + H}))
    assert [a["buckets"] for a in empty["arms"]] == [[]] and empty["totals"]["impressions"] == 0
    to_only = campaign_report(svc, "c", CampaignParams.model_validate({"to": T0 + H}))
    assert to_only["arms"][0]["buckets"] == [T0] and empty["uplift"] == to_only["uplift"] != []
    same = campaign_report(svc, "c", CampaignParams.model_validate({"from": "2023-11-14T22:00:00Z", "to": T0 + H}))
    assert same["from"] == T0 and same["arms"][0]["buckets"] == [T0]  # RFC 3339 and epoch seconds agree


@pytest.mark.integration
def test_endpoints_check_params_scope_and_campaign(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": s.api.model_copy(update={"require_keys": True, "admin_keys": ["admin-k"],
                                                             "client_keys": ["client-k"]}),
                             "analytics": s.analytics.model_copy(update={"topic": s.kafka.events_topic + "-an"})})
    admin, client = s.api.admin_keys[0], s.api.client_keys[0]
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        assert c.get("/v1/analytics/overview").status_code == 401
        assert c.get("/v1/analytics/overview", headers={"X-API-Key": client}).status_code == 403
        ok = c.get("/v1/analytics/overview", headers={"X-API-Key": admin})
        assert ok.status_code == 200 and ok.json() == {"n_campaigns": 0, "bucket_s": 3600, "campaigns": []}
        h = {"X-API-Key": admin}
        r = c.get("/v1/analytics/campaigns/nope", headers=h)
        assert r.status_code == 404 and r.json()["error"]["field"] == "campaign_id"
        r = c.get("/v1/analytics/campaigns/nope%2Fx", headers=h)  # was a 404 naming `path`: no route matched
        assert r.status_code == 404 and r.json()["error"] == {"field": "campaign_id",
                                                              "reason": "no analytics for campaign 'nope/x'"}
        r = c.get("/v1/analytics/campaigns/nope", params={"from": "yesterday"}, headers=h)
        assert r.status_code == 422 and r.json()["error"]["field"] == "from"
        for q, field in (("from=0&from=1", "from"), ("to=1&from=0&to=2&to=3", "to"), ("bucket=day&bucket=day", "bucket")):
            r = c.get(f"/v1/analytics/campaigns/nope?{q}", headers=h)  # one value was taken silently (trial 31, 8.7)
            assert r.status_code == 422, (q, r.text)
            count = q.count(f"{field}=")
            assert r.json()["error"] == {"field": field, "reason": f"must be given once; got {count} {field}= parameters"}
        r = c.get("/v1/analytics/campaigns/nope", params={"bucket": "fortnight"}, headers=h)
        assert r.status_code == 422 and r.json()["error"]["field"] == "bucket"
        for bad in ("", "2024-13-01", "2024-02-30", "inf", "nan", "1e13", "2024-01-01 10:00", "1_000", "\u0661"):
            r = c.get("/v1/analytics/campaigns/nope", params={"to": bad}, headers=h)
            assert r.status_code == 422 and r.json()["error"]["field"] == "to", (bad, r.text)
        # `to` at or before `from` is an empty range, not an error: here the campaign is what is missing
        r = c.get("/v1/analytics/campaigns/nope", params={"from": "2024-01-02T00:00:00Z", "to": "2024-01-01"},
                  headers=h)
        assert r.status_code == 404 and r.json()["error"]["field"] == "campaign_id"
        ops = c.get("/v1/analytics/ops", headers=h).json()
        assert [p["partition"] for p in ops["partitions"]] == [0] and ops["dead_letters"] == {}
        assert c.get("/dashboard").status_code == 200  # the page itself is open; its data calls need the key
        assert "uPlot" in c.get("/dashboard/static/vendor/uPlot.iife.min.js").text[:2000]


@pytest.mark.integration
def test_ops_answers_503_with_retry_after_when_the_broker_does_not_confirm_the_log_ends(broker, caplog):
    """The ops panel needs the events log's ends from the broker; a broker that does not give them in time
    (here: nothing listens at its address) is a 503 naming it with Retry-After, one warning line, no 500 or
    traceback; callers that arrive meanwhile share the one broker round trip."""
    import asyncio
    import logging

    from starlette.applications import Starlette

    from api.errors import exception_handlers
    from operators.broker import free_port

    s = Settings()
    gone = f"127.0.0.1:{free_port()}"
    s = s.model_copy(update={"kafka": s.kafka.model_copy(update={"brokers": gone}),
                             "analytics": s.analytics.model_copy(update={"ops_timeout_s": 1.0}),
                             "api": s.api.model_copy(update={"retry_after_s": 7})})
    svc = AnalyticsService(s, None, AnalyticsView())  # type: ignore[arg-type]  # no reader: ops reads the broker
    calls = []
    real_ops = svc.ops

    def counted_ops() -> dict[str, object]:
        calls.append(1)
        return real_ops()

    svc.ops = counted_ops  # type: ignore[method-assign]
    app = Starlette(routes=analytics_routes(), exception_handlers=exception_handlers)  # type: ignore[arg-type]
    app.state.analytics = svc

    async def three_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            return await asyncio.gather(*(c.get("/v1/analytics/ops") for _ in range(3)))

    with caplog.at_level(logging.WARNING):
        t0 = time.monotonic()
        answers = asyncio.run(three_at_once())
        took = time.monotonic() - t0
    assert len(calls) == 1 and took < 8.0  # one broker round trip for the three callers
    for r in answers:
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "7"
        err = r.json()["error"]
        assert err["field"] == "broker" and gone in err["reason"] and "'events'" in err["reason"], err
    warnings = [rec for rec in caplog.records if rec.name == "api.analytics.endpoints"]
    assert len(warnings) == 3 and all(rec.levelno == logging.WARNING and rec.exc_info is None for rec in warnings)
    assert not any(rec.levelno >= logging.ERROR and rec.exc_info for rec in caplog.records)

    # the same service against a broker that answers: 200 (and a new round trip, not the failed one again)
    ok = s.model_copy(update={"kafka": s.kafka.model_copy(update={"brokers": broker,
                                                                   "events_topic": f"ops-{uuid.uuid4().hex[:8]}"})})
    ensure_topics(broker, [TopicSpec(ok.kafka.events_topic, 1)])
    svc.settings = ok
    r = asyncio.run(three_at_once())[0]
    assert r.status_code == 200, r.text
    assert [p["partition"] for p in r.json()["partitions"]] == [0] and len(calls) == 2


@pytest.mark.integration
def test_ops_answers_its_last_good_answer_marked_stale_once_the_deadline_passes(broker, caplog):
    """Once the ops panel has had an answer, a broker that does not confirm the log's ends within
    ``ops_timeout_s`` (here: nothing listens at its address) gets the last good answer marked stale, with its
    age and the reason, within the deadline; before any good answer, or once the last one is older than
    ``ops_stale_max_s``, it is the 503 with Retry-After."""
    import asyncio
    import logging

    from starlette.applications import Starlette

    from api.errors import exception_handlers
    from operators.broker import free_port

    s = Settings()
    ok = s.model_copy(update={"kafka": s.kafka.model_copy(update={"brokers": broker,
                                                                   "events_topic": f"ops-{uuid.uuid4().hex[:8]}"}),
                              "analytics": s.analytics.model_copy(update={"ops_timeout_s": 1.0})})
    ensure_topics(broker, [TopicSpec(ok.kafka.events_topic, 2)])
    svc = AnalyticsService(ok, None, AnalyticsView())  # type: ignore[arg-type]  # no reader: ops reads the broker
    app = Starlette(routes=analytics_routes(), exception_handlers=exception_handlers)  # type: ignore[arg-type]
    app.state.analytics = svc

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            return await c.get("/v1/analytics/ops")

    fresh = asyncio.run(get())
    assert fresh.status_code == 200 and fresh.json()["stale"] is False and fresh.json()["age_s"] == 0, fresh.text
    gone = f"127.0.0.1:{free_port()}"
    svc.settings = ok.model_copy(update={"kafka": ok.kafka.model_copy(update={"brokers": gone})})
    time.sleep(0.3)
    with caplog.at_level(logging.WARNING):
        t0 = time.monotonic()
        r = asyncio.run(get())
        took = time.monotonic() - t0
    assert r.status_code == 200 and took < 2.5, (r.text, took)
    body = r.json()
    assert body["stale"] is True and 0.3 <= body["age_s"] < 1.0 + took and gone in body["stale_reason"], body
    assert body["partitions"] == fresh.json()["partitions"]
    assert [rec.levelno for rec in caplog.records if rec.name == "api.analytics.endpoints"] == [logging.WARNING]

    # older than analytics.ops_stale_max_s: no longer shown as the panel's numbers, a 503 saying how old it is
    svc.settings = svc.settings.model_copy(update={"analytics": svc.settings.analytics.model_copy(
        update={"ops_stale_max_s": 0.2})})
    r = asyncio.run(get())
    assert r.status_code == 503 and r.headers["Retry-After"] == str(ok.api.retry_after_s), r.text
    reason = r.json()["error"]["reason"]
    assert gone in reason and "s old, more than analytics.ops_stale_max_s = 0.2 s" in reason, reason
    assert Settings().analytics.ops_stale_max_s == 300
