"""``POST /v1/events``: validate one event or a list, produce them to Kafka, answer 202 once durable.

202 means the broker acknowledged every event (``acks=all``); when it cannot within
``api.event_ack_timeout_s`` (or is known to be down) the answer is 503 with ``Retry-After`` and
nothing is accepted. A body in a content-coding (``Content-Encoding: gzip``, ...) is a 415: the API does not
decompress.

``event_id`` (a UUID) and ``ts`` (now, epoch seconds) are filled in when absent. A ``ts`` ahead of
the API's clock (by at most ``stream.future_skew_s``, else 422) is a client clock running fast: it
is set to the time the API received the event, since nothing happens after it is reported. So
last-touch attribution never counts a list served after the feedback was posted, and the optimizer
and the analytics agree however their reads of the two topics interleave. Everything
else must satisfy the flow's own event contract (operators/parse.py: fields, types, size,
``ts`` within ``stream.future_skew_s`` ahead and ``api.max_age_s`` behind now), so what is
answered 202 is never dead-lettered later. A list is accepted whole or refused whole, with the
index of the first bad event in the field path (``events[3].ts``).

Each request is charged to its caller (key and address) before it is validated: its events against
``api.event_rate_limit`` and the item ids they name against ``api.event_item_rate_limit`` (429 with
``Retry-After`` over either, nothing accepted). A basket names at most ``api.max_basket_items`` items.

Trust boundary: server-only event types (``api.server_only_types``: served lists) are refused,
and an event naming a ``request_id`` must carry one the API issued (``api/request_ids.py``) to
the same ``user_id``, for the same ``campaign_id``/``arm`` when it names them, with ``ts`` inside
the list's attribution window (else 403: the caller may not report on that list).
"""

from __future__ import annotations

import logging
import time
import uuid
from functools import partial

import msgspec
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.durable_producer import BrokerUnavailable
from api.errors import ApiError
from api.json import json_response
from api.json_body import read_body, refuse_content_coding
from api.rate_limit import EVENTS, ITEM_IDS
from api.request_ids import IssuedRequest
from api.services import Services
from operators.errors import BadEvent
from operators.parse import json_type, validate_event_dict
from operators.schema import Event, encode_event

__all__ = ["post_events"]

log = logging.getLogger(__name__)


class FeedbackRefused(BadEvent):
    """Feedback on a list the caller may not report on (not issued, another user's, another campaign or arm,
    outside the list's window): HTTP 403 naming the field."""


def _check_feedback(svc: Services, ev: Event, now: float) -> None:
    """Raise ``FeedbackRefused`` unless ``ev``'s request_id is one the API served to ``ev.user_id`` within its window."""
    if ev.request_id is None:
        return
    issued = svc.signer.verify(ev.request_id, ev.user_id)
    if not isinstance(issued, IssuedRequest):
        raise FeedbackRefused("request_id", issued, ev.request_id)
    if ev.campaign_id is not None and ev.campaign_id != issued.campaign_id:
        raise FeedbackRefused("campaign_id", f"the list {ev.request_id!r} was served by campaign {issued.campaign_id!r}",
                       ev.campaign_id)
    if ev.arm is not None and ev.arm != issued.arm:
        raise FeedbackRefused("arm", f"the list was served by arm {issued.arm!r}", ev.arm)
    skew = svc.settings.stream.future_skew_s or 0.0
    if ev.ts < issued.ts - skew:
        raise FeedbackRefused("ts", f"before the list was served ({issued.ts:.3f})", ev.ts)
    c = svc.campaigns.get(issued.campaign_id) if issued.campaign_id else None
    window = c.window_s if c is not None else svc.settings.analytics.attribution_window_s
    if ev.ts > issued.ts + window + skew:
        raise FeedbackRefused("ts", f"after the list's attribution window ({window:g} s from {issued.ts:.3f})", ev.ts)


def _reason(exc: BadEvent) -> str:
    return "bad_timestamp" if exc.field == "ts" else ("too_large" if exc.field == "$size" else "invalid_field")


def _not_an_event(field: str, reason: str, value: object) -> ApiError:
    """422 naming ``field``: ``reason`` followed by the JSON type sent; a short scalar is echoed as ``value``."""
    scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
    echo = value if scalar and len(str(value)) <= 200 else None
    return ApiError(422, field, f"{reason}; got {json_type(value)}", value=echo)


