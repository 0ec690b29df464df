"""Records of the compacted ``analytics`` topic: what the analytics flow publishes, the API reads.

Each record is the *absolute* value of one row of one partition (never a delta), so publishing
it again after a crash is harmless and the topic's latest value per key is the truth. The API
sums rows across partitions. Key = JSON array naming the row, e.g.
``["c", 3, "home", "covisit", "personalized", 1732874400]`` (kind, partition, ...).
"""

from __future__ import annotations

import msgspec
import orjson

__all__ = ["CounterRow", "GroupRow", "TopItemsRow", "OpsRow", "Record", "record_key", "encode_record",
           "decode_record"]


class CounterRow(msgspec.Struct, tag="c", frozen=True):
    """Counters (``analytics.join.COUNTER_FIELDS``) of campaign x arm x scenario x bucket in one partition."""

    partition: int
    campaign_id: str
    arm: str
    scenario: str
    bucket: int
    values: list[float]


class GroupRow(msgspec.Struct, tag="g", frozen=True):
    """Exposed/control stats (``analytics.join.GROUP_FIELDS``) of campaign x group x bucket in one partition."""

    partition: int
    campaign_id: str
    group: str
    bucket: int
    values: list[float]


class TopItemsRow(msgspec.Struct, tag="t", frozen=True):
    """A campaign's most impressed and most clicked items in one partition: [[item_id, count], ...]."""

    partition: int
    campaign_id: str
    impressed: list[tuple[str, int]]
    clicked: list[tuple[str, int]]


class OpsRow(msgspec.Struct, tag="o", frozen=True):
    """Progress of one partition: committed offset, events applied, dead letters and skips by reason."""

    partition: int
    next_offset: int
    applied: int
    dead: dict[str, int]
    max_event_ts: float
    updated_ts: float


Record = CounterRow | GroupRow | TopItemsRow | OpsRow

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(Record)


def record_key(r: Record) -> bytes:
    """The compaction key of a record (see module docstring)."""
    if isinstance(r, CounterRow):
        parts: list[object] = ["c", r.partition, r.campaign_id, r.arm, r.scenario, r.bucket]
    elif isinstance(r, GroupRow):
        parts = ["g", r.partition, r.campaign_id, r.group, r.bucket]
    elif isinstance(r, TopItemsRow):
        parts = ["t", r.partition, r.campaign_id]
    else:
        parts = ["o", r.partition]
    return orjson.dumps(parts)


def encode_record(r: Record) -> bytes:
    return _enc.encode(r)


def decode_record(raw: bytes) -> Record:
    return _dec.decode(raw)
