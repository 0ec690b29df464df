"""Loaders, the next-item task and the evaluation loop on tiny files written in tmp_path."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.base import Histories
from models.data import expand_sessions, load_dataset, load_online_retail, validation_split
from models.evaluate import fit_and_evaluate, rank_queries, sample_queries
from models.popularity import Popularity

T0 = 1_396_000_000.0


def write_tsv(path: Path, rows: list[tuple[object, object, float]], header: str = "SessionId\tItemId\tTime") -> None:
    path.write_text(header + "\n" + "".join(f"{s}\t{i}\t{t}\n" for s, i, t in rows))


@pytest.fixture()
def sessionrec_dir(tmp_path: Path) -> Path:
    train = [(1, "a", T0), (1, "b", T0 + 5), (2, "b", T0 + 10), (2, "c", T0 + 20), (2, "a", T0 + 30),
             (3, "c", T0 + 40), (3, "d", T0 + 50)]
    # test: session 10 keeps a b c; session 11 loses its unknown item and becomes length 1 (dropped);
    # session 9 is listed out of time order
    test = [(10, "a", T0 + 100), (10, "b", T0 + 110), (11, "zz", T0 + 100), (11, "c", T0 + 120),
            (10, "c", T0 + 130), (9, "d", T0 + 210), (9, "b", T0 + 200)]
    write_tsv(tmp_path / "x_train_full.txt", train)
    write_tsv(tmp_path / "x_test.txt", test)
    return tmp_path


def test_sessionrec_loader(sessionrec_dir: Path) -> None:
    ds = load_dataset(sessionrec_dir, "sessionrec")
    assert ds.train.item_ids == ("a", "b", "c", "d")
    assert ds.train.n_events == 7 and ds.train.n_sessions == 3
    assert ds.n_dropped_test == 1
    t = ds.test
    assert t.session_ids == ("9", "10")                      # numeric id order, as session-rec sorts
    assert t.n_queries == 1 + 2
    prefixes = t.prefixes()
    assert [prefixes.query(q).tolist() for q in range(3)] == [[1], [0], [0, 1]]   # b then d for session 9
    assert t.next_items().tolist() == [3, 1, 2]
    indptr, rest = t.rest()
    assert [rest[indptr[q]:indptr[q + 1]].tolist() for q in range(3)] == [[3], [1, 2], [2]]
    assert prefixes.ts is not None and prefixes.ts[0] == T0 + 200


def test_sessionrec_time_units_are_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_tsv(tmp_path / "x_train_full.txt", [(1, "a", T0 * 1000), (1, "b", T0 * 1000 + 5000)])
    write_tsv(tmp_path / "x_test.txt", [(2, "a", "2014-04-07T00:49:00"), (2, "b", "2014-04-07T00:50:00")])
    ds = load_dataset(tmp_path, "sessionrec")
    assert "look like milliseconds" in caplog.text
    assert ds.train.ts.tolist() == [T0, T0 + 5]
    assert ds.test.sessions.ts is not None and ds.test.sessions.ts[0] == 1396831740.0
    (tmp_path / "x_train_full.txt").write_text("SessionId,ItemId\n1,a\n1,b\n")
    assert load_dataset(tmp_path, "sessionrec").train.ts.tolist() == [0.0, 1.0]
    assert "using the file order as time" in caplog.text


def test_sessionrec_errors_name_the_problem(tmp_path: Path) -> None:
    write_tsv(tmp_path / "x_test.txt", [(2, "a", T0), (2, "b", T0)])
    write_tsv(tmp_path / "x_train_full.txt", [(1, "a", "yesterday"), (1, "b", T0)])
    with pytest.raises(ValueError, match="must be epoch seconds or ISO 8601; got 'yesterday' in row 0"):
        load_dataset(tmp_path, "sessionrec")
    for bad in ("nan", "inf", "-inf"):
        write_tsv(tmp_path / "x_train_full.txt", [(1, "a", T0), (1, "b", bad)])
        with pytest.raises(ValueError, match=r"Time: 1 values are not finite numbers \(NaN or infinity\), e.g. row 1"):
            load_dataset(tmp_path, "sessionrec")
    write_tsv(tmp_path / "x_train_full.txt", [(1, "a", T0)], header="Session\tProduct\tTime")
    with pytest.raises(ValueError, match="no item column"):
        load_dataset(tmp_path, "sessionrec")
    (tmp_path / "x_train_full.txt").write_text("SessionId\tItemId\tTime\n")
    with pytest.raises(ValueError, match=r"^x_train_full.txt: no events \(a header only\)$"):
        load_dataset(tmp_path, "sessionrec")
    with pytest.raises(FileNotFoundError, match="_train_full"):
        load_dataset(tmp_path / "..", "sessionrec")
    with pytest.raises(ValueError, match="format: must be one of"):
        load_dataset(tmp_path, "parquet")


def test_sessionrec_bad_time_names_the_bad_value_and_its_row(tmp_path: Path) -> None:
    """Not the first value of the column, which is fine: the one that does not parse."""
    write_tsv(tmp_path / "x_test.txt", [(2, "a", T0), (2, "b", T0)])
    rows = [(1, "a", T0 + j) for j in range(50)]
    for bad, row in (("yesterday", 37), ("", 49)):
        write_tsv(tmp_path / "x_train_full.txt", [*rows[:row], (1, "b", bad), *rows[row + 1:]])
        with pytest.raises(ValueError, match=f"Time: must be epoch seconds or ISO 8601; got '{bad}' in row {row}$"):
            load_dataset(tmp_path, "sessionrec")
    write_tsv(tmp_path / "x_train_full.txt", [(1, "a", "2014-04-07T00:49:00"), (1, "b", "2014-04-07 junk")])
    with pytest.raises(ValueError, match="got '2014-04-07 junk' in row 1"):
        load_dataset(tmp_path, "sessionrec")


def test_sessionrec_empty_ids_name_the_column_and_row(tmp_path: Path) -> None:
    """'5<TAB><TAB>7' was an item whose id is '' (and an empty session id a session ''): now an error naming the
    file, the column and the first row."""
    write_tsv(tmp_path / "x_test.txt", [(2, "a", T0), (2, "b", T0)])
    rows = [(1, "a", T0 + j) for j in range(10)]
    for bad_row, col in (((1, "", T0 + 4), "ItemId"), ((" ", "b", T0 + 4), "SessionId")):
        write_tsv(tmp_path / "x_train_full.txt", [*rows[:4], bad_row, *rows[5:]])
        with pytest.raises(ValueError, match=f"x_train_full.txt: {col}: 1 empty (item|session) ids, e.g. row 4$"):
            load_dataset(tmp_path, "sessionrec")


def test_sessionrec_reads_a_spreadsheet_export(sessionrec_dir: Path) -> None:
    """A byte-order mark, CRLF line ends and quoted header names (Excel's "CSV UTF-8") are read as plain TSV."""
    expected = load_dataset(sessionrec_dir, "sessionrec")
    for name in ("x_train_full.txt", "x_test.txt"):
        lines = (sessionrec_dir / name).read_text().splitlines()
        head = "\t".join(f'"{c}"' for c in lines[0].split("\t"))
        (sessionrec_dir / name).write_bytes(("\ufeff" + "\r\n".join([head, *lines[1:]]) + "\r\n").encode())
    ds = load_dataset(sessionrec_dir, "sessionrec")
    assert ds.train.item_ids == expected.train.item_ids and ds.train.ts.tolist() == expected.train.ts.tolist()
    assert ds.test.n_queries == expected.test.n_queries and ds.n_dropped_test == expected.n_dropped_test
    (sessionrec_dir / "x_test.txt").write_bytes("SessionId\tItemId\tTime\n1\tcaf\xe9\t5\n".encode("latin-1"))
    with pytest.raises(ValueError, match="x_test.txt: not UTF-8 text"):
        load_dataset(sessionrec_dir, "sessionrec")


@pytest.mark.parametrize("sessions", [[], [[], []]])
def test_srgnn_training_sessions_without_items_name_the_files(tmp_path: Path, sessions: list) -> None:
    """It said "the training data holds no events", naming no file."""
    (tmp_path / "all_train_seq.txt").write_bytes(pickle.dumps(sessions))
    (tmp_path / "test.txt").write_bytes(pickle.dumps(([[1]], [2])))
    with pytest.raises(ValueError, match=r"the training sessions \(all_train_seq.txt or train.txt\) hold no items$"):
        load_dataset(tmp_path, "srgnn")


def test_srgnn_loader_drops_unknown_items(tmp_path: Path) -> None:
    (tmp_path / "all_train_seq.txt").write_bytes(pickle.dumps([[1, 2, 3], [2, 3], [4, 1]]))
    prefixes = [[1, 2], [9, 2], [9], [3]]
    targets = [3, 1, 2, 99]
    (tmp_path / "test.txt").write_bytes(pickle.dumps((prefixes, targets)))
    ds = load_dataset(tmp_path, "srgnn")
    assert ds.train.item_ids == ("1", "2", "3", "4")
    # pair 2 loses item 9 (prefix [2] remains); pair 3 has an empty prefix; pair 4 an unknown target
    assert ds.n_dropped_test == 2 and ds.test.n_queries == 2
    assert [ds.test.prefixes().query(q).tolist() for q in range(2)] == [[0, 1], [1]]
    assert ds.test.next_items().tolist() == [2, 0]
    assert np.all(np.diff(ds.train.ts) >= 0)                  # pseudo-time follows session order


def test_srgnn_pickle_with_a_global_is_refused(tmp_path: Path) -> None:
    (tmp_path / "all_train_seq.txt").write_bytes(pickle.dumps([print]))
    (tmp_path / "test.txt").write_bytes(pickle.dumps(([[1]], [1])))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global builtins.print"):
        load_dataset(tmp_path, "srgnn")


@pytest.mark.parametrize(("name", "obj", "expected"), [
    ("all_train_seq.txt", [[1, 2], 3], "all_train_seq.txt: session 1 must be a list of item ids; got 3"),
    ("all_train_seq.txt", [[1, None]], "all_train_seq.txt: session 0, position 1: an item id must be an integer; got None"),
    ("all_train_seq.txt", [[1, [2]]], "position 1: an item id must be an integer; got \\[2\\]"),
    ("all_train_seq.txt", [[1, float("inf")]], "position 1: an item id must be an integer; got inf"),
    ("all_train_seq.txt", [[1.5, 2.7]], "position 0: an item id must be an integer; got 1.5"),
    ("test.txt", (5, 6), "test.txt: expected a pair"),
    ("test.txt", ([[1]], ["x"]), "test.txt: target 0: an item id must be an integer; got 'x'"),
])
def test_srgnn_malformed_pickles_name_the_file_and_place(tmp_path: Path, name: str, obj: object,
                                                          expected: str) -> None:
    """Each was a TypeError / OverflowError traceback, or (2.7) silently item 2."""
    (tmp_path / "all_train_seq.txt").write_bytes(pickle.dumps([[1, 2], [2, 3]]))
    (tmp_path / "test.txt").write_bytes(pickle.dumps(([[1]], [2])))
    (tmp_path / name).write_bytes(pickle.dumps(obj))
    with pytest.raises(ValueError, match=expected):
        load_dataset(tmp_path, "srgnn")


def test_srgnn_test_time_pairs_are_read(tmp_path: Path) -> None:
    (tmp_path / "all_train_seq.txt").write_bytes(pickle.dumps([[1, 2], [2, 3], [3.0, 1]]))
    (tmp_path / "test_time.txt").write_bytes(pickle.dumps(([[(1, 5.0), (2, 6.0)], [(3, 7.0)]], [(3, 8.0), 1])))
    ds = load_dataset(tmp_path, "srgnn")
    assert ds.test.n_queries == 2 and ds.train.item_ids == ("1", "2", "3")


def test_online_retail_loader(tmp_path: Path) -> None:
    rows = []
    day = datetime(2011, 11, 1, 10, 0)
    for inv in range(12):                                  # 12 invoices 3 days apart, A E C each
        for code in ("A", "E", "C") if inv % 2 else ("C", "E", "A"):  # ("B" is UCI's bad-debt code: not a product)
            rows.append({"InvoiceNo": str(500 + inv), "StockCode": code, "Quantity": 2,
                         "InvoiceDate": day + timedelta(days=3 * inv), "CustomerID": 17850.0 if inv < 4 else None})
    rows.append({"InvoiceNo": "C999", "StockCode": "A", "Quantity": -1, "InvoiceDate": day,
                 "CustomerID": 17850.0})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "retail.parquet")
    ds = load_dataset(tmp_path, "online_retail")
    assert set(ds.train.item_ids or ()) == {"A", "E", "C"}
    assert ds.test.sessions.n_queries == 5 and ds.train.n_sessions == 7    # days 21..33 are the last 14
    assert ds.test.n_queries == 5 * 2
    assert ds.train.user_idx is not None and ds.train.user_idx.max() == 3  # customer 17850 and 3 guest invoices
    with pytest.raises(ValueError, match="no baskets left"):
        load_online_retail(tmp_path, min_item_support=100)


