"""The one ``Settings``: read from ``fusionrec.toml`` (or ``FUSIONREC_CONFIG``) and ``FUSIONREC_*`` env vars.

Nested blocks use ``__`` in env names: ``FUSIONREC_KAFKA__BROKERS=host:9092``,
``FUSIONREC_API__PORT=8000``. Validation errors name the field. Entry points build it once
(``Settings()``) and pass pieces down; ``models/`` and ``state/`` never see it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

from limits import RateLimitItem, parse_many
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

__all__ = ["EventTypeSpec", "KafkaSettings", "StreamSettings", "ApiSettings", "AnalyticsSettings", "Settings",
           "DEFAULT_EVENT_TYPES", "LakeSettings", "TrainerSettings", "GateSettings", "RunSettings", "ConfigError",
           "GATE_METRICS", "REQUEST_SECRET_MIN_BYTES", "parse_rate_limit"]

REQUEST_SECRET_MIN_BYTES = 16
"""Shortest ``api.request_secret`` (UTF-8 bytes): the HMAC key of request ids (``api/request_ids.py``)."""


class ConfigError(ValueError):
    """The configuration cannot be read at all: the TOML file does not parse, or a ``FUSIONREC_*`` variable of a list/dict/block setting is not JSON. The message names the
    file (and line) or the variable; ``fusionrec`` prints it as one configuration error, exit status 2."""


def parse_rate_limit(limits: str) -> list[RateLimitItem]:
    """The rate limits of ``limits`` (``"200/second;5000/minute"``, the ``limits`` notation).

    Used by the settings (``api.rate_limit`` is checked when they load) and by the middleware
    (``api/rate_limit.py``).

    Raises
    ------
    ValueError
        If ``limits`` does not parse (the message names ``api.rate_limit`` and shows the notation).
    """
    if re.search(r"(/|\bper\b)\s*0+\s*[a-z]", limits, re.I):  # the parser reads a window of 0 as 1 (10/0second = 10/second)
        raise ValueError(f"api.rate_limit: {limits!r} has a window of 0; give at least 1 per window, e.g. "
                         "'200/second;5000/minute'")
    try:
        items = parse_many(limits)
    except ValueError as exc:
        raise ValueError(f"api.rate_limit: {limits!r} is not a rate limit like '200/second;5000/minute'") from exc
    if not items:
        raise ValueError(f"api.rate_limit: {limits!r} is not a rate limit like '200/second;5000/minute'")
    if any(item.amount < 1 for item in items):  # would refuse everything: turning a limit off is None or ""
        raise ValueError(f"api.rate_limit: {limits!r} allows nothing; give at least 1 per window, or leave the limit "
                         "empty to turn it off")
    return items


def _takes_bool(annotation: Any) -> bool | None:
    """Whether a setting of this type takes true/false: True for ``bool`` (or a union with it), False for
    a number (``int``, ``float``, optional or not), None for anything else (left to pydantic)."""
    kinds: set[Any] = set()
    todo = [annotation]
    while todo:
        a = todo.pop()
        args = typing.get_args(a)
        if args and typing.get_origin(a) is not Literal:
            todo.extend(args)
        else:
            kinds.add(a)
    if bool in kinds:
        return True
    return False if kinds & {int, float} else None


def _no_bool_for_number(model: type[BaseModel], value: Any, field_name: str | None) -> Any:
    """A JSON/TOML ``true``/``false`` given for a number is an error (pydantic's lax mode reads it as 1/0:
    ``autogroup_nice = true`` would have meant a nice of 1)."""
    field = model.model_fields.get(field_name or "")
    if isinstance(value, bool) and field is not None and _takes_bool(field.annotation) is False:
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


class _Block(BaseModel):
    """A configuration block: an unknown key (a typo in ``fusionrec.toml`` or in a
    ``FUSIONREC_<BLOCK>__<FIELD>`` name) is a validation error that names it, never ignored; true or
    false where a number is expected is an error too, and so is a number that is not finite (``inf``, TOML's
    ``inf``, ``1e999``): ``[trainer] every_s = inf`` crashed the trainer after its first run (``Event.wait``'s
    OverflowError), and an infinite timeout or interval elsewhere is no setting a process can use."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _number_not_bool(cls, value: Any, info: ValidationInfo) -> Any:
        return _no_bool_for_number(cls, value, info.field_name)


_OTHER_ENV = ("FUSIONREC_CONFIG", "FUSIONREC_DATASETS")
"""``FUSIONREC_*`` names that are not settings: the config file's path, the benchmarks' data directory
(and ``FUSIONREC_TEST_*``, the test suite's own knobs)."""


