"""Replay readers on tiny files written in tmp_path, one per format."""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.schema import BasketLine
from simulators.replay import (
    ReplayFormatError,
    online_retail_catalog,
    read_online_retail,
    read_replay,
    read_sessionrec,
    read_srgnn,
    replay_catalog,
)


def _write_tsv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_sessionrec_time_order_ids_as_text(tmp_path: Path) -> None:
    p = _write_tsv(
        tmp_path / "clicks_test.txt",
        "SessionId\tItemId\tTime\n"
        "2\t214536502\t1396860669.5\n"
        "1\t00042\t1396860600.0\n"
        "2\t214536506\t1396860886.998\n"
        "1\t00043\t1396860669.5\n",
    )
    events = list(read_sessionrec(p))
    assert [(e.user_id, e.item_id, e.ts) for e in events] == [
        ("1", "00042", 1396860600.0),
        ("2", "214536502", 1396860669.5),  # tie on ts: file order
        ("1", "00043", 1396860669.5),
        ("2", "214536506", 1396860886.998),
    ]
    assert all(e.type == "view" and e.session_id == e.user_id for e in events)
    assert [e.event_id for e in events] == [
        "clicks_test:1",
        "clicks_test:0",
        "clicks_test:3",
        "clicks_test:2",
    ]
    assert [e.item_id for e in read_sessionrec(p, limit=2)] == ["00042", "214536502"]
    assert next(iter(read_replay(p, "sessionrec", source="rsc"))).event_id == "rsc:1"


def test_sessionrec_user_column_and_errors(tmp_path: Path) -> None:
    p = _write_tsv(tmp_path / "u.tsv", "SessionId\tUserId\tItemId\tTime\n7\tanna\t1\t10.0\n")
    assert next(read_sessionrec(p)).user_id == "anna"
    bad = _write_tsv(tmp_path / "bad.tsv", "Session\tItemId\tTime\n1\t2\t3\n")
    with pytest.raises(
        ReplayFormatError, match=r"bad.tsv: session-rec TSV needs columns .* missing \['SessionId'\]"
    ):
        list(read_sessionrec(bad))
    ms = _write_tsv(tmp_path / "ms.tsv", "SessionId\tItemId\tTime\n1\t2\t1396860669277\n")
    with pytest.raises(
        ReplayFormatError, match="Time: must be unix seconds; got 1396860669277.0 .looks like milliseconds"
    ):
        list(read_sessionrec(ms))


