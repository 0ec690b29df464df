"""The record of one served campaign list on the server-only ``served`` topic: its wire form, written by
the API and read back in one typed decode.

The record is a ``rec_request`` event (``operators/schema.py``; the analytics flow parses it as one),
its list's fields at top level. ``ServedRecord`` names those fields in the order ``encode_event``
writes them, so ``encode_served`` gives the same bytes as ``encode_event`` of the equivalent
``Event`` without building the event and its extra dict. ``served_impression`` reads a record
straight into the ``Impression`` the optimizer folds, with one msgspec decode instead of
``parse_event`` (JSON to dicts, a conversion, per-field checks) and ``impression_of``: every API
worker folds every list, so this runs once per served list per worker. It answers only for records
that ``parse_event`` would accept as they are, and then with the same ``Impression``; for anything
else (another shape, a timestamp out of bounds, ids that are not canonical, a key that is not the
user id) it returns None and the caller parses the record the general way.
"""

from __future__ import annotations

import msgspec

from operators.attribution import ANONYMOUS_USER, REQUEST_TYPE, Impression
from operators.errors import BadEvent
from operators.ids import is_canonical_id
from operators.parse import EventRules, checked_ts
from operators.schema import EVENT_FIELDS

__all__ = ["ServedRecord", "encode_served", "served_impression"]


class ServedRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """One served list as the ``rec_request`` record of the ``served`` topic (fields in wire order).

    Attributes
    ----------
    event_id, request_id : str
        Both the server-issued request id (``api/request_ids.py``).
    ts : float
        Epoch seconds the list was served.
    type : str
        ``rec_request``.
    user_id : str
        Who it was served to; ``attribution.ANONYMOUS_USER`` for a list served without a user id.
    campaign_id, arm, scenario, strategy, goal, segment : str
        The campaign, the arm the optimizer chose, the campaign's scenario, the arm's strategy,
        the campaign's goal event type and the optimizer segment ("" when none).
    window_s : float
        Attribution window, seconds after ``ts``.
    served_items : list of str
        The served item ids, best first.
    """

    event_id: str
    ts: float
    type: str
    user_id: str
    campaign_id: str
    arm: str
    request_id: str
    scenario: str
    strategy: str
    goal: str
    window_s: float
    segment: str
    served_items: list[str]


_ON_RECORD = EVENT_FIELDS & frozenset(ServedRecord.__struct_fields__)
"""Event fields a record sets (the others are None on its event)."""
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ServedRecord)


def encode_served(imp: Impression, scenario: str, strategy: str) -> bytes:
    """The ``served`` topic's record of ``imp`` (JSON bytes; key: ``imp.user_id`` or ``ANONYMOUS_USER``).

    The same bytes as ``encode_event`` of the ``rec_request`` event with these fields (pinned by
    ``tests/operators/test_served.py``).
    """
    return _encoder.encode(ServedRecord(
        event_id=imp.request_id, ts=imp.ts, type=REQUEST_TYPE, user_id=imp.user_id or ANONYMOUS_USER,
        campaign_id=imp.campaign_id, arm=imp.arm, request_id=imp.request_id, scenario=scenario, strategy=strategy,
        goal=imp.goal, window_s=imp.window_s, segment=imp.segment, served_items=imp.items))


def served_impression(key: bytes | None, value: bytes | None, rules: EventRules,
                      received_ts: float | None = None) -> Impression | None:
    """The list a ``served`` record registers, decoded in one typed step; None when the record is not of
    the plain form ``encode_served`` writes or ``parse_event`` would not accept it as it is.

    Where it answers, the answer equals ``impression_of(parse_event(key, value, rules, received_ts=...))``
    (default goal ``click``, default window one day); where it returns None the caller parses the record
    with ``parse_event`` (which dead-letters it or converts what needs converting).

    Parameters
    ----------
    key, value : bytes or None
        The Kafka record's key (the user id) and value.
    rules : EventRules
        The event rules ``parse_event`` applies (``rec_request`` must be a configured type; size and
        time bounds).
    received_ts : float, optional
        The receiving clock (epoch s; the record's Kafka timestamp), as for ``parse_event``.
    """
    if key is None or value is None or len(value) > rules.max_event_bytes:
        return None
    requires = rules.types.get(REQUEST_TYPE)
    if requires is None:
        return None
    try:
        r = _decoder.decode(value)
    except msgspec.DecodeError:  # another shape (ValidationError is one): the general parser decides
        return None
    if r.type != REQUEST_TYPE or key != r.user_id.encode():
        return None
    for req in requires:  # as validate_event_dict checks them on the event; an unknown name: its decision
        alternatives = req.split("|")
        if not EVENT_FIELDS.issuperset(alternatives):
            return None
        if not any(a in _ON_RECORD and getattr(r, a) not in (None, (), "") for a in alternatives):
            return None
    if not (is_canonical_id(r.user_id) and is_canonical_id(r.event_id) and is_canonical_id(r.campaign_id)):
        return None
    try:
        ts = checked_ts(r.ts, rules, received_ts)
    except BadEvent:
        return None
    return Impression(request_id=r.request_id, campaign_id=r.campaign_id, arm=r.arm or "unknown", ts=ts,
                      goal=r.goal or "click", window_s=r.window_s,
                      user_id=None if r.user_id == ANONYMOUS_USER else r.user_id, segment=r.segment,
                      items=r.served_items)