class EventTypeSpec(_Block):
    """One configurable event type: its name, the fields it requires and its weight in models."""

    name: str
    requires: list[str] = Field(default_factory=list, description="Fields that must be present, e.g. ['item_id|items']")
    weight: float = 1.0

    @field_validator("requires")
    @classmethod
    def _event_fields(cls, v: list[str]) -> list[str]:
        """Each alternative is a field of the event (``operators/schema.py`` ``Event``): another name (a typo, or a
        field the event carries in ``extra``) is never present, so every event of the type would be refused."""
        from operators.schema import Event

        fields = [f for f in Event.__struct_fields__ if f != "extra"]
        for req in v:
            unknown = [a for a in req.split("|") if a not in fields]
            if unknown:
                raise ValueError(f"{req!r}: {unknown[0]!r} is no event field (so no event of the type would pass); "
                                 f"fields: {', '.join(fields)}")
        return v


DEFAULT_EVENT_TYPES: list[EventTypeSpec] = [
    EventTypeSpec(name="view", requires=["item_id|items"], weight=1.0),
    EventTypeSpec(name="click", requires=["item_id|items"], weight=1.0),
    EventTypeSpec(name="add_to_cart", requires=["item_id|items"], weight=3.0),
    EventTypeSpec(name="remove_from_cart", requires=["item_id|items"], weight=0.0),
    EventTypeSpec(name="purchase", requires=["item_id|items"], weight=5.0),
    EventTypeSpec(name="pos_purchase", requires=["item_id|items"], weight=5.0),
    EventTypeSpec(name="search", requires=["query"], weight=0.0),
    EventTypeSpec(name="rec_impression", requires=["request_id", "item_id|items"], weight=0.0),
    EventTypeSpec(name="rec_click", requires=["request_id", "item_id"], weight=1.0),
    EventTypeSpec(name="rec_request", requires=["request_id", "campaign_id"], weight=0.0),  # one per served list
]


class KafkaSettings(_Block):
    brokers: str = "127.0.0.1:9092"

    @field_validator("brokers")
    @classmethod
    def _brokers(cls, v: str) -> str:
        """``host:port[,host:port...]``: an empty list, or an empty entry, would only fail at the first connection."""
        entries = [e.strip() for e in v.split(",")]
        if not all(entries):
            raise ValueError(f"kafka.brokers: {v!r} is not a list of host:port addresses, e.g. '127.0.0.1:9092'")
        return v
    events_topic: str = "events"
    dead_topic: str = "events.dead"
    topn_topic: str = "user-topn"
    catalog_topic: str = "catalog"
    item_links_topic: str = Field(default="item-links", description=(
        "Compacted topic of new items' co-occurrence with known items, per partition (their M′·Q codes)"))
    served_topic: str = Field(default="served", description=(
        "Served lists (rec_request records), written by the API only, read by the optimizer and the analytics "
        "flow; as many partitions as events, same key (user_id)"))
    partitions: int = Field(default=4, ge=1, description="Partitions of the events topic (unit of scale)")
    stats_topic: str = Field(default="", description=(
        "Compacted topic of the flow's counters per partition, read by the API's /metrics (default '<events_topic>.stats')"))

    optimizer_snapshot_topic: str = Field(default="", description=(
        "Compacted topic (2 partitions) of the API's published optimizer snapshots, read by new nodes "
        "(default '<events_topic>.optimizer')"))
    topn_checkpoint_topic: str = Field(default="", description=(
        "Compacted topic (2 partitions) of checkpoints of the API's local user-topn store, read by new nodes "
        "(default '<topn_topic>.checkpoint')"))

    def flow_stats_topic(self) -> str:
        """The flow's stats topic: ``stats_topic`` or ``<events_topic>.stats``."""
        return self.stats_topic or f"{self.events_topic}.stats"

    def window_topic(self) -> str:
        """The compacted topic of the flow's windowed popularity (``operators/window_topic.py``):
        ``<events_topic>.popularity``."""
        return f"{self.events_topic}.popularity"

    def optimizer_topic(self) -> str:
        """The compacted topic of the API's published optimizer snapshots (``api/snapshot_topic.py``):
        ``optimizer_snapshot_topic`` or ``<events_topic>.optimizer``."""
        return self.optimizer_snapshot_topic or f"{self.events_topic}.optimizer"

    def topn_checkpoints_topic(self) -> str:
        """The compacted topic of checkpoints of the API's ``user-topn`` store (``api/topn_checkpoint.py``):
        ``topn_checkpoint_topic`` or ``<topn_topic>.checkpoint``."""
        return self.topn_checkpoint_topic or f"{self.topn_topic}.checkpoint"


