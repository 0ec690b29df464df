"""The event contract (``Event``) and its dead letter (``DeadLetter``); simulators import these.

Units: ``ts`` is epoch seconds (float64) everywhere inside fusionrec. Ids are strings; an id
sent as a JSON integer becomes its decimal string once, here at the edge (never via float).
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["BasketLine", "Event", "DeadLetter", "encode_event", "encode_dead_letter", "EVENT_FIELDS"]


class BasketLine(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of a basket (``items``): a hyperedge member."""

    item_id: str
    quantity: float = 1.0
    price: float | None = None


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    """One validated event. ``extra`` keeps unknown fields unchanged."""

    event_id: str
    ts: float
    type: str
    user_id: str
    session_id: str | None = None
    item_id: str | None = None
    items: tuple[BasketLine, ...] | None = None
    quantity: float | None = None
    price: float | None = None
    store_id: str | None = None
    query: str | None = None
    lat: float | None = None
    lon: float | None = None
    campaign_id: str | None = None
    arm: str | None = None
    request_id: str | None = None
    extra: dict[str, Any] | None = None

    def item_ids(self) -> list[str]:
        """The item ids this event touches, each once: ``item_id``, then the basket lines (merged per item by
        ``operators.parse``) other than it. An event naming one item both ways counted it twice in popularity,
        co-visitation and the user's history (a trial doubled an item's weight that way)."""
        out = [self.item_id] if self.item_id is not None else []
        if self.items:
            out.extend(line.item_id for line in self.items if line.item_id != self.item_id)
        return out


EVENT_FIELDS: frozenset[str] = frozenset(Event.__struct_fields__) - {"extra"}


class DeadLetter(msgspec.Struct, frozen=True):
    """An input that was not applied: why, where it came from, and its original bytes."""

    reason: str
    field: str
    detail: str
    raw: bytes
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


_enc = msgspec.json.Encoder()


def encode_event(event: Event) -> bytes:
    """Event -> JSON bytes (unknown fields from ``extra`` are written back at top level)."""
    d = msgspec.to_builtins(event)
    d.update(d.pop("extra", None) or {})
    return _enc.encode(d)


def encode_dead_letter(dl: DeadLetter) -> bytes:
    """DeadLetter -> JSON bytes; ``raw`` is base64 (msgspec's encoding of bytes)."""
    return _enc.encode(dl)
