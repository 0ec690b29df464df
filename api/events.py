"""``POST /v1/events``: validate one event or a list, produce them to Kafka, answer 202 once durable.

202 means the broker acknowledged every event (``acks=all``); when it cannot within
``api.event_ack_timeout_s`` (or is known to be down) the answer is 503 with ``Retry-After`` and
nothing is accepted.

``event_id`` (a UUID) and ``ts`` (now, epoch seconds) are filled in when absent; everything
else must satisfy the event contract (operators/parse.py). A list is accepted whole or refused
whole, with the index of the first bad event in the field path (``events[3].ts``).
"""

from __future__ import annotations

import time
import uuid

import orjson
from starlette.requests import Request
from starlette.responses import Response

from api.durable_producer import BrokerUnavailable
from api.errors import ApiError
from api.json import json_response
from api.services import Services
from operators.errors import BadEvent
from operators.parse import validate_event_dict
from operators.schema import encode_event

__all__ = ["post_events"]


async def post_events(request: Request) -> Response:
    svc: Services = request.app.state.services
    body = await request.body()
    limit = svc.settings.stream.max_event_bytes * 100
    if len(body) > limit:
        svc.metrics.events_rejected.labels("too_large").inc()
        raise ApiError(413, "body", f"{len(body)} bytes > limit {limit}")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        svc.metrics.events_rejected.labels("malformed_json").inc()
        raise ApiError(400, "body", f"malformed JSON: {exc}") from exc
    many = isinstance(obj, list)
    raw = obj if many else [obj]
    if many and not raw:
        raise ApiError(422, "events", "empty list")
    events = []
    for i, e in enumerate(raw):
        if isinstance(e, dict):
            e.setdefault("event_id", uuid.uuid4().hex)
            e.setdefault("ts", time.time())
        try:
            events.append(validate_event_dict(e, svc.rules))
        except BadEvent as exc:
            svc.metrics.events_rejected.labels("invalid_field").inc()
            field = f"events[{i}].{exc.field}" if many else exc.field
            raise ApiError(422, field, exc.reason, value=exc.value if not isinstance(exc.value, dict) else None) from exc
    topic = svc.settings.kafka.events_topic
    try:  # 202 only once the broker acknowledged every event (api/durable_producer.py)
        await svc.durable.produce_acked([(topic, ev.user_id.encode(), encode_event(ev)) for ev in events])
    except BrokerUnavailable as exc:
        svc.metrics.events_unavailable.inc(len(events))
        retry = svc.settings.api.retry_after_s
        return json_response({"error": {"field": "broker", "reason": f"{exc.reason}; nothing was accepted, retry "
                                        f"with the same event_ids", "event_ids": [e.event_id for e in events]}},
                             status_code=503, headers={"Retry-After": str(retry)})
    svc.metrics.events_accepted.inc(len(events))
    return json_response({"accepted": len(events), "event_ids": [e.event_id for e in events]}, status_code=202)