class StreamSettings(_Block):
    state_dir: Path = Path("var/state")
    serving_dir: Path = Path("var/serving")
    model_dir: Path = Path("var/models")
    topn: int = Field(default=50, ge=1, le=1000, description="Items published per user")
    history_len: int = Field(default=50, ge=1, description="Recent items kept per user")
    half_life_s: float = Field(default=7 * 86400.0, gt=0, description="Decay half-life of item popularity and co-visitation, seconds")
    max_event_bytes: int = Field(default=65536, ge=256)
    max_price: float = Field(default=1e6, gt=0, le=1e9, description=(
        "Largest `price` (per unit, the shop's currency) of an event or a basket line; more is a 422 naming the "
        "field, or a dead letter `invalid_field` (at most 1e9, operators.parse.MAX_PRICE)"))
    max_quantity: float = Field(default=100_000, gt=0, le=1e6, description=(
        "Largest `quantity` of an event or a basket line (an item's repeated lines summed); more is a 422 "
        "naming the field, or a dead letter `invalid_field` (at most 1e6, operators.parse.MAX_QUANTITY)"))
    future_skew_s: float | None = Field(default=300.0, ge=0, description=(
        "Events more than this ahead of their receiving clock (the Kafka message timestamp, else the "
        "wall clock) are dead letters `bad_timestamp`, seconds; None = no bound"))
    max_age_s: float | None = Field(default=None, gt=0, description=(
        "Events older than this before their receiving clock are dead letters `bad_timestamp`, seconds; "
        "None (default) = no bound, so replays of historical logs pass; the API bounds live events itself"))
    batch_size: int = Field(default=2000, ge=1, description="Max Kafka messages per poll")
    poll_timeout_s: float = Field(default=0.05, gt=0)
    rescore_interval_s: float = Field(default=0.1, ge=0, description=(
        "Debounce: changed users are rescored at most this often per partition (0 = every batch)"))
    links_window: int = Field(default=5, ge=1, description=(
        "New items: an event's item is linked to the user's this many previous items (M′ of M′·Q)"))
    links_max_gap_s: float = Field(default=1800.0, gt=0, description=(
        "New items: previous items older than this before the event are not linked, seconds"))
    links_per_item: int = Field(default=100, ge=1, description=(
        "New items: strongest links kept per item and partition (a row is cut back at twice this)"))
    dedupe_window_s: float = Field(default=900.0, ge=0, description=(
        "A re-sent event_id is skipped while its first copy is within this much event time of the user's "
        "newest event (or among the user's last 64), seconds"))
    dedupe_max_ids: int = Field(default=2000, ge=64, description="Most event ids remembered per user for dedupe")
    offset_beyond_end: Literal["earliest", "latest", "fail"] = Field(default="earliest", description=(
        "A stored offset beyond the log end (the topic was recreated, e.g. an empty broker): resume at the "
        "new log's start (earliest), at its end (latest), or stop the flow with an error (fail)"))
    window_publish_s: float = Field(default=5.0, ge=0, description=(
        "Windowed popularity: each partition publishes its changed pieces at most this often, seconds "
        "(buckets and horizon: api.popularity_bucket_s / api.popularity_horizon_s)"))
    window_shards: int = Field(default=8, ge=1, le=4096, description=(
        "Windowed popularity: pieces per (partition, bucket) in the published topic (items by CRC-32)"))


