"""Kafka message bytes -> ``Event`` or ``DeadLetter``; never raises, whatever the bytes.

Validation is msgspec (``msgspec.convert`` onto a wire struct) plus the rules msgspec cannot
express: known event type, fields each type requires, epoch-seconds timestamps, key = user_id.
Money and coordinates are bounded (``EventRules.max_quantity`` / ``max_price``, from ``[stream]``, within
``MAX_QUANTITY`` / ``MAX_PRICE``; latitude / longitude ranges), and a basket's repeated lines of one item are merged into one (quantities summed, the first price
kept), so one event counts an item once in popularity, co-visitation and the analytics.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec
import orjson

from operators.errors import BadEvent
from operators.ids import BadId, canonical_id
from operators.schema import EVENT_FIELDS, BasketLine, DeadLetter, Event
from operators.settings import EventTypeSpec, Settings

__all__ = ["EventRules", "parse_event", "validate_event_dict", "is_event", "kafka_timestamp_s", "JSON_TYPES",
           "json_type"]

# epoch seconds accepted: 2000-01-01 .. 2100-01-01; larger values are most likely milliseconds
_TS_MIN_S = 946_684_800.0
_TS_MAX_S = 4_102_444_800.0
MAX_EXTRA_DEPTH = 16
"""Deepest nesting of arrays / objects in an event's extra (unknown) fields: JSON deeper than this
is no shop's data, and encoders downstream (the lake's orjson: 255 levels; msgspec: the Python
stack) fail on it, so it is a ``BadEvent`` (400 / dead letter) at the door."""

MAX_QUANTITY = 1e6
"""Hard bound of ``quantity`` of an event or basket line (units; must be > 0); ``[stream] max_quantity``
is the configured one (default 10,000)."""
MAX_PRICE = 1e9
"""Hard bound of ``price`` (a unit price in the shop's currency; must be >= 0); ``[stream] max_price`` is the
configured one (default 1e6). With ``MAX_QUANTITY`` this keeps revenue, its square and their sums over
years of orders finite in float64: one order of ``inf`` or an overflowing square would stop a campaign's
analytics row for good."""


@dataclass(frozen=True, slots=True)
class EventRules:
    """What a valid event is: the configured event types, the size limit (bytes), how far ``ts`` may
    lie ahead of (``future_skew_s``) or behind (``max_age_s``) the receiving clock (None = no bound), and
    the largest ``price`` and ``quantity`` one event or basket line may claim (what it adds to the
    analytics' revenue; the defaults are the hard bounds ``MAX_PRICE`` and ``MAX_QUANTITY``)."""

    types: dict[str, tuple[str, ...]]
    max_event_bytes: int = 65536
    future_skew_s: float | None = 300.0
    max_age_s: float | None = None
    max_price: float = MAX_PRICE
    max_quantity: float = MAX_QUANTITY

    @classmethod
    def from_specs(cls, specs: Iterable[EventTypeSpec], max_event_bytes: int = 65536,
                   future_skew_s: float | None = 300.0, max_age_s: float | None = None,
                   max_price: float = MAX_PRICE, max_quantity: float = MAX_QUANTITY) -> EventRules:
        return cls(types={s.name: tuple(s.requires) for s in specs}, max_event_bytes=max_event_bytes,
                   future_skew_s=future_skew_s, max_age_s=max_age_s, max_price=max_price, max_quantity=max_quantity)

    @classmethod
    def from_settings(cls, settings: Settings) -> EventRules:
        """The flow's rules (the API applies them too): event types, ``stream.max_event_bytes``,
        ``future_skew_s``, ``max_age_s``, ``max_price`` and ``max_quantity``."""
        s = settings.stream
        return cls.from_specs(settings.event_types, s.max_event_bytes, s.future_skew_s, s.max_age_s,
                              s.max_price, s.max_quantity)


Id = str | int | float  # any of them becomes its canonical string (operators/ids.py) or a BadEvent

Quantity = Annotated[float, msgspec.Meta(gt=0.0, le=MAX_QUANTITY)]
Price = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_PRICE)]
Latitude = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
Longitude = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]


class _WireLine(msgspec.Struct, forbid_unknown_fields=True):
    item_id: Id
    quantity: Quantity = 1.0
    price: Price | None = None


class _WireEvent(msgspec.Struct):
    event_id: Id
    ts: float | str
    type: str
    user_id: Id
    session_id: Id | None = None
    item_id: Id | None = None
    items: list[_WireLine | Id] | None = None
    quantity: Quantity | None = None
    price: Price | None = None
    store_id: Id | None = None
    query: str | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    campaign_id: Id | None = None
    arm: str | None = None
    request_id: str | None = None


JSON_TYPES: dict[type, str] = {dict: "object", list: "array", str: "string", int: "number", float: "number",
                               bool: "boolean", type(None): "null"}
