"""Control group hashing, and the applier on a real RocksDB: replays are skipped, restarts resume."""

from __future__ import annotations

import pytest

from operators.analytics.apply import AnalyticsApplier
from operators.analytics.join import COUNTER_FIELDS, JoinRules
from operators.analytics.topic import (
    CounterRow,
    OpsRow,
    TopItemsRow,
    decode_record,
    encode_record,
    record_key,
)
from operators.control_group import CONTROL, EXPOSED, group_of, user_fraction
from operators.schema import DeadLetter
from state.analytics import COUNTER, AnalyticsStore, counter_key, item_prefix, split_key
from state.partition import PartitionDB


def test_group_of_is_deterministic_salted_and_has_the_share():
    users = [f"u{i}" for i in range(20000)]
    share = sum(group_of(u, "home", 0.2) == CONTROL for u in users) / len(users)
    assert share == pytest.approx(0.2, abs=0.01)
    assert [group_of(u, "home", 0.2) for u in users[:50]] == [group_of(u, "home", 0.2) for u in users[:50]]
    assert [group_of(u, "home", 0.2) for u in users[:200]] != [group_of(u, "cart", 0.2) for u in users[:200]]
    assert group_of("u1", "home", 0.0) == EXPOSED and 0.0 <= user_fraction("u1", "home") < 1.0
    with pytest.raises(ValueError, match="control_share: must be in"):
        group_of("u1", "home", 1.0)


def test_keys_and_records_round_trip():
    k = counter_key("home", "a", "personalized", 1_700_000_000)
    assert split_key(k) == (["home", "a", "personalized"], 1_700_000_000)
    r = CounterRow(2, "home", "a", "personalized", 1_700_000_000, [1.0] * len(COUNTER_FIELDS))
    assert decode_record(encode_record(r)) == r
    assert record_key(r) == b'["c",2,"home","a","personalized",1700000000]'
    assert record_key(OpsRow(1, 5, 5, {}, 0.0, 0.0)) == b'["o",1]'


def counters(db: PartitionDB) -> dict:
    return {k: v.tolist() for k, v in AnalyticsStore(db).scan_vectors(COUNTER, len(COUNTER_FIELDS))}


def _split(log: list, upto: int | None = None) -> tuple[list, list]:
    """(events, served lists) of ``log[:upto]``, each with its own topic's offsets (as the flow reads them)."""
    evs = [m for m in log if getattr(m, "type", None) != "rec_request"]
    lists = [m for m in log if getattr(m, "type", None) == "rec_request"]
    n_ev = sum(1 for m in log[:upto] if getattr(m, "type", None) != "rec_request") if upto else len(evs)
    n_li = sum(1 for m in log[:upto] if getattr(m, "type", None) == "rec_request") if upto else len(lists)
    return list(enumerate(evs))[:n_ev], list(enumerate(lists))[:n_li]


def test_applier_commits_with_offset_skips_replays_and_resumes(tmp_path, small_ab):
    _, log = small_ab
    log = list(log[:3000])
    log.insert(10, DeadLetter("malformed_json", "value", "bad", b"{", "events", 0, 10))
    path = tmp_path / "p0000"
    db = PartitionDB(path)
    a = AnalyticsApplier(db, 0, JoinRules())
    first = a.apply(*_split(log, 1500))
    a.commit(first)
    assert any(isinstance(r, CounterRow) for r in first.rows) and first.n_dead == 1
    assert a.apply(*_split(log, 1500)).rows == []  # a replay after a restart: nothing staged
    db.close()

    db = PartitionDB(path)  # restart: resume at the stored offsets of both topics
    a = AnalyticsApplier(db, 0, JoinRules())
    ev_upto, li_upto = _split(log, 1500)
    assert (a.next_offset, a.served_next_offset) == (len(ev_upto), len(li_upto))
    evs, lists = _split(log)
    rest = a.apply(evs[len(ev_upto) - 200:], lists[len(li_upto) - 50:])  # overlapping re-delivery: only new offsets count
    a.commit(rest)
    resumed = counters(db)
    top = [r for r in rest.rows if isinstance(r, TopItemsRow)][-1]
    prefix = item_prefix(top.campaign_id, "impressed")
    scanned = sorted(((k[len(prefix):].decode(), n) for k, n in AnalyticsStore(db).scan_ints(prefix)),
                     key=lambda kv: (kv[1], kv[0]), reverse=True)  # ties: the published order (count, id) desc
    assert [tuple(x) for x in top.impressed] == scanned[:20]
    ops = [r for r in rest.rows if isinstance(r, OpsRow)][0]
    assert ops.next_offset == len(evs) and ops.dead == {"malformed_json": 1}
    db.close()

    db = PartitionDB(tmp_path / "once")
    b = AnalyticsApplier(db, 0, JoinRules())
    b.commit(b.apply(evs, lists))
    assert counters(db) == resumed
    db.close()
