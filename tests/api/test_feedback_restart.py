"""api/feedback_reader.py restarts from its snapshot plus the tails, and a new node from the snapshot
another node published (real broker, real RocksDB).

A restarted API process loads the optimizer's snapshot and reads only what was written after it,
and ends with the same arm counts as a new node that read both topics from the start. Events
that change nothing for the optimizer (no request id, their user has no open list) are skipped
before parsing; a reader that parses every event ends with the same state.
"""

from __future__ import annotations

import time
import uuid

import httpx
import msgspec
import numpy as np
import pytest

from api.feedback import FeedbackFold
from api.feedback_reader import FeedbackReader
from api.optimizer import OptimizerConfig, ThompsonOptimizer
from api.snapshot_topic import HEAD_PARTITION, SnapshotTopic
from operators.attribution import REQUEST_TYPE
from operators.kafka import TopicSpec, ensure_topics, make_producer
from operators.offset_guard import BeyondLogEnd
from operators.parse import EventRules
from operators.schema import Event, encode_event
from operators.settings import DEFAULT_EVENT_TYPES
from simulators.producer import EventProducer
from state.bandit import ArmStats, BanditSnapshot, BanditStore
from tests.harness import ApiServer, fold_feedback, make_settings, wait_for

NOW = time.time()


class _ParseAll(FeedbackReader):
    """The reader without the unparsed skip: every event is parsed and folded."""

    def _no_effect(self, k: bytes | None, value: bytes | None, partition: int, received_ts: float | None) -> bool:
        return False


SERVED_WAIT_S = 2.0
"""``served_wait_s`` of the readers whose topics were written before they started: every served list is then
history, read before any event is folded, so the wait does not change the fold; it only delays the events
after the last list (a reader started while records are still being written waits 10 s)."""


def _reader(broker: str, topics: tuple[str, str], path, cls: type[FeedbackReader] = FeedbackReader) -> FeedbackReader:  # noqa: ANN001
    fold = FeedbackFold(ThompsonOptimizer(np.random.default_rng(0)), lambda _c: OptimizerConfig(half_life_s=86400.0))
    return cls(broker, topics[0], fold, BanditStore(path), EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536),
               snapshot_every_s=0.2, served_topic=topics[1], served_wait_s=SERVED_WAIT_S).start()