def _pickle(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_srgnn_full_sessions_untimed(tmp_path: Path) -> None:
    p = _pickle(tmp_path / "all_train_seq.txt", [[5, 6, 5], [7]])
    events = list(read_srgnn(p, start_ts=100.0, gap_s=2.0))
    assert [(e.user_id, e.item_id, e.ts) for e in events] == [
        ("all_train_seq:0", "5", 100.0),
        ("all_train_seq:0", "6", 102.0),
        ("all_train_seq:0", "5", 104.0),
        ("all_train_seq:1", "7", 106.0),
    ]
    assert events[1].event_id == "all_train_seq:0:1" and events[1].session_id == "all_train_seq:0"
    assert len(list(read_srgnn(p, limit=2))) == 2


def test_srgnn_prefix_next_pairs(tmp_path: Path) -> None:
    p = _pickle(tmp_path / "test.txt", ([[1, 2], [3]], [4, 5]))
    assert [(e.user_id, e.item_id) for e in read_srgnn(p)] == [
        ("test:0", "1"),
        ("test:0", "2"),
        ("test:0", "4"),
        ("test:1", "3"),
        ("test:1", "5"),
    ]
    # retailrocket ships the pair as a list, not a tuple
    q = _pickle(tmp_path / "test_list.txt", [[[1, 2], [3]], [4, 5]])
    assert len(list(read_srgnn(q))) == 5


def test_srgnn_timed_sessions_and_pairs(tmp_path: Path) -> None:
    full = _pickle(tmp_path / "all_test_seq_time.txt", [[(1, 1000), (2, 1030)], [(3, 1010)]])
    assert [(e.user_id, e.item_id, e.ts) for e in read_srgnn(full)] == [
        ("all_test_seq_time:0", "1", 1000.0),
        ("all_test_seq_time:1", "3", 1010.0),
        ("all_test_seq_time:0", "2", 1030.0),
    ]
    pairs = _pickle(tmp_path / "test_time.txt", ([[(1, 1000)], [(3, 990)]], [(2, 1030), (4, 995)]))
    assert [(e.item_id, e.ts) for e in read_srgnn(pairs)] == [
        ("3", 990.0),
        ("4", 995.0),
        ("1", 1000.0),
        ("2", 1030.0),
    ]
    assert [e.item_id for e in read_srgnn(pairs, limit=1)] == ["3"]


def test_srgnn_refuses_globals_and_bad_shapes(tmp_path: Path) -> None:
    evil = _pickle(tmp_path / "evil.txt", [[dt.date(2020, 1, 1)]])
    with pytest.raises(ReplayFormatError, match="global datetime.date is not allowed"):
        list(read_srgnn(evil))
    with pytest.raises(ReplayFormatError, match="a click must be an int item id or"):
        list(read_srgnn(_pickle(tmp_path / "str.txt", [["a"]])))
    with pytest.raises(ReplayFormatError, match="expected a non-empty list"):
        list(read_srgnn(_pickle(tmp_path / "empty.txt", [])))


def _retail(path: Path) -> Path:
    t = dt.datetime
    rows = {
        "InvoiceNo": ["536366", "536365", "536365", "C536367", "536368", "536369"],
        "StockCode": ["22633", "85123A", "71053", "85123A", "22633", "71053"],
        "Description": ["HAND WARMER ", "WHITE HEART", "METAL LANTERN", "WHITE HEART", "HAND WARMER ", None],
        "Quantity": [6, 6, 2, -6, 1, 0],
        "InvoiceDate": [
            t(2010, 12, 1, 8, 28),
            t(2010, 12, 1, 8, 26),
            t(2010, 12, 1, 8, 26),
            t(2010, 12, 1, 9),
            t(2010, 12, 2),
            t(2010, 12, 3),
        ],
        "UnitPrice": [1.85, 2.55, 3.39, 2.55, 2.0, 3.0],
        "CustomerID": [17850.0, 13047.0, 13047.0, 17850.0, None, 1.0],
        "Country": ["United Kingdom", "France", "France", "United Kingdom", "EIRE", "EIRE"],
    }
    types = {"InvoiceDate": pa.timestamp("us"), "CustomerID": pa.float64()}
    pq.write_table(pa.table({k: pa.array(v, type=types.get(k)) for k, v in rows.items()}), path)
    return path


def test_online_retail_invoices_become_baskets(tmp_path: Path) -> None:
    p = _retail(tmp_path / "online_retail.parquet")
    events = list(read_online_retail(p))
    # cancellation C536367 and the zero-quantity-only invoice 536369 are skipped
    assert [e.event_id for e in events] == [
        "online_retail:536365",
        "online_retail:536366",
        "online_retail:536368",
    ]
    first = events[0]
    assert first.type == "pos_purchase" and first.user_id == "13047" and first.session_id == "536365"
    assert first.ts == dt.datetime(2010, 12, 1, 8, 26, tzinfo=dt.UTC).timestamp()
    assert first.items == (BasketLine("85123A", 6.0, 2.55), BasketLine("71053", 2.0, 3.39))
    assert first.extra == {"country": "France"}
    assert events[1].user_id == "17850"  # float column, integer text
    assert events[2].user_id == "guest-536368"
    assert [e.event_id for e in read_replay(p, "online_retail", limit=1)] == ["online_retail:536365"]


def test_online_retail_catalog(tmp_path: Path) -> None:
    p = _retail(tmp_path / "online_retail.parquet")
    cat = online_retail_catalog(p)
    assert cat == [
        {"item_id": "22633", "title": "HAND WARMER", "price": 1.925, "n_lines": 2},
        {"item_id": "71053", "title": "METAL LANTERN", "price": 3.39, "n_lines": 1},
        {"item_id": "85123A", "title": "WHITE HEART", "price": 2.55, "n_lines": 1},
    ]
    assert replay_catalog(p, "online_retail") == cat
    assert replay_catalog(p, "srgnn") == []


def test_unknown_format_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"format: must be one of \['sessionrec', 'srgnn', 'online_retail'\]; got 'csv'"
    ):
        read_replay(tmp_path / "x", "csv")