def _events_of(obj: object) -> tuple[list[dict[str, object]], bool]:
    """The events of a decoded body (one object, or an array of objects) and whether it was an array.

    Raises
    ------
    ApiError
        422 naming ``body`` (neither an object nor an array) or ``events[i]`` (an element that is no object),
        with the JSON type sent.
    """
    if isinstance(obj, dict):
        return [obj], False
    if not isinstance(obj, list):
        raise _not_an_event("body", "must be one event (a JSON object) or a batch of events (a JSON array of objects)",
                            obj)
    for i, e in enumerate(obj):
        if not isinstance(e, dict):
            raise _not_an_event(f"events[{i}]", "an event must be a JSON object", e)
    return obj, True


def _id_key(value: object) -> object:
    """A set key for a raw id: the value itself when it is a JSON scalar, else one of its own (it will be refused)."""
    return value if isinstance(value, str | int | float) else object()


def _item_ids_named(raw: list[dict[str, object]], max_basket_items: int, many: bool) -> int:
    """The item ids the events name, what ``api.event_item_rate_limit`` charges: per event, its ``item_id`` and
    basket lines, a value repeated in one event once. Counted on the decoded JSON before validation, so never
    fewer than the validated events' ``item_ids()`` (JSON values equal in Python are one canonical id; spellings
    that canonicalise alike, ``12`` and ``"12"``, count twice).

    Raises
    ------
    ApiError
        422 naming ``items`` (``events[i].items``) if a basket names more than ``max_basket_items`` distinct items
        (``api.max_basket_items``; repeated lines of an item, which validation merges, are one).
    """
    n = 0
    for i, e in enumerate(raw):
        lines = e.get("items")
        ids: set[object] = set()
        if isinstance(lines, list):
            try:
                ids = set(lines)  # plain ids: at C speed
            except TypeError:  # line objects (or junk)
                ids = {_id_key(line.get("item_id") if isinstance(line, dict) else line) for line in lines}
            if len(ids) > max_basket_items:
                raise ApiError(422, f"events[{i}].items" if many else "items",
                               f"{len(ids)} distinct items > api.max_basket_items={max_basket_items}")
        item = e.get("item_id")
        if item is not None:
            ids.add(_id_key(item))
        n += len(ids)
    return n


def _charge(svc: Services, request: Request, n_events: int, n_item_ids: int) -> Response | None:
    """Charge the caller's event limits (``svc.event_limiter``): None if the request fits, else the 429 to answer
    (with ``Retry-After``; nothing charged). A request that could never fit a window is a 422 (raised)."""
    limiter, a = svc.event_limiter, svc.settings.api
    if limiter is None:
        return None
    costs = {EVENTS: n_events, ITEM_IDS: n_item_ids}
    for unit, setting, spec in ((EVENTS, "event_rate_limit", a.event_rate_limit),
                                (ITEM_IDS, "event_item_rate_limit", a.event_item_rate_limit)):
        largest = limiter.largest(unit)
        if largest is not None and costs[unit] > largest:
            svc.metrics.events_rejected.labels("too_large").inc(n_events)
            raise ApiError(422, "events", f"{costs[unit]} {unit} > the most api.{setting}={spec!r} allows in one "
                                          "request; split it")
    refused = limiter.retry_after_s(request.scope, costs)
    if refused is None:
        return None
    svc.metrics.events_rejected.labels("rate_limited").inc(n_events)
    retry, limit = refused
    return json_response({"error": {"field": "api_key", "reason": f"event rate limit exceeded ({limit}, per key and "
                                    "client); nothing of the request was accepted", "retry_after_s": retry}},
                         status_code=429, headers={"Retry-After": str(retry)})


_INLINE_EVENTS = 64
"""Batches up to this many events are counted and validated on the event loop (cheaper than a thread hop)..."""
_INLINE_BODY_BYTES = 65536
"""... when their body is at most this long (a few events of long baskets are as much work as many events)."""