def test_movielens_loader_holds_out_the_last_ratings(tmp_path: Path) -> None:
    lines = ["userId,movieId,rating,timestamp"]
    for u in (1, 2):
        for j, m in enumerate([10, 20, 30, 40, 50]):
            lines.append(f"{u},{m + u},{4.0},{1000 + 10 * j}")
    lines.append("3,11,4.0,5")
    lines.append("3,21,4.0,6")
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(tmp_path, "movielens")
    assert ds.exclude_seen
    # user 1: train 11 21 31 41, test 51 (unseen in train -> dropped); user 3: 11 then 21 (kept)
    assert ds.n_dropped_test >= 1
    assert ds.test.n_queries == 1
    assert ds.test.prefixes().query(0).tolist() == [ds.train.item_ids.index("11")]


@pytest.mark.parametrize(("text", "expected"), [
    ("userId\tmovieId\trating\ttimestamp\n1\t2\t4.0\t5\n", r"missing \['userId', 'movieId', 'rating', 'timestamp'\]"),
    ("userId,movieId,timestamp\n1,2,5\n", r"needs columns .*; missing \['rating'\]"),
    ("userId,movieId,rating,timestamp\n1,2,4.0,5\n1,3,x,6\n", "not a readable MovieLens ratings file: .*'x'"),
    ("userId,movieId,rating,timestamp\n1,2,4.0,5\n1,3,4.0,\n1,4,4.0,nan\n", "timestamp: 2 values .*e.g. row 1"),
    ("userId,movieId,rating,timestamp\n1,2,4.0,5\n,3,4.0,6\n", r"userId: 1 empty ids, e.g. row 1$"),
    ("userId,movieId,rating,timestamp\n1,2,4.0,5\n1, ,4.0,6\n1,,4.0,7\n", r"movieId: 2 empty ids, e.g. row 1$"),
    ("userId,movieId,rating,timestamp\n", r"no ratings \(a header only\)"),
])
def test_movielens_errors_name_the_file(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "ratings.csv").write_text(text)
    with pytest.raises(ValueError, match=f"ratings.csv: .*{expected}"):
        load_dataset(tmp_path, "movielens")


