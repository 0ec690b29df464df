"""Analytics endpoints (admin scope): per-campaign series and totals, overview, ops, CSV export.

The admin scope is enforced by ``api/auth.py``'s middleware for every ``/v1/analytics`` path.

* ``GET /v1/analytics/campaigns/{id}?from=&to=&bucket=&format=`` -- per arm (and scenario) the
  counters as a time series and totals (CTR = clicks / impressions, CVR = orders / impressions,
  AOV = revenue / orders), exposed vs control stats with the uplift of conversion, AOS and AOV
  and their confidence intervals (cumulative from the campaign's start to ``to``: a test's
  users stay in it whatever range is plotted), and the top impressed / clicked items. ``from``/``to`` are
  epoch seconds or ISO-8601; ``bucket`` is ``hour``, ``day``, ``week``, seconds, or ``auto``
  (the smallest step that gives at most ``max_points`` points: server-side downsampling).
  ``format=csv`` returns one row per bucket and arm.
* ``GET /v1/analytics/overview`` -- every campaign's totals.
* ``GET /v1/analytics/ops`` -- events/s into ``events``, lag per partition of both flows,
  dead letters by reason, model version. It needs the broker to confirm the ends of the events log
  (off the event loop, one round trip at a time however many callers wait for it); when the broker
  does not within ``analytics.ops_timeout_s`` (one deadline for the whole round trip, not per
  step) the answer is the last good one marked ``"stale": true`` with its ``age_s`` and a
  ``stale_reason`` naming the broker, or, when there is none yet or it is older than
  ``analytics.ops_stale_max_s``, 503 with ``Retry-After`` and that reason (either way a one-line
  warning in the log, no traceback). A fresh answer says ``"stale": false, "age_s": 0``.

The data is the compacted ``analytics`` topic (flows/analytics/dataflow.py), read by a ``TopicTable``
into an ``AnalyticsView``. Dead-letter counts come from the analytics flow, which parses every
message with the same rules as the real-time flow and counts dead letters exactly once in its
own database (the API never opens a flow's RocksDB as a writer). The real-time flow's offsets
are read with a read-only open of its partition databases when ``state_dir`` is on this host.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from confluent_kafka import KafkaError, KafkaException
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.analytics.view import AnalyticsView, Slice
from api.errors import ApiError, once_params, validate_params
from api.json import json_response
from api.raw_path_route import RawPathRoute
from api.trainer_view import trainer_ops
from operators.analytics.join import COUNTER_FIELDS, GROUP_FIELDS
from operators.analytics.topic import decode_record
from operators.analytics.uplift import METHOD, GroupTotals, uplift
from operators.control_group import CONTROL, EXPOSED
from operators.kafka import TopicSpec, analytics_topic, ensure_topics, high_watermarks
from operators.model_version import latest_version_path
from operators.settings import Settings
from operators.topic_table import BACKGROUND_FETCH_WAIT_MS, TopicTable
from state.partition import read_stored_offset

__all__ = ["AnalyticsService", "build_analytics", "get_campaign_analytics", "get_overview",
           "get_ops", "analytics_routes", "STEPS"]

log = logging.getLogger(__name__)

STEPS = {"hour": 3600, "day": 86400, "week": 7 * 86400}
_AUTO = (3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)


@dataclass
class AnalyticsService:
    """The analytics topic's reader and view, plus the last sample of the events log end."""

    settings: Settings
    table: TopicTable
    view: AnalyticsView
    _last_end: tuple[float, int] | None = field(default=None)
    _last_good: tuple[float, dict[str, object]] | None = field(default=None)
    _ops_running: asyncio.Future[dict[str, object]] | None = field(default=None)
    _stop: threading.Event = field(default_factory=threading.Event)

    def request_stop(self) -> None:
        """Ask the reader (and the topic's creator) to stop, without waiting (``close`` waits)."""
        self._stop.set()
        self.table.request_stop()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the reader, waiting up to ``timeout_s`` seconds for its thread."""
        self._stop.set()
        self.table.stop(timeout_s)

    async def ops_shared(self) -> dict[str, object]:
        """:meth:`ops` on a worker thread, one at a time: a caller arriving while one runs waits for
        that one's answer (a dashboard polling every 5 s while the broker takes 10 s to answer does
        not pile up threads and broker clients).

        Raises
        ------
        KafkaException
            As :meth:`ops`.
        """
        if self._ops_running is None or self._ops_running.done():
            fut = asyncio.ensure_future(run_in_threadpool(self.ops))
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even if every caller left
            self._ops_running = fut
        return await asyncio.shield(self._ops_running)

    def ops(self) -> dict[str, object]:
        """Blocking: reads the events log end (and the real-time flow's offsets when local).

        Raises
        ------
        KafkaException
            If the broker did not confirm the log's ends within ``analytics.ops_timeout_s``.
        """
        k, s = self.settings.kafka, self.settings.stream
        end = high_watermarks(k.brokers, k.events_topic, timeout_s=self.settings.analytics.ops_timeout_s)
        now, total = time.monotonic(), sum(end.values())
        rate = None
        if self._last_end is not None and now - self._last_end[0] > 0.5:
            rate = (total - self._last_end[1]) / (now - self._last_end[0])
        if self._last_end is None or now - self._last_end[0] > 0.5:
            self._last_end = (now, total)
        dead: dict[str, int] = {}
        parts = []
        for p in sorted(end):
            row = self.view.ops.get(p)
            for reason, n in (row.dead if row else {}).items():
                dead[reason] = dead.get(reason, 0) + n
            rt = read_stored_offset(s.state_dir, k.events_topic, p) if Path(s.state_dir).is_dir() else None
            parts.append({"partition": p, "log_end": end[p],
                          "analytics_offset": row.next_offset if row else 0,
                          "analytics_lag": max(0, end[p] - (row.next_offset if row else 0)),
                          "realtime_offset": rt, "realtime_lag": None if rt is None else max(0, end[p] - rt),
                          "max_event_ts": row.max_event_ts if row else None})
        latest = latest_version_path(s.model_dir)
        answer: dict[str, object] = {
            "stale": False, "age_s": 0.0, "events_per_s": rate, "log_end_total": total, "partitions": parts,
            "dead_letters": dead, "model_version": latest.name if latest else None,
            "analytics_updated_ts": max((r.updated_ts for r in self.view.ops.values()), default=None),
            **trainer_ops(s.model_dir)}
        self._last_good = (time.monotonic(), answer)
        return answer

    def last_good(self) -> tuple[float, dict[str, object]] | None:
        """The newest answer :meth:`ops` gave, and its age in seconds; None before the first."""
        if self._last_good is None:
            return None
        ts, answer = self._last_good
        return time.monotonic() - ts, answer


def build_analytics(settings: Settings) -> AnalyticsService:
    """Start reading the ``analytics`` topic, and create it if missing on a worker thread
    (``_ensure_analytics_topic``): the API's start-up does not wait for a broker that does not answer
    (it starts and reports not ready instead), and the reader retries until the topic exists."""
    topic = settings.analytics.topic
    view = AnalyticsView()
    table = TopicTable(settings.kafka.brokers, topic, decode_record, on_update=view.apply, keep=False,
                       fetch_wait_ms=BACKGROUND_FETCH_WAIT_MS).start()
    service = AnalyticsService(settings, table, view)
    threading.Thread(target=_ensure_analytics_topic,
                     args=(settings.kafka.brokers, analytics_topic(settings), service._stop),
                     name="analytics-topic", daemon=True).start()
    return service


ENSURE_RETRY_S = 5.0
"""Seconds between tries to create the analytics topic while the broker does not answer."""


def _ensure_analytics_topic(brokers: str, spec: TopicSpec, stop: threading.Event) -> None:
    """Create the topic of ``spec`` (``operators.kafka.analytics_topic``) once the broker answers (the
    analytics flow and ``fusionrec topics`` create it too); one warning while it does not, then a try every
    ``ENSURE_RETRY_S`` until ``stop`` is set."""
    topic, warned = spec.name, False
    while True:
        try:
            ensure_topics(brokers, [spec])
            if warned:
                log.info("analytics topic %s ensured", topic)
            return
        except (KafkaException, TimeoutError) as exc:
            if not warned:
                log.warning("analytics topic %s not ensured (%s); retrying every %.0f s while its reader waits",
                            topic, exc, ENSURE_RETRY_S)
                warned = True
        if stop.wait(ENSURE_RETRY_S):
            return


_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")
_RFC3339 = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})(?:[Tt]([0-9]{2}:[0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?$")
MAX_ABS_TS = 1e12
"""Epoch seconds the analytics take, either way of zero (RFC 3339 years 0001-9999 lie within)."""


def _ts(v: object) -> float | None:
    """Epoch seconds (a JSON number) or an RFC 3339 date-time / full date (UTC) -> epoch seconds.

    Raises ``ValueError`` otherwise (a 422 naming the parameter), also for '' and a date that does not exist.
    """
    if v is None:
        return None
    s = str(v)
    if _NUMBER.match(s):
        t = float(s)
        if not abs(t) <= MAX_ABS_TS:
            raise ValueError(f"must be epoch seconds within +-{MAX_ABS_TS:g}")
        return t
    m = _RFC3339.match(s)
    if not m:
        raise ValueError("must be epoch seconds or an RFC 3339 date-time or date (2024-05-01T10:00:00Z)")
    day, hm, sec, frac, zone = m.groups()
    leap = sec == "60"  # a leap second: the second after :59
    text = day if hm is None else f"{day}T{hm}:{'59' if leap else sec}{frac or ''}{'+00:00' if zone in 'Zz' else zone}"
    try:
        d = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not a date: {exc}") from exc
    return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp() + leap


class CampaignParams(BaseModel, extra="forbid"):
    """Query of ``GET /v1/analytics/campaigns/{id}``: series over ``from <= bucket < to`` (``to <= from``: none)."""

    from_: float | None = Field(default=None, alias="from", description=(
        "Series from this time on (epoch seconds, or an RFC 3339 date-time or date); default: the campaign's start"))
    to: float | None = Field(default=None, description=(
        "Series before this time; the A/B uplift counts from the start to here; at or before `from`: no buckets"))
    bucket: str = Field(default="auto", pattern=r"^(hour|day|week|auto|[6-9][0-9]|[1-9][0-9]{2,9})$", description=(
        "hour, day, week, auto or a number of seconds >= 60"))
    format: str = Field(default="json", pattern="^(json|csv)$")
    max_points: int = Field(default=400, ge=10, le=20000)
    top: int = Field(default=10, ge=1, le=100)

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _time(cls, v: object) -> float | None:
        return _ts(v)


def _step(p: CampaignParams, span: tuple[int, int] | None, base: int) -> int:
    if p.bucket in STEPS:
        return max(STEPS[p.bucket], base)
    if p.bucket != "auto":
        return max(int(p.bucket) // base * base, base)
    if span is None:
        return base
    lo = p.from_ if p.from_ is not None else span[0]
    hi = p.to if p.to is not None else span[1] + base
    for step in (base,) + tuple(s for s in _AUTO if s > base):
        if (hi - lo) / step <= p.max_points:
            return step
    return int(math.ceil((hi - lo) / p.max_points / 86400)) * 86400


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _counter_totals(v: list[float]) -> dict[str, float | None]:
    d: dict[str, float | None] = dict(zip(COUNTER_FIELDS, v, strict=True))
    d["ctr"] = _ratio(v[3], v[1])
    d["cvr"] = _ratio(v[5], v[1])
    d["aov"] = _ratio(v[7], v[5])
    d["items_per_order"] = _ratio(v[6], v[5])
    return d


def _series(sl: Slice, fields: tuple[str, ...]) -> dict[str, object]:
    return {"buckets": sl.buckets.tolist(),
            "series": {f: sl.values[:, i].tolist() for i, f in enumerate(fields)}}


def campaign_report(svc: AnalyticsService, campaign: str, p: CampaignParams) -> dict[str, object]:
    """The JSON body of ``GET /v1/analytics/campaigns/{id}`` (also used by the CSV export)."""
    view = svc.view
    span = view.span(campaign)
    if span is None and campaign not in view.campaigns():
        raise ApiError(404, "campaign_id", f"no analytics for campaign {campaign!r}")
    step = _step(p, span, svc.settings.analytics.bucket_s)
    lo = None if p.from_ is None else int(p.from_)
    hi = None if p.to is None else int(p.to)
    arms = view.arms(campaign, lo, hi, step)
    groups = view.groups(campaign, lo, hi, step)
    total = [0.0] * len(COUNTER_FIELDS)
    arm_out = []
    for (arm, scenario), sl in arms.items():
        t = sl.totals().tolist()
        total = [a + b for a, b in zip(total, t, strict=True)]
        arm_out.append({"arm": arm, "scenario": scenario, **_series(sl, COUNTER_FIELDS), "totals": _counter_totals(t)})
    group_out = {g: {**_series(sl, GROUP_FIELDS), "totals": dict(zip(GROUP_FIELDS, sl.totals().tolist(), strict=True))}
                 for g, sl in groups.items()}
    # the A/B comparison is cumulative: from the campaign's start to ``to`` (a user assigned before
    # ``from`` still belongs to the test), whatever range the series show
    cumulative = view.groups(campaign, None, hi, 100 * 365 * 86400)
    gt = {g: GroupTotals(*sl.totals().tolist()) for g, sl in cumulative.items()}
    ups = [asdict(u) for u in uplift(gt.get(EXPOSED, GroupTotals()), gt.get(CONTROL, GroupTotals()))]
    return {"campaign_id": campaign, "from": lo, "to": hi, "bucket_s": step, "span": span,
            "fields": list(COUNTER_FIELDS), "arms": arm_out, "totals": _counter_totals(total),
            "groups": group_out, "uplift": ups, "uplift_method": METHOD,
            "top_items": view.top_items(campaign, p.top),
            # the newest bucket while it is still filling (its end is after now): the dashboard keeps it off the lines
            "open_bucket": _open_bucket(arm_out, step)}


def _open_bucket(arms: list[dict[str, object]], step: float) -> float | None:
    """Start of the newest bucket if it has not ended yet (wall clock), else None."""
    newest = max((b for a in arms for b in a["buckets"]), default=None)  # type: ignore[attr-defined]
    return newest if newest is not None and newest + step > time.time() else None


def item_cards(catalog: object, item_ids: list[str]) -> dict[str, dict[str, str]]:
    """``{item_id: {"title", "image"}}`` from the catalog topic's items (what each has of them)."""
    out: dict[str, dict[str, str]] = {}
    for item_id in item_ids:
        item = catalog.get(item_id) if catalog is not None else None  # type: ignore[attr-defined]
        if isinstance(item, dict):
            card = {k: str(item[k]) for k in ("title", "image") if isinstance(item.get(k), str) and item[k]}
            if card:
                out[item_id] = card
    return out


def _csv(report: dict[str, object]) -> Response:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["campaign_id", "arm", "scenario", "bucket_start", "bucket_start_iso", *COUNTER_FIELDS])
    for a in report["arms"]:  # type: ignore[attr-defined]
        cols = [a["series"][f] for f in COUNTER_FIELDS]
        for i, b in enumerate(a["buckets"]):
            iso = datetime.fromtimestamp(b, UTC).isoformat().replace("+00:00", "Z")
            w.writerow([report["campaign_id"], a["arm"], a["scenario"], b, iso, *(c[i] for c in cols)])
    name = f"analytics-{report['campaign_id']}.csv"
    return Response(buf.getvalue(), media_type="text/csv",
                    headers={"content-disposition": f'attachment; filename="{name}"'})