def _validate(svc: Services, raw: list[dict[str, object]], many: bool, now: float) -> tuple[list[Event], list[bytes]]:
    """Validate and encode every event of a request, or raise ``ApiError`` naming the first bad field."""
    a = svc.settings.api
    server_only = frozenset(a.server_only_types)
    max_bytes = svc.settings.stream.max_event_bytes
    events, encoded = [], []
    for i, e in enumerate(raw):
        e.setdefault("event_id", uuid.uuid4().hex)
        e.setdefault("ts", now)
        try:
            kind = e.get("type")  # refused before its fields: their errors would walk a client through its contract
            if isinstance(kind, str) and kind in server_only:
                raise BadEvent("type", "only the server produces this event type", kind)
            ev = validate_event_dict(e, svc.ingest_rules, now)
            if ev.type in server_only:  # as validated, whatever the spelling sent
                raise BadEvent("type", "only the server produces this event type", ev.type)
            if ev.ts > now:  # a client clock ahead (within future_skew_s): the event happened by now
                ev = msgspec.structs.replace(ev, ts=now)
            _check_feedback(svc, ev, now)
            value = encode_event(ev)
            if len(value) > max_bytes:  # the flow's too_large rule, on the bytes the flow will read
                raise BadEvent("$size", f"{len(value)} bytes > stream.max_event_bytes={max_bytes}", None)
        except BadEvent as exc:
            reason = _reason(exc)
            svc.metrics.events_rejected.labels(reason).inc()
            field = "$" if exc.field == "$size" else exc.field
            field = f"events[{i}].{field}" if many else field
            status = 413 if reason == "too_large" else (403 if isinstance(exc, FeedbackRefused) else 422)
            value_out = exc.value if isinstance(exc.value, str | int | float) and len(str(exc.value)) <= 200 else None
            raise ApiError(status, field, exc.reason, value=value_out) from exc
        events.append(ev)
        encoded.append(value)
    return events, encoded


async def post_events(request: Request) -> Response:
    svc: Services = request.app.state.services
    a = svc.settings.api
    refused = refuse_content_coding(request)
    if refused is not None:  # refused before the body is read (RFC 7694: 415 and the codings accepted)
        svc.metrics.events_rejected.labels("unsupported_encoding").inc()
        return refused
    try:
        body = await read_body(request, a.max_body_bytes, a.body_timeout_s, a.body_total_s)
    except ApiError as exc:
        svc.metrics.events_rejected.labels("client_disconnected" if exc.status == 400 else "too_large").inc()
        raise
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        svc.metrics.events_rejected.labels("malformed_json").inc()
        raise ApiError(400, "body", f"malformed JSON: {exc}") from exc
    try:
        raw, many = _events_of(obj)
    except ApiError:
        svc.metrics.events_rejected.labels("invalid_field").inc()
        raise
    if many and not raw:
        raise ApiError(422, "events", "empty list")
    if len(raw) > a.max_events_per_request:
        svc.metrics.events_rejected.labels("too_large").inc()
        raise ApiError(422, "events", f"{len(raw)} events > api.max_events_per_request={a.max_events_per_request}")
    # big requests are counted and validated on a worker thread: the event loop keeps serving other requests
    offload = len(raw) > _INLINE_EVENTS or len(body) > _INLINE_BODY_BYTES
    count = partial(_item_ids_named, raw, a.max_basket_items, many)
    try:
        n_item_ids = await run_in_threadpool(count) if offload else count()
    except ApiError:
        svc.metrics.events_rejected.labels("too_large").inc(len(raw))
        raise
    refused = _charge(svc, request, len(raw), n_item_ids)
    if refused is not None:
        return refused
    check = partial(_validate, svc, raw, many, time.time())
    events, encoded = await run_in_threadpool(check) if offload else check()
    topic = svc.settings.kafka.events_topic
    try:  # 202 only once the broker acknowledged every event (api/durable_producer.py)
        await svc.durable.produce_acked([(topic, ev.user_id.encode(), value)
                                         for ev, value in zip(events, encoded, strict=True)])
    except BrokerUnavailable as exc:
        svc.metrics.events_unavailable.inc(len(events))
        retry = svc.settings.api.retry_after_s
        return json_response({"error": {"field": "broker", "reason": f"{exc.reason}; nothing was accepted, retry "
                                        f"with the same event_ids", "event_ids": [e.event_id for e in events]}},
                             status_code=503, headers={"Retry-After": str(retry)})
    svc.metrics.events_accepted.inc(len(events))
    return json_response({"accepted": len(events), "event_ids": [e.event_id for e in events]}, status_code=202)