def test_validation_split_keeps_the_item_space(sessionrec_dir: Path) -> None:
    ds = load_dataset(sessionrec_dir, "sessionrec")
    val = validation_split(ds, frac=0.34)
    assert val.train.n_items == ds.train.n_items and val.train.item_ids == ds.train.item_ids
    assert val.train.n_sessions == 2                         # the latest session (3) is held out
    with pytest.raises(ValueError, match="frac must be in"):
        validation_split(ds, frac=1.5)


def test_expand_sessions_and_sampling() -> None:
    task = expand_sessions(Histories.from_lists([[1, 2, 3], [4], [5, 6]]))
    assert task.n_queries == 3
    assert task.next_items().tolist() == [2, 3, 6]
    sub = sample_queries(task, 2, seed=0)
    assert sub.n_queries == 2 and sample_queries(task, 2, seed=0).query_len.tolist() == sub.query_len.tolist()


def test_fit_and_evaluate_reports_every_metric(sessionrec_dir: Path) -> None:
    ds = load_dataset(sessionrec_dir, "sessionrec")
    rep = fit_and_evaluate("pop", Popularity(), ds, ks=(1, 2))
    assert rep.n_queries == 3 and rep.score_s >= 0 and rep.train_s >= 0
    assert set(rep.metrics) == {f"{m}@{k}" for m in ("HR", "MRR", "P", "R", "MAP", "Coverage", "Popularity")
                                for k in (1, 2)}
    # a, b and c have 2 events each: ties go to the lower index, so the list is a, b
    assert rep.metrics["HR@1"] == 0.0
    assert rep.metrics["HR@2"] == pytest.approx(1 / 3)         # [a] -> b is the only hit
    model = Popularity().fit(ds.train)
    a, _ = rank_queries(model, ds.test, 2, batch_size=1)
    b, _ = rank_queries(model, ds.test, 2, batch_size=100)
    np.testing.assert_array_equal(a, b)