def _bandit_url(request: Request, campaign: str) -> str | None:
    """The optimizer's ``/v1/campaigns/{id}/arms`` when the facade knows the campaign, else None."""
    campaigns = getattr(request.app.state.services, "campaigns", None)
    if campaigns is None or campaigns.get(campaign) is None:
        return None
    return f"/v1/campaigns/{quote(campaign, safe='')}/arms"


async def get_campaign_analytics(request: Request) -> Response:
    svc: AnalyticsService = request.app.state.analytics
    p = validate_params(CampaignParams, once_params(request.query_params))  # to <= from: an empty range (no buckets)
    report = campaign_report(svc, request.path_params["campaign_id"], p)
    report["bandit_url"] = _bandit_url(request, report["campaign_id"])  # type: ignore[arg-type]
    services = getattr(request.app.state, "services", None)
    top = report["top_items"]
    ids = list(dict.fromkeys(i for rows in top.values() for i, _ in rows))  # type: ignore[attr-defined]
    report["items"] = item_cards(getattr(services, "catalog", None), ids)  # titles and images of the top items
    return _csv(report) if p.format == "csv" else json_response(report)


async def get_overview(request: Request) -> Response:
    """``{"campaigns": [{"campaign_id", "arms", "span", "totals"}], "n_campaigns"}``, one row per campaign."""
    view: AnalyticsView = request.app.state.analytics.view
    rows = []
    for c in view.campaigns():
        arms = view.arms(c, None, None, 86400 * 365 * 100)
        t = [0.0] * len(COUNTER_FIELDS)
        for sl in arms.values():
            t = [a + b for a, b in zip(t, sl.totals().tolist(), strict=True)]
        rows.append({"campaign_id": c, "arms": sorted({a for a, _ in arms}), "span": view.span(c),
                     "totals": _counter_totals(t)})
    base = request.app.state.analytics.settings.analytics.bucket_s
    return json_response({"n_campaigns": len(rows), "bucket_s": base, "campaigns": rows})