def _produce(broker: str, topics: tuple[str, str], start: int, n: int) -> int:
    """``n`` events of 40 users, and a served list to one of 20 users every 10th; clicks by those users.
    Returns the number of records written."""
    p = make_producer(broker)
    written = 0
    for j in range(start, start + n):
        ts = NOW - 86400 + j * 5.0
        user = f"u{j % 40}"
        if j % 10 == 0:
            rid = f"r{j}"
            served = f"u{j // 10 % 20}"
            ev = Event(event_id=rid, ts=ts, type=REQUEST_TYPE, user_id=served, campaign_id="c", arm="ab"[j % 20 // 10],
                       request_id=rid, extra={"goal": "click", "window_s": 3600.0, "served_items": [f"i{j % 13}"]})
            p.produce(topics[1], key=served.encode(), value=encode_event(ev))
            written += 1
        kind = "click" if j % 3 == 0 else "view"
        ev = Event(event_id=f"e{j}", ts=ts + 1.0, type=kind, user_id=user, item_id=f"i{j % 13}")
        p.produce(topics[0], key=user.encode(), value=encode_event(ev))
        written += 1
    assert p.flush(10) == 0
    return written


def _arms(reader: FeedbackReader) -> dict[tuple[str, str, str], tuple[int, int, float, float]]:
    return {k: (st.total_pulls, st.total_rewards, round(st.pulls, 9), round(st.rewards, 9))
            for k, st in reader.fold.optimizer.arms.items()}


def _live(fold: FeedbackFold) -> tuple[list[str], dict[str, float]]:
    """Open and rewarded lists whose window has not passed by the fold's clocks. Lists past it are closed
    lazily, when a list is served: a node that read every served list before the events (a new node
    folding the history) still holds lists a restored node (with the snapshot's clocks) has closed."""
    clock = min(fold.clock, fold.event_clock)
    return (sorted(rid for rid, imp in fold.open.items() if imp.ts + imp.window_s >= clock),
            {rid: end for rid, end in fold.rewarded.items() if end >= clock})


def test_a_restart_reads_the_snapshot_and_only_the_tail(broker, tmp_path):
    tag = uuid.uuid4().hex[:8]
    topics = (f"events-{tag}", f"served-{tag}")
    # one partition each: with several, which lists are open when an event is folded depends on how
    # the partitions' reads interleave (README, Scaling: what is not guaranteed)
    ensure_topics(broker, [TopicSpec(topics[0], 1), TopicSpec(topics[1], 1)])
    n_first = _produce(broker, topics, 0, 3000)
    first = _reader(broker, topics, tmp_path / "bandit")
    fold_feedback(first, n_first)
    first.stop()  # drains and writes the snapshot with its offsets

    n_tail = _produce(broker, topics, 3000, 200)  # written while the process is down
    again = _reader(broker, topics, tmp_path / "bandit")
    fresh = _reader(broker, topics, tmp_path / "fresh")  # a new node: no snapshot, reads everything
    parsed = _reader(broker, topics, tmp_path / "parsed", _ParseAll)
    try:
        for r in (again, fresh, parsed):
            fold_feedback(r, n_first + n_tail)
        assert first.n_folded == n_first and again.n_folded == n_tail  # only the tail
        assert fresh.n_folded == parsed.n_folded == n_first + n_tail
        assert fresh.fold.n_rewards > 0 and fresh.fold.n_served == 320
        assert _arms(again) == _arms(fresh) == _arms(parsed)
        assert fresh.fold.n_rewards == parsed.fold.n_rewards
        # events of the 20 users who never get a list name no request: not parsed
        assert fresh.n_unparsed > 0.4 * 3200 and parsed.n_unparsed == 0
    finally:
        again.stop()
        fresh.stop()
        parsed.stop()


# ---- a new node starts from the snapshot another node published (api/snapshot_topic.py) ----------------

def _topics3(broker: str) -> tuple[tuple[str, str], str]:
    tag = uuid.uuid4().hex[:8]
    topics = (f"events-{tag}", f"served-{tag}")
    optimizer_topic = f"events-{tag}.optimizer"
    ensure_topics(broker, [TopicSpec(topics[0], 1), TopicSpec(topics[1], 1), TopicSpec(optimizer_topic, 2, compacted=True)])
    return topics, optimizer_topic


def _node(broker: str, topics: tuple[str, str], path, optimizer_topic: str | None,  # noqa: ANN001
          on_beyond_end=None, publish_every_s: float = 3600.0, served_wait_s: float = SERVED_WAIT_S) -> FeedbackReader:  # noqa: ANN001
    fold = FeedbackFold(ThompsonOptimizer(np.random.default_rng(0)), lambda _c: OptimizerConfig(half_life_s=86400.0))
    return FeedbackReader(broker, topics[0], fold, BanditStore(path), EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536),
                          snapshot_every_s=0.2, served_topic=topics[1], served_wait_s=served_wait_s, on_beyond_end=on_beyond_end,
                          published=None if optimizer_topic is None else SnapshotTopic(broker, optimizer_topic, chunk_bytes=4096),
                          publish_every_s=publish_every_s).start()


def test_a_new_node_restores_the_published_snapshot_and_reads_only_the_tails(broker, tmp_path):
    topics, opt = _topics3(broker)
    n_first = _produce(broker, topics, 0, 3000)
    first = _node(broker, topics, tmp_path / "first", opt)
    fold_feedback(first, n_first)
    first.stop()  # the store's writer publishes its state when it stops
    assert first.published is not None and first.published.n_published == 1
    head = first.published.last_head
    assert head is not None and head.n_chunks > 1  # several chunks, read back in order
    assert dict(((t, p), o) for t, p, o in head.offsets) == first.offsets

    n_tail = _produce(broker, topics, 3000, 200)  # written after the publication
    new = _node(broker, topics, tmp_path / "new", opt)  # empty local state
    fresh = _node(broker, topics, tmp_path / "fresh", None)  # folds the whole history
    restarted = _node(broker, topics, tmp_path / "first", opt)  # its own local snapshot
    try:
        for r in (new, fresh, restarted):
            fold_feedback(r, n_first + n_tail)
        assert (new.restored_from, fresh.restored_from, restarted.restored_from) == ("published", "history", "local")
        assert new.n_folded == n_tail and restarted.n_folded == n_tail and fresh.n_folded == n_first + n_tail
        assert fresh.fold.n_rewards > 0 and len(_arms(fresh)) == 2
        assert _arms(new) == _arms(fresh) == _arms(restarted)  # counts exact, discounted sums to 1e-9
        assert {k: (v.total_pulls, v.total_rewards) for k, v in new.fold.optimizer.arms.items()} == \
            {k: (v.total_pulls, v.total_rewards) for k, v in fresh.fold.optimizer.arms.items()}
        assert _live(fresh.fold)[0] and _live(new.fold) == _live(fresh.fold)
        assert new.offsets == fresh.offsets
    finally:
        for r in (new, fresh, restarted):
            r.stop()
    again = _node(broker, topics, tmp_path / "new", opt)  # the new node wrote its own snapshot: a restart now
    try:
        fold_feedback(again, n_first + n_tail)
        assert again.restored_from == "local" and again.n_folded == 0 and _arms(again) == _arms(fresh)
    finally:
        again.stop()