class ApiSettings(_Block):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    autogroup_nice: int | None = Field(default=None, ge=-20, le=19, description=(
        "Linux: the API sets its session's scheduling autogroup nice to this at start, when it leads its own session "
        "(fusionrec run, setsid fusionrec serve; operators/scheduling.py), "
        "so on one machine the flow keeps its CPU share under serving load (at 2: event -> visible p99 0.4-0.6 s "
        "instead of 0.7-1.3 s at 1,000 events/s, for ~10 % fewer req/s; bench/RESULTS.md). None: unchanged "
        "(fusionrec run then uses 2)"))
    admin_keys: list[str] = Field(default_factory=list, description=(
        "Keys of the admin scope (and client); from the config file or FUSIONREC_API__ADMIN_KEYS, none built in"))
    client_keys: list[str] = Field(default_factory=list, description=(
        "Keys of the client scope (recommendations, events: the key shops put in pages and apps)"))
    cors_origins: list[str] = Field(default_factory=list, description=(
        "Origins whose pages may call the API from a browser (CORS), e.g. ['https://shop.example']; '*' for any. "
        "Empty (default): no CORS headers, so browsers allow same-origin pages only"))

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
                raise ValueError(f"api.cors_origins: {origin!r} is not an origin like 'https://shop.example' "
                                 "(scheme and host, optional port, no path) or '*'")
        return v

    require_keys: bool = Field(default=True, description=(
        "Closed by default; false opens every endpoint (refused on a non-loopback bind address)"))
    max_age_s: float = Field(default=7 * 86400.0, gt=0, description=(
        "POST /v1/events: events older than this are refused (422 on `ts`), seconds; the flow's "
        "`stream.future_skew_s` and `stream.max_age_s` apply too"))
    server_only_types: list[str] = Field(default_factory=lambda: ["rec_request"], description=(
        "Event types only the server produces; POST /v1/events refuses them"))
    max_events_per_request: int = Field(default=1000, ge=1, description="POST /v1/events: events in one request")
    rate_limit: str | None = Field(default="200/second;6000/minute", description=(
        "Requests per (API key, client address), `limits` notation; over it: 429 with Retry-After; None = off"))
    forwarded_allow_ips: str | None = Field(default=None, description=(
        "Proxies whose X-Forwarded-For names the client (uvicorn's forwarded_allow_ips, e.g. '10.0.0.5' or '*' behind a "
        "load balancer); None = the header is ignored and the client is the peer address, so a client cannot choose "
        "the address its rate limits count for"))
    event_rate_limit: str | None = Field(default="5000/second;150000/minute", description=(
        "POST /v1/events: events (not requests) per (API key, client address), `limits` notation; over it: 429 "
        "with Retry-After and nothing of the request is accepted; None = off"))
    event_item_rate_limit: str | None = Field(default="50000/second;300000/minute", description=(
        "POST /v1/events: item ids the events name (each event's item_id and basket lines, an id once per event) "
        "per (API key, client address), `limits` notation. Events may name items the catalogue does not hold yet, "
        "and each new id grows the flow's and every API process's per-item state, so this bounds how fast one "
        "caller can add ids (the event limit alone let a 2,500-line basket count as one). Over it: 429 with "
        "Retry-After and nothing of the request is accepted; a request naming more ids than the smallest window "
        "is a 422. The default minute is twice api.event_rate_limit's, so traffic within the event limit whose "
        "events name at most 2 items on average (a view names one, a purchase its basket) never meets it, and its "
        "second admits a full batch of 1,000 purchases of 50 lines; None = off"))
    max_basket_items: int = Field(default=1000, ge=1, description=(
        "POST /v1/events: distinct items of one event's basket (`items`; repeated lines of an item, which are merged, "
        "count once, so a till sending a line per unit scanned is not refused); more is a 422 naming the event's "
        "items, before anything is charged or validated. A cart rarely has more than a few hundred (the UCI Online "
        "Retail wholesaler's 25,900 invoices: median 10, 99.9th percentile 568, largest 1,110: raise it for orders "
        "that long); before it, only stream.max_event_bytes bounded a basket (~2,500 short ids). The flow does not "
        "apply it: replays of long historical baskets still pass"))
    body_timeout_s: float = Field(default=10.0, gt=0, description=(
        "POST /v1/events: a body that stops arriving for this long is refused (408), seconds"))
    body_total_s: float = Field(default=60.0, gt=0, description=(
        "POST /v1/events: the whole body must arrive within this long of the handler starting to read it "
        "(408 otherwise: a byte every few seconds does not hold a connection), seconds"))
    max_header_bytes: int = Field(default=65536, ge=4096, description=(
        "Request line and headers, bytes: larger ones are refused (431, or 400 from the h11 parser) and the connection closed"))
    header_timeout_s: float = Field(default=10.0, gt=0, description=(
        "Request line and headers must arrive within this long of the connection opening or the previous "
        "response (slow clients): else 408 and the connection is closed (api/http_protocol.py), seconds"))
    keep_alive_s: float = Field(default=5.0, gt=0, description="An idle keep-alive connection is closed after this long, seconds")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description=(
        "POST /v1/events: body size; a larger one is refused (413) as soon as it passes this"))
    request_secret: str | None = Field(default=None, description=(
        "HMAC key of the request ids the API issues (share it between replicas), at least 16 bytes; default: "
        "a random key kept in <api state_dir>/request_secret"))
    state_dir: Path | None = Field(default=None, description="The API's RocksDB (campaigns, optimizer); default <stream.state_dir>/../api")
    feedback: bool = Field(default=True, description="Read the served lists and events for pulls and rewards (the optimizer)")
    snapshot_every_s: float = Field(default=0.5, gt=0, description="Optimizer snapshot interval, seconds")
    snapshot_publish_s: float = Field(default=60.0, ge=0, description=(
        "The optimizer snapshot's writer also publishes the whole state to kafka.optimizer_topic() this often "
        "(and when it stops), seconds; a new node starts from the newest one plus the tails (0 = never publish)"))
    max_open_lists: int = Field(default=200_000, ge=1, description="Served lists kept for attribution (oldest dropped first)")
    campaign_check_s: float = Field(default=0.5, gt=0, description="How often a worker checks for campaigns written by others")
    vector_attribute: str = Field(default="vector", description="Catalog attribute holding a dense vector (visual similarity)")
    vector_dim: int | None = Field(default=None, ge=1, description=(
        "Length of every catalog vector; other lengths are refused (logged). None: the first vector's "
        "length, so one wrong vector read first refuses all the others: set it in production"))
    vector_exact_below: int = Field(default=50_000, ge=0, description=(
        "Visual similarity is exact (a scan of every vector) below this many vectors; from it on, approximate "
        "inverted lists (api/vector_index.py, models/ivf.py: recall@257 0.99 on the bench's 1M vectors, ~0.3 ms a query)"))
    vector_n_probe: int = Field(default=48, ge=1, description=(
        "Inverted lists (of 2*sqrt(vectors)) a visual query ranks exactly first, from api.vector_exact_below on: "
        "recall against CPU. 48 gives recall@257 0.99 on clustered vectors at 1M items, 0.82 on uniformly random "
        "ones (~128 for 0.95); each query costs about n_probe lists' rows"))
    vector_build_waits_for_model_s: float = Field(default=120.0, ge=0, description=(
        "At start, the catalog's first inverted-list build, once its rows are assigned, waits at most this long for "
        "the model version to load before it lays out the lists (the app lets it go on once the version is loaded, "
        "or none is there), so the two do not hold their memory at once (~1.1 GB peak per worker at 1M items "
        "otherwise, bench/RESULTS.md, issue 14 session 27); visual queries are exact meanwhile, as during the "
        "build; 0 = no wait"))
    catalog_exclude: list[str] = Field(default_factory=lambda: ["vector", "image", "image_path"],
                                       description="Catalog attributes not indexed for IQL (modality payloads)")
    catalog_max_value_bytes: int = Field(default=16 * 1024, ge=64, description=(
        "Catalog: one string value (or one string of a list of strings), UTF-8 bytes; an item with a longer one is "
        "rejected (fusionrec catalog reports its line, the API's index does not serve it). A title is ~100 B and a "
        "long HTML description a few KB, so 16 KB is never reached by a real catalog; a longer value is a pasted "
        "file or a broken export, held in every API process's memory and served back on every GET /v1/items"))
    catalog_max_attributes: int = Field(default=512, ge=1, description=(
        "Catalog: attributes of one item besides item_id; an item with more is rejected. Rich product data has tens "
        "to a couple of hundred; more is a broken export (a column per value) that would widen every IQL schema"))
    catalog_max_attribute_names: int = Field(default=1_024, ge=1, description=(
        "Catalog: distinct indexed attribute names over the whole catalog (item_id and api.catalog_exclude not "
        "counted); an item that would add a name beyond it is rejected (fusionrec catalog reports its line, the API's "
        "index does not serve it). The IQL index keeps a column per name, so a catalog of many items that each bring "
        "their own names (a column per value in a broken export) makes every API process's memory and each full "
        "upsert grow with it. A real shop has tens to a few hundred names across all its categories, so 1,024 is "
        "never reached"))
    catalog_max_item_bytes: int = Field(default=64 * 1024, ge=1024, le=1_000_000, description=(
        "Catalog: one item's record as compact JSON (the catalog topic's value), bytes; a larger item is rejected. "
        "A product with a long description, a few hundred attributes and a 1,024-d vector (~20 KB as JSON) stays "
        "well under 64 KB; at most 1,000,000, under the broker's message limit (~1 MB by default), so an item "
        "is refused by the rule, with its line and attribute, rather than by the broker"))
    client_max_n: int = Field(default=100, ge=1, le=500, description=(
        "GET /v1/recommendations: the largest n a client key may ask for (422 naming n above it); admin keys, and "
        "every caller when keys are not required, may ask up to 500. A long list is filled by scoring the catalogue "
        "with the model, so the request limit alone did not bound a public key's CPU (explain=true, which ablates "
        "every item, is admin-only for the same reason)"))
    fill_from_model: bool = Field(default=True, description=(
        "Campaign lists: when the filter leaves fewer than n of the arm's candidates, score the filtered catalog "
        "with the arm's model before the fallback"))
    hidden_attribute: str | None = Field(default="hidden", description="Catalog bool: true = never served")
    in_stock_attribute: str | None = Field(default="in_stock", description="Catalog bool: false = never served (out of stock)")
    stock_attribute: str | None = Field(default="stock", description="Catalog number: <= 0 = never served (out of stock)")
    gc_tuning: bool = Field(default=True, description="After startup: gc.freeze() and a gen-0 threshold of 50,000 (p99 under load)")
    malloc_arenas: int = Field(default=1, ge=0, description=(
        "glibc malloc arenas of each API process (mallopt M_ARENA_MAX, set when the app is made, before its reader "
        "threads start): 1 keeps what the catalog reader thread frees reusable by the event loop instead of in an "
        "arena of its own (bench/RESULTS.md, issue 14 session 25); 0 = glibc's default (8 per core)"))
    malloc_mmap_threshold_bytes: int = Field(default=1 << 20, ge=0, le=1 << 25, description=(
        "glibc's mmap threshold of each API process, fixed (mallopt M_MMAP_THRESHOLD): blocks from this size on get a "
        "mapping of their own, returned to the OS when freed; glibc's default raises it to 32 MB as large blocks are "
        "freed, and large numpy temporaries then fragment the heap (~70 MB more RSS per worker at 1M items, "
        "bench/RESULTS.md, issue 14 session 26); 0 = glibc's default"))
    malloc_trim_threshold_bytes: int = Field(default=4 << 20, ge=0, description=(
        "glibc's trim threshold of each API process, fixed (mallopt M_TRIM_THRESHOLD): free memory at the heap's top "
        "beyond this is returned to the OS; 0 = glibc's default"))
    loop_stall_log_ms: float = Field(default=0.0, ge=0, description=(
        "Log every thread's stack (WARNING, api.loop_lag) when a worker's event loop is held longer than this, "
        "milliseconds: where tail latency comes from (0 = off; the lag histogram is always in /metrics)"))
    popularity_bucket_s: float = Field(default=3600.0, gt=0, description=(
        "Bucket of windowed popularity, seconds (the flow counts in these buckets, the API sums them)"))
    popularity_horizon_s: float = Field(default=30 * 86400.0, gt=0, description=(
        "Longest popularity window, seconds (the flow drops older buckets)"))
    topn_store: Literal["rocksdb", "memory"] = Field(default="rocksdb", description=(
        "Where each API process keeps user-topn: a local RocksDB under stream.serving_dir (bounded memory, "
        "restarts read only the tail) or a dict (everything in RAM, re-read from the start)"))
    catalog_store: Literal["disk", "memory"] = Field(default="disk", description=(
        "Where each API process keeps the catalog items as published (for GET /v1/items and the catalog overlay; "
        "the filter and vector indexes are in memory either way): packed in an unlinked file under "
        "stream.serving_dir (~42 B of memory per item, a file read per GET) or packed in a dict (~200 B per item)"))
    topn_checkpoint_s: float = Field(default=300.0, ge=0, description=(
        "A node whose user-topn store is caught up publishes a checkpoint of it to kafka.topn_checkpoints_topic() "
        "this often, seconds, unless any node published one more recently; a new node (empty store) starts from "
        "the newest one and reads only the lists published since (0 = never publish)"))
    topn_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=1 << 20, description=(
        "Block cache of the local user-topn store, bytes (its memory bound, with 32 MB of write buffers)"))
    event_ack_timeout_s: float = Field(default=5.0, gt=0, description=(
        "POST /v1/events waits this long for the broker's acknowledgement before answering 503, seconds"))
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After of a 503 (events not durable), seconds")
    stop_timeout_s: float = Field(default=2.0, ge=0, description=(
        "A stopping API (Ctrl-C, SIGTERM), once its requests are answered, waits at most this long in all for its "
        "reader threads and its broker (the optimizer snapshot handed over, served lists delivered), seconds: a "
        "broker that does not answer is not waited for longer. Events answered 202 are already acknowledged"))

    @field_validator("rate_limit", "event_rate_limit", "event_item_rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str | None) -> str | None:
        """A rate limit that does not parse is refused when the settings load, not on each request."""
        if value:  # None or "": no limit
            try:
                parse_rate_limit(value)
            except ValueError as exc:  # the error's location already names api.rate_limit
                raise ValueError(str(exc).removeprefix("api.rate_limit: ")) from None
        return value

    @model_validator(mode="after")
    def _serving_attributes_indexed(self) -> ApiSettings:
        """The serving rules' attributes are indexed and distinct: one in ``catalog_exclude`` was never checked nor
        indexed, so its rule stopped hiding items without a word; one name as a bool and as the stock number
        cannot have both types."""
        names = {"hidden_attribute": self.hidden_attribute, "in_stock_attribute": self.in_stock_attribute,
                 "stock_attribute": self.stock_attribute}
        for field, name in names.items():
            if name is not None and name in self.catalog_exclude:
                raise ValueError(f"api.{field} {name!r} is in api.catalog_exclude: the rule would never see it")
        used = [n for n in names.values() if n is not None]
        if len(set(used)) < len(used):
            raise ValueError("api.hidden_attribute, api.in_stock_attribute and api.stock_attribute must name "
                             f"different attributes; got {names}")
        return self

    @field_validator("request_secret")
    @classmethod
    def _request_secret_long_enough(cls, value: str | None) -> str | None:
        """The configured HMAC key is at least ``REQUEST_SECRET_MIN_BYTES`` long (checked at load, not by the API)."""
        if value is not None and len(value.encode()) < REQUEST_SECRET_MIN_BYTES:
            raise ValueError(f"must be at least {REQUEST_SECRET_MIN_BYTES} bytes; got {len(value.encode())} "
                             "(e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`)")
        return value


class AnalyticsSettings(_Block):
    """The analytics flow (flows/analytics/dataflow.py): attribution rule, buckets, output topic."""

    topic: str = Field(default="analytics", description="Compacted topic of aggregated counters")
    bucket_s: int = Field(default=3600, ge=60, description="Time bucket of the counters, seconds")
    attribution_window_s: float = Field(default=86400.0, gt=0, description="Window of lists that do not say, seconds")
    default_goal: str = Field(default="click", description="Goal of lists that do not say (rewards column)")
    campaign_windows_s: dict[str, float] = Field(default_factory=dict, description="Per-campaign windows, seconds")
    cart_types: list[str] = Field(default_factory=lambda: ["add_to_cart"])
    order_types: list[str] = Field(default_factory=lambda: ["purchase", "pos_purchase"])
    top_items: int = Field(default=20, ge=1, le=500, description="Top impressed/clicked items kept per campaign")
    served_wait_s: float = Field(default=2.0, ge=0, description=(
        "An event waits at most this long (wall clock) for the served lists of its time to be read, seconds"))
    ops_timeout_s: float = Field(default=10.0, gt=0, description=(
        "GET /v1/analytics/ops waits at most this long, in all, for the broker to confirm the events log's ends; "
        "then the last good answer marked stale (with its age), or 503 with Retry-After if none yet, seconds"))
    ops_stale_max_s: float = Field(default=300.0, gt=0, description=(
        "GET /v1/analytics/ops answers its last good answer marked stale only while it is at most this old; "
        "an older one is not shown: 503 with Retry-After instead, seconds"))


class LakeSettings(_Block):
    """The event lake (flows/archive/dataflow.py): Parquet files of ``events`` and ``catalog`` by date."""

    lake_dir: Path = Path("var/lake")
    retention_days: float = Field(default=90.0, gt=0, description="Dates older than this before the newest event are deleted, days")
    flush_rows: int = Field(default=50_000, ge=1, description="Rows buffered per partition before a file is written")
    flush_interval_s: float = Field(default=5.0, gt=0, description="Oldest buffered row waits at most this long, seconds")
    compact_min_files: int = Field(default=8, ge=2, description="Compact a (partition, date) once it has this many small files")
    compact_small_rows: int = Field(default=20_000, ge=1, description="A file with fewer rows than this is small")
    read_batch_rows: int = Field(default=262_144, ge=1024, description="Rows per record batch when training reads the lake")


class TrainerSettings(_Block):
    """``fusionrec trainer``: what it trains and how often."""

    every_s: float = Field(default=6 * 3600.0, gt=0, le=threading.TIMEOUT_MAX, description=(
        "Seconds between trainer runs; at most threading.TIMEOUT_MAX (~292 years), the longest wait a thread takes"))
    window_days: float = Field(default=30.0, gt=0, description="Training window ending at the newest archived event, days")
    model: str = Field(default="fusion", description="Registered model of the challenger (models/registry.py)")
    min_events: int = Field(default=1000, ge=1, description="Fewer events in the window: the run is skipped")
    autogroup_nice: int | None = Field(default=None, ge=-20, le=19, description=(
        "Linux: the trainer sets its session's scheduling autogroup nice to this at start, when it leads its own "
        "session (fusionrec run starts it so; operators/scheduling.py): a challenger's training then takes the CPU the "
        "flow and the API leave (with trainer.cpus keeping one CPU free, event -> visible stays within a second while "
        "the fusion trains: bench/RESULTS.md). None: unchanged (fusionrec run then uses 19, the lowest weight)"))
    cpus: int | None = Field(default=None, ge=1, description=(
        "Linux: the trainer and its fits run on at most this many CPUs (the highest-numbered it may use; "
        "operators/scheduling.py confine_to_cpus), so the others stay free for the flow, the broker and the API. "
        "None: every CPU (fusionrec run then uses all but one on a box of 2 or more)"))

    @field_validator("model")
    @classmethod
    def _registered_model(cls, v: str) -> str:
        """Only a name of ``models/registry.py``: an unknown one used to load and fail at the trainer's first run."""
        from models.registry import REGISTRY

        if v not in REGISTRY:
            raise ValueError(f"unknown model {v!r}; registered: {', '.join(REGISTRY)}")
        return v


GATE_METRICS: tuple[str, ...] = tuple(f"{m}@{k}" for k in (10, 20) for m in ("HR", "MRR", "P", "R", "MAP"))
"""The metrics the gate can decide on: those ``operators/gate.py`` ``evaluate_versions`` computes (k = 10, 20) for
which higher is better. Any other name is a 0 for both models, so no challenger would ever be promoted."""


class GateSettings(_Block):
    """The gate a challenger passes before it goes live (``fusionrec trainer``)."""

    holdout_hours: float = Field(default=24.0, gt=0, description="Newest slice held out of the challenger's training, hours")
    metric: str = Field(default="HR@20", description=f"Gate metric, one of {', '.join(GATE_METRICS)}")
    margin: float = Field(default=0.02, ge=0, description="Relative gain over the champion needed to promote (0.02 = 2 %)")
    max_queries: int = Field(default=20_000, ge=1, description="Holdout prefixes evaluated (seeded sample)")
    min_queries: int = Field(default=200, ge=1, description="Fewer holdout prefixes: no verdict, the champion stays")

    @field_validator("metric")
    @classmethod
    def _gate_metric(cls, v: str) -> str:
        if v not in GATE_METRICS:
            raise ValueError(f"must be one of {', '.join(GATE_METRICS)} (what the gate evaluates); got {v!r}")
        return v


class RunSettings(_Block):
    """``fusionrec run`` / ``make run``: the embedded platform's run directory."""

    var_dir: Path = Field(default=Path("var/run"), description=(
        "Run directory of fusionrec run: its state, models, lake and logs. One run at a time per directory "
        "(an flock on <var_dir>/.lock): a second platform on the same machine needs another directory and "
        "other ports; run --var overrides it"))


class RetailCleaningSettings(_Block):
    """The cleaning rule of Online Retail logs (replay and training; models/data/retail_cleaning.py)."""

    non_product_codes: list[str] = Field(default_factory=lambda: [
        "POST", "DOT", "M", "C2", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS"],
        description="StockCodes that are not products (postage, fees, adjustments), case-insensitive")
    fee_pattern: str = Field(default=(
        r"^\W*(?:(?:next day|dotcom|amazon|bank|packing|cruk|manual)\s+)*"
        r"(?:postage|carriage|fees?|charges?|commission|manual|discount|samples?|re-?adjust\w*|"
        r"adjust(?:ment)?(?: bad debt)?)\W*$|gift voucher"),
        description="Regex (case-insensitive) on a code's most frequent Description that marks it a non-product")
    keep_guests: bool = Field(default=True, description="Lines without CustomerID: one guest user per invoice (else dropped)")


def _config_file() -> Path:
    """The TOML file: ``FUSIONREC_CONFIG``, else ``./fusionrec.toml`` (optional).

    Raises
    ------
    ConfigError
        If ``FUSIONREC_CONFIG`` names a file that does not exist (a typo must not run on defaults).
    """
    named = os.environ.get("FUSIONREC_CONFIG")
    if named is None:
        return Path("fusionrec.toml")
    if not Path(named).is_file():
        raise ConfigError(f"FUSIONREC_CONFIG={named}: no such file; unset it to use ./fusionrec.toml")
    return Path(named)


def _toml_source(settings_cls: type[BaseSettings]) -> TomlConfigSettingsSource:
    """The TOML file's source; a syntax error is a :class:`ConfigError` naming the file and line."""
    path = _config_file()
    try:
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _complex(annotation: Any) -> bool:
    """Whether a field of this type is read from the environment as JSON (list, dict, block)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    origin = typing.get_origin(annotation)
    if origin in (list, dict, set, tuple):
        return True
    return any(_complex(a) for a in typing.get_args(annotation) if a is not type(None))


def _non_json_variables(field: str) -> list[str]:
    """The ``FUSIONREC_<field>[__sub]`` variables whose setting is a list, dict or block but whose value is not JSON."""
    found = []
    for name, value in sorted(os.environ.items()):
        parts = name.split("__")
        if parts[0] != f"FUSIONREC_{field.upper()}":
            continue
        model: Any = Settings
        annotation: Any = None
        for part in [field, *(p.lower() for p in parts[1:])]:
            info = getattr(model, "model_fields", {}).get(part)
            if info is None:
                annotation = None
                break
            annotation = info.annotation
            model = annotation if isinstance(annotation, type) else None
        if annotation is None or not _complex(annotation):
            continue
        try:
            json.loads(value)
        except ValueError:
            found.append(name)
    return found


class _EnvSource(PydanticBaseSettingsSource):
    """The environment source, whose parse error names the variable and says its value must be JSON."""

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def _set_current_state(self, state: dict[str, Any]) -> None:
        super()._set_current_state(state)
        self._inner._set_current_state(state)

    def _set_settings_sources_data(self, states: dict[str, dict[str, Any]]) -> None:
        super()._set_settings_sources_data(states)
        self._inner._set_settings_sources_data(states)

    def __call__(self) -> dict[str, Any]:
        try:
            return self._inner()
        except SettingsError as exc:
            m = re.search(r'field "([^"]+)"', str(exc))
            field = m.group(1) if m else ""
            names = _non_json_variables(field) if field else []
            where = ", ".join(names) or f"a FUSIONREC_{field.upper()}* variable"
            raise ConfigError(f"environment variable {where}: the value must be JSON for this setting, e.g. "
                              f"'[\"key1\"]' for a list or '{{\"k\": 1}}' for a dict ({exc})") from None


class Settings(BaseSettings):
    """All configuration. Precedence: init kwargs > env (``FUSIONREC_*``) > TOML file > defaults."""

    model_config = SettingsConfigDict(env_prefix="FUSIONREC_", env_nested_delimiter="__", extra="forbid")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    retail_cleaning: RetailCleaningSettings = Field(default_factory=RetailCleaningSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    event_types: list[EventTypeSpec] = Field(default_factory=lambda: list(DEFAULT_EVENT_TYPES))
    seed: int = 42

    @field_validator("event_types")
    @classmethod
    def _unique_event_types(cls, v: list[EventTypeSpec]) -> list[EventTypeSpec]:
        """One spec per name: with two, the last one silently won (the first one's ``requires`` and ``weight`` ignored)."""
        names = [t.name for t in v]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"names must be unique; repeated {repeated}")
        return v

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_not_bool(cls, value: Any, info: ValidationInfo) -> Any:
        return _no_bool_for_number(cls, value, info.field_name)

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_env(cls, data: object) -> object:
        """Refuse a ``FUSIONREC_*`` environment variable that names no setting (a typo would
        otherwise be ignored without a word); block fields are checked by :class:`_Block`."""
        fields = {f.upper() for f in cls.model_fields}
        for name in os.environ:
            if not name.startswith("FUSIONREC_") or name in _OTHER_ENV or name.startswith("FUSIONREC_TEST_"):
                continue
            head = name[len("FUSIONREC_"):].split("__", 1)[0]
            if head not in fields:
                raise ValueError(f"environment variable {name}: no setting {head.lower()!r}; blocks and settings: "
                                 f"{', '.join(sorted(f.lower() for f in fields))}")
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvSource(env_settings), _toml_source(settings_cls))