"""JSON's name for each type orjson decodes to (``type()`` is exact, so a bool is a boolean, not a number)."""


def json_type(value: object) -> str:
    """JSON's name for the type of ``value`` as orjson decoded it (``object``, ``array``, ``string``, ``number``,
    ``boolean``, ``null``), never a Python type name."""
    return JSON_TYPES.get(type(value), "unknown")


_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_TYPE = re.compile(r"`([^`]*)`")
_JSON_TYPE = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
"""JSON's name for each Python type msgspec names in a type error (``array``, ``object``, ``null`` are JSON's already)."""


def _json_terms(reason: str) -> str:
    """msgspec's ``Expected `float | null`, got `str``` in JSON's terms: ``Expected `number | null`, got `string```."""
    if not reason.startswith("Expected"):  # "Object missing required field `x`" names a field, not a type
        return reason
    return _TYPE.sub(lambda m: "`" + " | ".join(_JSON_TYPE.get(t, t) for t in m.group(1).split(" | ")) + "`", reason)


def _id(field: str, value: Id | None) -> str | None:
    """Canonical string of an id (the rule of ``operators.ids``), None for None; BadEvent naming ``field``."""
    if value is None:
        return None
    try:
        return canonical_id(value)
    except BadId as exc:
        raise BadEvent(field, exc.reason, value) from exc


def _ts(value: float | str, rules: EventRules, received_ts: float | None) -> float:
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadEvent("ts", "must be epoch seconds or an ISO-8601 time with zone", value) from exc
        if when.tzinfo is None:  # a naive time would be read in the host's zone: ambiguous
            raise BadEvent("ts", "ISO-8601 time needs a zone (e.g. 'Z' or '+01:00')", value)
        value = when.timestamp()
    if value != value or value in (float("inf"), float("-inf")):
        raise BadEvent("ts", "must be a finite number of epoch seconds", value)
    if value > _TS_MAX_S and _TS_MIN_S * 1000 <= value <= _TS_MAX_S * 1000:
        raise BadEvent("ts", "must be epoch seconds (looks like milliseconds)", value)
    if not _TS_MIN_S <= value <= _TS_MAX_S:
        raise BadEvent("ts", "must be epoch seconds between 2000-01-01 and 2100-01-01", value)
    now = time.time() if received_ts is None else received_ts
    if rules.future_skew_s is not None and value > now + rules.future_skew_s:
        raise BadEvent("ts", f"more than future_skew_s={rules.future_skew_s:g} s ahead of the receiving clock "
                             f"({now:.0f})", value)
    if rules.max_age_s is not None and value < now - rules.max_age_s:
        raise BadEvent("ts", f"older than max_age_s={rules.max_age_s:g} s before the receiving clock ({now:.0f})",
                       value)
    return float(value)


def _check_money(prefix: str, price: float | None, quantity: float | None, rules: EventRules) -> None:
    """BadEvent naming ``<prefix>price`` / ``<prefix>quantity`` above ``rules.max_price`` / ``max_quantity``."""
    if price is not None and price > rules.max_price:
        raise BadEvent(f"{prefix}price", f"must be at most stream.max_price={rules.max_price:g}", price)
    if quantity is not None and quantity > rules.max_quantity:
        raise BadEvent(f"{prefix}quantity", f"must be at most stream.max_quantity={rules.max_quantity:g}", quantity)