def test_without_a_published_snapshot_a_new_node_folds_the_history(broker, tmp_path):
    topics, opt = _topics3(broker)
    n = _produce(broker, topics, 0, 1000)
    # these two read records written after they started: lists may come after the events they precede
    new = _node(broker, topics, tmp_path / "new", opt, publish_every_s=0.5, served_wait_s=10.0)
    fresh = _node(broker, topics, tmp_path / "fresh", None, served_wait_s=10.0)
    try:
        for r in (new, fresh):
            fold_feedback(r, n)
        assert new.restored_from == "history" and new.n_folded == n
        assert _arms(new) == _arms(fresh) and new.fold.n_rewards > 0
        time.sleep(1.5)  # the writer publishes every publish_every_s while it runs
        k = new.published.n_published
        assert k >= 1
        time.sleep(1.5)
        assert new.published.n_published == k  # nothing folded since: not published again
        n += _produce(broker, topics, 1000, 100)
        fold_feedback(new, n)
        fold_feedback(fresh, n)
        deadline = time.monotonic() + 20
        while new.published.n_published == k and time.monotonic() < deadline:
            time.sleep(0.1)
        assert new.published.n_published > k
    finally:
        new.stop()
        fresh.stop()
    late = _node(broker, topics, tmp_path / "late", opt)  # starts from the newest of those publications
    try:
        fold_feedback(late, n)
        assert late.restored_from == "published" and late.n_folded == 0 and _arms(late) == _arms(fresh)
    finally:
        late.stop()


