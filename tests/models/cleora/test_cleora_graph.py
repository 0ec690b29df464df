"""Graph building: Cleora weights, canonical order, events/titles sources, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from models.cleora import (
    EmptyGraphError,
    GraphInputError,
    build_graph,
    graph_from_arrays,
    parse_columns,
    rows_from_events,
    rows_from_titles,
)


def _dense(g):
    return {(g.labels[i], g.labels[j]): v for (i, j), v in np.ndenumerate(g.adjacency.toarray()) if v}


def test_clique_weights_match_pycleora_values():
    # pycleora 3.2.1, columns="complex::reflexive::item", lines "a b c" and "a b": row a of
    # the left Markov matrix is [0.4333, 0.4333, 0.1333] (pairs weighted 1/|e|², diagonal included)
    g = build_graph([["a", "b", "c"], ["a", "b"]], "complex::reflexive::item")
    m = g.markov().toarray()
    row = {lab: m[list(g.labels).index("a"), j] for j, lab in enumerate(g.labels)}
    assert row == pytest.approx({"a": 0.4333333, "b": 0.4333333, "c": 0.1333333}, abs=1e-6)
    assert np.allclose(m.sum(axis=1), 1.0)


def test_bipartite_weights_and_symmetric_markov():
    g = build_graph([["u", ["a", "b"]], ["v", ["a"]]], "user complex::item")
    w = _dense(g)
    assert w[("u", "a")] == pytest.approx(0.5) and w[("v", "a")] == pytest.approx(1.0)
    assert ("u", "u") not in w and ("a", "b") not in w
    s = g.markov("symmetric").toarray()
    assert np.allclose(s, s.T)
    with pytest.raises(ValueError, match="kind: must be"):
        g.markov("right")


def test_duplicates_add_up_and_multiplicity_counts():
    once = build_graph([["a", "b"]])
    twice = build_graph([["a", "b"], ["b", "a"]])
    assert np.allclose(twice.adjacency.toarray(), 2 * once.adjacency.toarray())
    g = build_graph([["a", "a", "b"]])  # pycleora: row a = [2/3, 1/3]
    m = g.markov().toarray()
    assert m[list(g.labels).index("a")] == pytest.approx([2 / 3, 1 / 3], abs=1e-6)


def test_canonical_order_is_hub_first_then_label():
    g = build_graph([["x", "hub"], ["y", "hub"], ["hub", "z"]])
    assert g.labels.tolist() == ["hub", "x", "y", "z"]


def test_self_loops_and_one_node_hyperedges_are_dropped_and_counted():
    g = build_graph([["a"], ["a", "a"], ["a", "b"], []])
    assert g.n_rows == 1 and g.n_dropped == 3
    assert sorted(g.labels.tolist()) == ["a", "b"]


def test_empty_graph_raises():
    with pytest.raises(EmptyGraphError, match="graph: no hyperedge with two or more distinct nodes"):
        build_graph([])
    with pytest.raises(EmptyGraphError):
        build_graph([["a"], ["b", "b"]])


def test_huge_hyperedges_sampled_deterministically_or_rejected():
    big = [f"w{i}" for i in range(50)]
    g1 = build_graph([big, ["w1", "x"]], max_hyperedge_size=10)
    g2 = build_graph([["x", "w1"], list(reversed(big))], max_hyperedge_size=10)
    assert g1.n_trimmed == 1 and g1.n_nodes <= 12
    assert g1.labels.tolist() == g2.labels.tolist()
    assert (g1.adjacency != g2.adjacency).nnz == 0
    with pytest.raises(GraphInputError, match=r"row 0, column 'node': has 50 entities, more than max_hyperedge_size=10"):
        build_graph([big], max_hyperedge_size=10, on_huge="raise")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("complex::reflexiv::item", "unknown modifier 'reflexiv'"),
        ("item", "a single column must be 'complex::reflexive::NAME'"),
        ("a b c", "at most two columns"),
        ("reflexive::item x", "reflexive column 'item' must also be complex"),
        ("item complex::item", "column names must be unique"),
        ("transient::a transient::b", "at least one column must not be transient"),
        ("", "at least one column is required"),
    ],
)
def test_bad_column_specs(spec, match):
    with pytest.raises(GraphInputError, match=match):
        parse_columns(spec)


def test_bad_rows_name_row_and_column():
    with pytest.raises(GraphInputError, match="row 1: has 3 fields but the columns 'user complex::item' declare 2"):
        build_graph([["u", ["a"]], ["u", ["a"], "extra"]], "user complex::item")
    with pytest.raises(GraphInputError, match="row 0, column 'user': holds several entities"):
        build_graph([[["u", "v"], ["a"]]], "user complex::item")
    with pytest.raises(GraphInputError, match="labels must be non-empty strings"):
        build_graph([["a", 3]])


def test_tsv_lines_like_cleora():
    g = build_graph(["u1\ta b", "u2\tb c"], "user complex::item")
    assert sorted(g.labels.tolist()) == ["a", "b", "c", "u1", "u2"]


def test_star_expansion_keeps_virtual_nodes_transient():
    rows, cols = rows_from_titles({"sku1": "Red wool scarf", "sku2": "Blue wool hat"})
    g = build_graph(rows, cols)
    assert cols == "transient::item complex::word"
    transient = set(g.labels[g.transient].tolist())
    assert transient == {"sku1", "sku2"} and "w:wool" in g.labels.tolist()


def test_rows_from_events_per_type_and_baskets():
    events = [
        {"user_id": "7", "session_id": "s1", "item_id": "a", "type": "view", "ts": 1.0},
        {"user_id": "7", "session_id": "s1", "item_id": "b", "type": "view", "ts": 2.0},
        {"user_id": "8", "item_id": "a", "type": "view", "ts": 3.0},
        {"user_id": "8", "items": [{"item_id": "a", "quantity": 1, "price": 2.0},
                                   {"item_id": "c", "quantity": 2, "price": 1.0}], "type": "purchase", "ts": 4.0},
    ]
    rows, cols = rows_from_events(events, types={"view"})
    assert cols == "session complex::item"
    assert rows == [["session:s1", ["a", "b"]], ["user:8", ["a"]]]
    rows, cols = rows_from_events(events, group_by="event", types={"purchase"}, shape="clique")
    assert cols == "complex::reflexive::item" and rows == [[["a", "c"]]]
    rows, _ = rows_from_events(events, group_by="user_id", item_to_node={"a": "brand:x", "b": "brand:y"})
    assert rows == [["user:7", ["brand:x", "brand:y"]], ["user:8", ["brand:x", "brand:x"]]]
    with pytest.raises(GraphInputError, match="event 0: user_id: is required"):
        rows_from_events([{"item_id": "a", "type": "view"}], group_by="user_id")
    with pytest.raises(GraphInputError, match="group_by: must be"):
        rows_from_events(events, group_by="brand")


def test_graph_from_arrays_equals_build_graph():
    labels = ["a", "b", "c", "d"]
    g1 = graph_from_arrays(labels, np.array([0, 2, 4, 5, 7]), np.array([0, 1, 1, 2, 3, 3, 3]))
    g2 = build_graph([["a", "b"], ["b", "c"], ["d"], ["d", "d"]])
    assert g1.labels.tolist() == g2.labels.tolist() and g1.n_dropped == g2.n_dropped == 2
    assert np.array_equal(g1.adjacency.toarray(), g2.adjacency.toarray())
    with pytest.raises(GraphInputError, match="members: must lie in"):
        graph_from_arrays(labels, np.array([0, 2]), np.array([0, 9]))
