"""A restarted API process restores windowed popularity from its local snapshot and reads only the
topic's tail (``api/window_popularity.py`` ``PopularitySnapshots``; real broker, real files).

It ranks exactly as a process that read the whole topic; a corrupt or foreign snapshot is ignored
(logged) and the topic read from its start.
"""

from __future__ import annotations

import time
import uuid

import numpy as np

from api.window_popularity import PopularitySnapshots, WindowPopularity
from operators.kafka import TopicSpec, ensure_topics, make_producer
from operators.topic_table import TopicTable
from operators.window_topic import decode_window_piece, encode_window_piece, window_key

NOW = time.time()
WINDOWS = (3 * 3600.0, 86400.0, 30 * 86400.0)


def _publish(broker: str, topic: str, rounds: range) -> int:
    """Pieces of 2 partitions x 30 hourly buckets x 2 shards, republished with new weights each round;
    the last round drops the oldest bucket of partition 0 (tombstones). Returns the records written."""
    p = make_producer(broker)
    n = 0
    for r in rounds:
        for part in range(2):
            for b in range(30):
                bucket = int(NOW // 3600) - 29 + b
                for shard in range(2):
                    weights = {f"i{(part * 7 + b * 3 + shard + k * r) % 97}": float(1 + (k * b + r) % 5) for k in range(8)}
                    p.produce(topic, key=window_key(part, bucket, shard),
                              value=encode_window_piece(part, bucket, shard, NOW - 60 + r, weights))
                    n += 1
        if r == rounds[-1] and r > 0:
            for shard in range(2):
                p.produce(topic, key=window_key(0, int(NOW // 3600) - 29, shard), value=None)
                n += 1
    assert p.flush(10) == 0
    return n


def _node(broker: str, topic: str, path, saved_every_s: float = 0.0) -> tuple[WindowPopularity, PopularitySnapshots, TopicTable]:  # noqa: ANN001
    pop = WindowPopularity(3600.0, 30 * 86400.0, cache_s=0.0)
    snaps = PopularitySnapshots(pop, path, topic, every_s=saved_every_s)
    table = TopicTable(broker, topic, decode_window_piece, on_update=pop.apply, keep=False,
                       start_offsets=snaps.load(), on_batch=snaps.on_batch).start()
    assert table.wait_caught_up(30)
    return pop, snaps, table


def _tops(pop: WindowPopularity) -> list[tuple[list[str], list[float]]]:
    return [(ids, np.round(scores, 9).tolist()) for ids, scores in map(pop.top, WINDOWS)]


def test_a_restart_restores_popularity_and_reads_only_the_tail(broker, tmp_path, caplog):
    topic = f"events-{uuid.uuid4().hex[:8]}.popularity"
    ensure_topics(broker, [TopicSpec(topic, 1, compacted=True)])
    empty, snaps, table = _node(broker, topic, tmp_path / "popularity.snapshot")  # nothing published yet
    table.stop()
    snaps.save()
    empty, _e, table = _node(broker, topic, tmp_path / "popularity.snapshot")  # a restart on an empty snapshot
    table.stop()
    assert len(empty) == 0 and empty.top(86400.0)[0] == []
    n_first = _publish(broker, topic, range(0, 2))
    pop, snaps, table = _node(broker, topic, tmp_path / "popularity.snapshot")
    table.stop()
    snaps.save()
    assert table.n_messages == n_first and (tmp_path / "popularity.snapshot").exists()

    n_tail = _publish(broker, topic, range(2, 3))  # written while the process is down: changed pieces, tombstones
    again, _s, t2 = _node(broker, topic, tmp_path / "popularity.snapshot")
    fresh, _f, t3 = _node(broker, topic, tmp_path / "fresh.snapshot")  # a new node: no snapshot, the whole topic
    try:
        assert t2.n_messages == n_tail and t3.n_messages == n_first + n_tail  # only the tail
        assert _tops(again) == _tops(fresh) and _tops(fresh) != _tops(pop)
        assert len(again) == len(fresh) == 2 * 30 * 2 - 2
    finally:
        t2.stop()
        t3.stop()

    (tmp_path / "popularity.snapshot").write_bytes(b"\x93 not a snapshot")
    broken, _b, t4 = _node(broker, topic, tmp_path / "popularity.snapshot")
    try:
        assert t4.n_messages == n_first + n_tail and _tops(broken) == _tops(fresh)
    finally:
        t4.stop()
    assert any("unusable" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    # the reader's hook saved a good snapshot again once caught up
    healed, _h, t5 = _node(broker, topic, tmp_path / "popularity.snapshot")
    try:
        assert t5.n_messages == 0 and _tops(healed) == _tops(fresh)
    finally:
        t5.stop()
    # a snapshot of another topic is not used
    other = f"events-{uuid.uuid4().hex[:8]}.popularity"
    ensure_topics(broker, [TopicSpec(other, 1, compacted=True)])
    empty, _e, t6 = _node(broker, other, tmp_path / "popularity.snapshot")
    try:
        assert len(empty) == 0 and t6.n_messages == 0
    finally:
        t6.stop()