def test_an_unusable_published_snapshot_is_logged_and_the_history_folded(broker, tmp_path, caplog):
    topics, opt = _topics3(broker)
    n = _produce(broker, topics, 0, 1000)
    first = _node(broker, topics, tmp_path / "first", opt)
    fold_feedback(first, n)
    first.stop()
    good = first.published.last_head
    p = make_producer(broker)
    # a head whose chunks do not match its checksum, then a record that is no head at all (newest)
    bad = msgspec.structs.replace(good, sha256="0" * 64)
    p.produce(opt, key=b"head", value=msgspec.msgpack.encode(bad), partition=HEAD_PARTITION)
    p.produce(opt, key=b"head", value=b"\xc1 not msgpack", partition=HEAD_PARTITION)
    assert p.flush(10) == 0
    # the newest usable head (the first one, older) is taken
    older = _node(broker, topics, tmp_path / "older", opt)
    try:
        fold_feedback(older, n)
        assert older.restored_from == "published" and older.n_folded == 0 and _arms(older) == _arms(first)
    finally:
        older.stop()
    assert sum("unusable" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records) == 2

    # no usable head at all: every chunk of the publication gone (its generation tombstoned and compacted,
    # here: the chunks' range points past them) -> the node folds the history
    gone = msgspec.structs.replace(good, first_offset=good.last_offset + 1000, last_offset=good.last_offset + 1000)
    topics2, opt2 = _topics3(broker)
    n2 = _produce(broker, topics2, 0, 1000)
    p.produce(opt2, key=b"head", value=msgspec.msgpack.encode(gone), partition=HEAD_PARTITION)
    assert p.flush(10) == 0
    caplog.clear()
    new = _node(broker, topics2, tmp_path / "new", opt2)
    fresh = _node(broker, topics2, tmp_path / "fresh", None)
    try:
        for r in (new, fresh):
            fold_feedback(r, n2)
        assert new.restored_from == "history" and new.n_folded == n2 and _arms(new) == _arms(fresh)
    finally:
        new.stop()
        fresh.stop()
    assert any("no usable optimizer snapshot" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_a_published_snapshot_beyond_a_recreated_topic_reads_the_new_log_from_its_start(broker, tmp_path):
    """A snapshot published before ``events`` and ``served`` were recreated: its offsets lie beyond
    the new logs' ends. The API's policy (``operators/offset_guard.py``): an error, counted, and the
    new log read from its start (its records are new), on top of the restored counts."""
    topics, opt = _topics3(broker)
    n = _produce(broker, topics, 0, 600)
    arms = {("c", "a", ""): ArmStats(pulls=7.0, rewards=2.0, last_ts=NOW - 86400, total_pulls=7, total_rewards=2)}
    SnapshotTopic(broker, opt).publish(BanditSnapshot(arms=arms, offsets={(topics[0], 0): 10_000, (topics[1], 0): 5_000}))
    found: list[BeyondLogEnd] = []
    new = _node(broker, topics, tmp_path / "new", opt, on_beyond_end=found.append)
    fresh = _node(broker, topics, tmp_path / "fresh", None)
    try:
        for r in (new, fresh):
            fold_feedback(r, n)
        assert new.restored_from == "published" and new.n_folded == n
        assert sorted(b.topic for b in found) == sorted(topics) and all(b.resume_at == 0 for b in found)
        assert new.guards[topics[0]].detected == 1
        fa = fresh.fold.optimizer.arms[("c", "a", "")]
        na = new.fold.optimizer.arms[("c", "a", "")]
        assert (na.total_pulls, na.total_rewards) == (fa.total_pulls + 7, fa.total_rewards + 2)
    finally:
        new.stop()
        fresh.stop()


@pytest.mark.integration
def test_a_new_api_node_serves_the_arms_of_the_published_snapshot_over_http(broker, tmp_path):
    """Node A serves lists and folds clicks, then stops (publishing its state); node B, started with
    empty API state and serving directories on the same topics, shows the same arms at ``/readyz``
    200 without folding the history (it reads only the tails: none here)."""
    s = make_settings(broker, tmp_path / "a", partitions=2)
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog([{"item_id": f"i{k}", "price": k} for k in range(30)])
    # lists are empty here (no flow: nothing is popular), so the goal is an event that names no item (rule 3 of
    # operators/attribution.py credits an event naming items only for an item on the list)
    campaign = {"scenario": "popular", "goal": "search",
                "arms": [{"name": "a", "strategy": "popular"}, {"name": "b", "strategy": "top"}]}

    def arms(c: httpx.Client) -> dict[str, tuple[int, int]]:
        return {a["arm"]: (a["pulls"], a["rewards"]) for a in c.get("/v1/campaigns/c/arms").json()["arms"]}

    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: c.get("/healthz").json().get("catalog_items", 0) >= 30, what="catalog")
        wait_for(lambda: c.get("/readyz").json()["optimizer_from"] == "history", what="nothing published yet")
        assert c.put("/v1/campaigns/c", json=campaign).status_code == 201
        clicks = 0
        for u in range(60):
            r = c.get("/v1/recommendations", params={"campaign": "c", "user_id": f"u{u}"})
            assert r.status_code == 200, r.text
            if u % 3 == 0:
                body = r.json()
                ev = {"type": "search", "user_id": f"u{u}", "query": "shoes", "request_id": body["request_id"]}
                assert c.post("/v1/events", json=ev).status_code == 202
                clicks += 1
        wait_for(lambda: sum(r for _p, r in arms(c).values()) == clicks, 30, "rewards folded on node A")
        before = arms(c)
    assert sum(p for p, _r in before.values()) == 60

    b = s.model_copy(update={"stream": s.stream.model_copy(update={
        "state_dir": tmp_path / "b" / "state", "serving_dir": tmp_path / "b" / "serving", "model_dir": tmp_path / "b" / "models"})})
    with ApiServer(b) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        assert c.put("/v1/campaigns/c", json=campaign).status_code == 201  # the shop's campaigns (local to a node)
        wait_for(lambda: c.get("/readyz").status_code == 200, 30, "node B ready")
        assert c.get("/readyz").json()["optimizer_from"] == "published"
        assert arms(c) == before