async def get_ops(request: Request) -> Response:
    """The ops panel's data. When the broker does not confirm the log's ends within ``ops_timeout_s``:
    the last good answer marked ``stale`` with its ``age_s``, or 503 with ``Retry-After`` if there is none
    or it is older than ``ops_stale_max_s`` (an hour-old lag is no answer)."""
    svc: AnalyticsService = request.app.state.analytics
    try:
        return json_response(await svc.ops_shared())
    except KafkaException as exc:
        s = svc.settings
        reason = (f"the event broker {s.kafka.brokers} did not confirm the ends of the {s.kafka.events_topic!r} log "
                  f"within {s.analytics.ops_timeout_s:g} s ({_kafka_detail(exc)})")
        last = svc.last_good()
        if last is not None and last[0] <= s.analytics.ops_stale_max_s:
            age_s, answer = last
            log.warning("GET /v1/analytics/ops answers its last good answer (%.1f s old): %s", age_s, reason)
            return json_response({**answer, "stale": True, "age_s": round(age_s, 3), "stale_reason": reason})
        if last is not None:
            reason += (f"; the last good answer is {last[0]:.0f} s old, more than analytics.ops_stale_max_s = "
                       f"{s.analytics.ops_stale_max_s:g} s")
        log.warning("GET /v1/analytics/ops answers 503: %s", reason)
        return json_response({"error": {"field": "broker", "reason": f"{reason}; retry later"}}, status_code=503,
                             headers={"Retry-After": str(s.api.retry_after_s)})


def _kafka_detail(exc: KafkaException) -> str:
    """The message of a ``KafkaException`` (its ``KafkaError``'s text, not the object's repr)."""
    arg = exc.args[0] if exc.args else exc
    return arg.str() if isinstance(arg, KafkaError) else str(arg)


def analytics_routes() -> list[Route]:
    """The analytics routes, for ``create_app``'s route list."""
    return [
        RawPathRoute("/v1/analytics/campaigns/{campaign_id}", get_campaign_analytics, methods=["GET"]),  # nope%2Fx whole
        Route("/v1/analytics/overview", get_overview, methods=["GET"]),
        Route("/v1/analytics/ops", get_ops, methods=["GET"]),
    ]