def test_rank_queries_times_no_first_call_compilation(tmp_path: Path) -> None:
    """The first ``recommend`` (numba's compilation on a fresh machine) is a warm-up outside the timed pass,
    with the same lists; ``warmup=False`` times it (session 29's new-user trial: 1 prefix/s on 109 prefixes)."""
    import time

    write_tsv(tmp_path / "x_train_full.txt", [(1, "a", T0), (1, "b", T0 + 1), (2, "b", T0 + 2), (2, "c", T0 + 3)])
    write_tsv(tmp_path / "x_test.txt", [(3, "a", T0 + 9), (3, "b", T0 + 10), (3, "c", T0 + 11)])
    ds = load_dataset(tmp_path, "sessionrec")

    class SlowFirstCall(Popularity):
        calls = 0

        def recommend(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            SlowFirstCall.calls += 1
            if SlowFirstCall.calls == 1:
                time.sleep(0.5)
            return super().recommend(*args, **kwargs)

    model = SlowFirstCall().fit(ds.train)
    recs, seconds = rank_queries(model, ds.test, 2)
    assert seconds < 0.4 and SlowFirstCall.calls == 2
    np.testing.assert_array_equal(recs, rank_queries(Popularity().fit(ds.train), ds.test, 2, warmup=False)[0])
    SlowFirstCall.calls = 0
    assert rank_queries(model, ds.test, 2, warmup=False)[1] >= 0.5


def test_srgnn_train_pairs_are_folded_back_into_sessions(tmp_path: Path) -> None:
    sessions = [[1, 2, 3], [1, 2], [4, 1, 4, 2]]
    pairs = [(s[:-i], s[-i]) for s in sessions for i in range(1, len(s))]
    (tmp_path / "train.txt").write_bytes(pickle.dumps(([p for p, _ in pairs], [t for _, t in pairs])))
    (tmp_path / "test.txt").write_bytes(pickle.dumps(([[1]], [2])))
    ds = load_dataset(tmp_path, "srgnn")
    ids = ds.train.item_ids or ()
    bounds = ds.train.session_bounds()
    got = [[int(ids[i]) for i in ds.train.item_idx[bounds[s]:bounds[s + 1]]] for s in range(ds.train.n_sessions)]
    assert got == sessions