def _nesting_over(value: object, limit: int) -> bool:
    """True if ``value`` nests arrays / objects more than ``limit`` levels deep (iterative: no recursion)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth >= limit:
                return True
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False


def _extra(obj: dict[str, object]) -> dict[str, object] | None:
    extra = {k: v for k, v in obj.items() if k not in EVENT_FIELDS}
    for k, v in extra.items():
        if _nesting_over(v, MAX_EXTRA_DEPTH):
            raise BadEvent(k, f"nested deeper than {MAX_EXTRA_DEPTH} levels of arrays/objects", None)
    return extra or None


def validate_event_dict(obj: object, rules: EventRules, received_ts: float | None = None) -> Event:
    """Validate a decoded JSON object against the contract.

    ``received_ts`` (epoch s) is the receiving clock ``ts`` is bounded by (``rules.future_skew_s``,
    ``rules.max_age_s``); None = the wall clock now.

    Raises
    ------
    BadEvent
        Naming the field (a JSON path such as ``items[2].item_id``) and the reason.
    """
    if not isinstance(obj, dict):
        raise BadEvent("$", "event must be a JSON object", type(obj).__name__)
    try:
        w = msgspec.convert(obj, _WireEvent)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        m = _PATH.search(msg)
        field = m.group("path") if m else "$"
        reason = _json_terms(_PATH.sub("", msg))
        if reason.startswith("Object missing required field"):
            field = reason.split("`")[1]
            reason = "required"
        raise BadEvent(field, reason, obj.get(field.split("[")[0].split(".")[0]) if field != "$" else None) from exc
    requires = rules.types.get(w.type)
    if requires is None:
        raise BadEvent("type", f"unknown event type (configured: {', '.join(sorted(rules.types))})", w.type)
    _check_money("", w.price, w.quantity, rules)
    items: tuple[BasketLine, ...] | None = None
    if w.items is not None:
        lines: dict[str, BasketLine] = {}  # one line per item: repeated lines of an item are merged
        for i, line in enumerate(w.items):
            if isinstance(line, _WireLine):
                _check_money(f"items[{i}].", line.price, line.quantity, rules)
                new = BasketLine(_id(f"items[{i}].item_id", line.item_id) or "", line.quantity, line.price)
            else:
                new = BasketLine(_id(f"items[{i}]", line) or "")
            had = lines.get(new.item_id)
            if had is not None:
                quantity = had.quantity + new.quantity
                if quantity > rules.max_quantity:
                    raise BadEvent(f"items[{i}].quantity", f"the item's lines add up to more than "
                                   f"stream.max_quantity={rules.max_quantity:g}", quantity)
                new = BasketLine(new.item_id, quantity, had.price if had.price is not None else new.price)
            lines[new.item_id] = new
        items = tuple(lines.values())
    event = Event(
        event_id=_id("event_id", w.event_id) or "",
        ts=_ts(w.ts, rules, received_ts),
        type=w.type,
        user_id=_id("user_id", w.user_id) or "",
        session_id=_id("session_id", w.session_id),
        item_id=_id("item_id", w.item_id),
        items=items,
        quantity=w.quantity,
        price=w.price,
        store_id=_id("store_id", w.store_id),
        query=w.query,
        lat=w.lat,
        lon=w.lon,
        campaign_id=_id("campaign_id", w.campaign_id),
        arm=w.arm,
        request_id=w.request_id,
        extra=_extra(obj),
    )
    for req in requires:
        alternatives = req.split("|")
        if not any(getattr(event, a, None) not in (None, (), "") for a in alternatives):
            raise BadEvent(req, f"required for event type {w.type!r}", None)
    return event


def parse_event(
    key: bytes | None,
    value: bytes | None,
    rules: EventRules,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    received_ts: float | None = None,
) -> Event | DeadLetter:
    """Decode and validate one Kafka message; a bad one becomes a ``DeadLetter`` with its reason.

    Parameters
    ----------
    key : bytes or None
        Kafka key; must be the UTF-8 ``user_id``.
    value : bytes or None
        JSON object of one event (orjson), at most ``rules.max_event_bytes`` bytes.
    received_ts : float, optional
        The receiving clock, epoch s: the Kafka message's timestamp (deterministic on re-reads);
        None = the wall clock.

    Returns
    -------
    Event, or DeadLetter(reason, field, detail, raw, topic, partition, offset).
    """

    def dead(reason: str, field: str, detail: str) -> DeadLetter:
        return DeadLetter(reason, field, detail, value or b"", topic, partition, offset)

    if value is None:
        return dead("missing_value", "value", "message has no value")
    if key is None:
        return dead("missing_key", "key", "message has no key (the key must be the user_id)")
    if len(value) > rules.max_event_bytes:
        return dead("too_large", "value", f"{len(value)} bytes > max_event_bytes={rules.max_event_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return dead("malformed_json", "value", str(exc))
    try:
        event = validate_event_dict(obj, rules, received_ts)
    except BadEvent as exc:
        reason = "unknown_event_type" if exc.field == "type" and "unknown" in exc.reason else (
            "bad_timestamp" if exc.field == "ts" else "invalid_field")
        return dead(reason, exc.field, str(exc))
    try:
        key_s = key.decode()
    except UnicodeDecodeError:
        return dead("key_mismatch", "key", f"key is not UTF-8: {key[:40]!r}")
    try:
        key_s = canonical_id(key_s)  # the key names the user by the same rule (a JVM producer may send "12345.0")
    except BadId:
        pass
    if key_s != event.user_id:
        return dead("key_mismatch", "key", f"key {key_s!r} != user_id {event.user_id!r}")
    return event


def kafka_timestamp_s(timestamp: tuple[int, int] | None) -> float | None:
    """A Kafka message's ``(type, ms)`` timestamp in epoch seconds; None when it has none."""
    if timestamp is None or timestamp[0] == 0 or timestamp[1] <= 0:  # 0 = TIMESTAMP_NOT_AVAILABLE
        return None
    return timestamp[1] / 1000.0


def is_event(x: Event | DeadLetter) -> bool:
    return isinstance(x, Event)
