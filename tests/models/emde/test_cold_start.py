"""Cold start: hashed title vectors and borrowed codes make a new item scorable without training."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from models.base import Histories
from models.emde import EMDE
from models.emde.cold_start import _word_vectors, extend_emde, inductive_codes, nearest_known, title_vectors
from tests.models.emde.test_emde import _MODS, _SMALL, _planted_log

TASTE_WORDS = ["amber", "birch", "cobalt", "dune", "ember"]


def _titles() -> list[str]:
    """Item i of taste g: the taste's word, an item word and a shared generic word."""
    return [f"{TASTE_WORDS[i // 20]} w{i} Classic" for i in range(100)]


@pytest.fixture(scope="module")
def fitted() -> EMDE:
    return EMDE(_MODS, **_SMALL).fit(_planted_log())


def test_title_vectors_are_deterministic_inductive_and_normalised() -> None:
    a = title_vectors(["Red wool scarf", "blue shirt", ""])
    b = title_vectors(["blue shirt"])  # another batch, another vocabulary order
    np.testing.assert_array_equal(a[1], b[0])
    np.testing.assert_array_equal(title_vectors(["SCARF, red wool!"])[0], a[0])  # case and punctuation
    np.testing.assert_allclose(np.linalg.norm(a[:2], axis=1), 1.0, rtol=1e-6)
    assert not a[2].any()
    assert not np.array_equal(title_vectors(["blue shirt"], seed=1)[0], b[0])
    w = _word_vectors(["x", "y"], 4096, 0)
    assert w.min() > -1.0 and w.max() < 1.0 and abs(float(w.mean())) < 0.03
    with pytest.raises(ValueError, match="dim must be >= 1; got 0"):
        title_vectors(["a"], dim=0)


def test_nearest_known_orders_by_cosine_then_index() -> None:
    known = title_vectors(["red wool scarf", "blue cotton shirt", "red silk scarf", "red silk scarf"])
    idx, cos = nearest_known(title_vectors(["silk scarf red", "blue shirt"]), known, k=3)
    assert idx[0].tolist()[:2] == [2, 3] and cos[0, 0] == pytest.approx(1.0)
    assert idx[1, 0] == 1 and np.all(np.diff(cos, axis=1) <= 0)
    assert nearest_known(known[:1], known, k=10)[0].shape == (1, 4)


def test_new_item_borrows_its_nearest_items_codes_and_the_original_is_untouched(fitted: EMDE) -> None:
    before = {k: getattr(fitted, k).copy() for k in ("item_in_cols_", "item_out_cols_")}
    ext, nbr, added = extend_emde(fitted, ["Cobalt w45 classic NEW", "qqq zzz"], _titles(), new_ids=["n1", "n2"])
    assert nbr[:, 0].tolist() == [45, -1] and added.tolist() == [True, False]  # the second shares no word: left out
    assert ext.n_items_ == 101 and ext.item_ids_[-1] == "n1" and len(ext.item_ids_) == 101
    np.testing.assert_array_equal(ext.item_in_cols_[100], fitted.item_in_cols_[45])
    np.testing.assert_array_equal(ext.item_out_cols_[100], fitted.item_out_cols_[45])
    for name, codes in fitted.codes_.items():
        np.testing.assert_array_equal(ext.codes_[name][100], codes[45])
    # the original keeps its tables (other threads score with it)
    assert fitted.n_items_ == 100 and len(fitted.item_ids_) == 100
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(fitted, k), v)
    # recommendable: scored exactly like its donor, by every query
    raw = ext.layout_.raw_sketches(ext.item_in_cols_, _taste_histories())
    scores = ext.score_sketches(raw)
    assert scores.shape[1] == 101
    np.testing.assert_array_equal(scores[:, 100], scores[:, 45])
    ids, _ = ext.recommend(Histories.from_lists([[42, 43, 44], [43, 44], [1, 2, 3], [61, 62]]), 10)
    assert set(ids[0, :2]) == set(ids[1, :2]) == {45, 100}  # next to its donor where 45 comes next ...
    assert not (ids[2:] == 100).any()  # ... and absent from other tastes' lists


def _taste_histories() -> Histories:
    """4 queries per taste (interleaved: query q has taste q % 5), 3 items each."""
    return Histories.from_lists([[g * 20 + (s + t) % 20 for t in range(3)] for s in range(4) for g in range(5)])


def test_similar_items_of_a_new_item_are_its_donors_neighbours(fitted: EMDE) -> None:
    ext, _, _ = extend_emde(fitted, ["cobalt w45 classic new"], _titles())
    new, donor = np.int32(100), np.int32(45)
    a, _ = ext.similar_items(np.array([new]), 10)
    b, _ = ext.similar_items(np.array([donor]), 10)
    assert new not in a[0] and a[0, 0] // 20 == 2
    assert set(a[0].tolist()) - {45} == set(b[0].tolist()) - {100}
    assert (45 in a[0]) == (100 in b[0])
    c, _ = fitted.similar_items(np.array([donor]), 10)  # the original never returns the new item
    assert c.max() < 100


def test_vote_over_k_neighbours_takes_the_heaviest_bucket_per_column() -> None:
    cols = np.array([[1, 10], [1, 11], [2, 11], [3, 12]], np.int32)
    m = SimpleNamespace(item_in_cols_=cols, item_out_cols_=cols + 100, codes_={"t": cols - 1}, n_items_=4,
                        item_ids_=None, _bias_="built", item_columns=lambda c: (c["t"] + 1, c["t"] + 101))
    titles = ["red scarf", "red scarf wool", "red wool", "green tea"]
    ext, nbr, _ = extend_emde(m, ["red scarf wool"], titles, k=3)
    assert nbr[0, 0] == 1 and sorted(nbr[0].tolist()) == [0, 1, 2]  # 0 and 2 are equally near
    # column 0: bucket 1 (items 1, 0) beats 2; column 1: bucket 11 (items 1, 2) beats 10
    assert ext.item_in_cols_[-1].tolist() == [1, 11] and ext.item_out_cols_[-1].tolist() == [101, 111]
    assert ext.codes_["t"][-1].tolist() == [0, 10] and ext._bias_ is None and m._bias_ == "built"


def test_extend_emde_checks_its_inputs(fitted: EMDE) -> None:
    with pytest.raises(ValueError, match="known has 3 rows but the model has 100 items"):
        extend_emde(fitted, ["x"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="new_ids has 2 ids but new_titles has 1 titles"):
        extend_emde(fitted, ["x"], _titles(), new_ids=["a", "b"])
    with pytest.raises(ValueError, match="links has 2 rows but new_titles has 1 titles"):
        extend_emde(fitted, ["x"], _titles(), links=sp.csr_array((2, 100), dtype=np.float32))


def _links(rows: list[dict[int, float]], n_items: int = 100) -> sp.csr_array:
    data = [(r, c, w) for r, row in enumerate(rows) for c, w in row.items()]
    r, c, w = zip(*data) if data else ((), (), ())
    return sp.csr_array((np.asarray(w, np.float32), (np.asarray(r, int), np.asarray(c, int))), shape=(len(rows), n_items))


def test_inductive_codes_are_dlsh_of_the_mean_neighbour_vector(fitted: EMDE) -> None:
    """M′·Q: one neighbour gives its own codes exactly; several, the codebook's bucket of the
    normalised weighted mean of their Cleora vectors; no neighbour, -1."""
    assert set(fitted.graph_vectors_) == {"g", "s"}  # graph modalities keep their vectors; random has none
    codes = inductive_codes(fitted, _links([{45: 3.0}, {41: 1.0, 42: 3.0}, {}]))
    assert set(codes) == {"g", "s"}
    for name, c in codes.items():
        np.testing.assert_array_equal(c[0], fitted.codes_[name][45])
        q = fitted.graph_vectors_[name].astype(np.float32)
        mean = (q[41] + 3 * q[42]) / 4
        np.testing.assert_array_equal(c[1], fitted.codebooks_[name].encode((mean / np.linalg.norm(mean))[None])[0])
        assert (c[2] == -1).all()
    # a neighbour without a vector in a modality (no edge in training) is dropped there
    holed = copy.copy(fitted)
    holed.graph_vectors_ = {k: v.copy() for k, v in fitted.graph_vectors_.items()}
    holed.graph_vectors_["g"][7] = 0
    links = _links([{7: 1.0}, {7: 5.0, 45: 1.0}])
    before = links.copy()
    codes = inductive_codes(holed, links)
    assert (codes["g"][0] == -1).all() and (codes["s"][0] == fitted.codes_["s"][7]).all()
    np.testing.assert_array_equal(codes["g"][1], fitted.codes_["g"][45])
    assert (links != before).nnz == 0  # the caller's matrix is not modified
    with pytest.raises(ValueError, match="links has 3 columns but the model has 100 items"):
        inductive_codes(fitted, sp.csr_array((1, 3), dtype=np.float32))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite, non-negative"):
            inductive_codes(fitted, _links([{1: bad}]))


def test_interactions_move_a_new_item_from_its_title_to_where_it_is_used(fitted: EMDE) -> None:
    """Titled like taste 2 (cobalt) but used with taste 4 (ember) items: graph codes by M′·Q
    take it to taste 4; an untitled item with links joins by its links alone."""
    links = _links([{}, {83: 2.0, 84: 2.0, 85: 1.0}, {60: 1.0, 61: 2.0}, {}])
    ext, nbr, added = extend_emde(fitted, ["cobalt w45 new", "cobalt w45 new", None, None], _titles(),
                                  links=links, new_ids=["t", "tl", "l", "x"])
    assert added.tolist() == [True, True, True, False] and ext.item_ids_[100:] == ("t", "tl", "l")
    assert nbr[:, 0].tolist() == [45, 45, -1, -1]
    g = inductive_codes(fitted, links)
    for name in ("g", "s"):
        np.testing.assert_array_equal(ext.codes_[name][100], fitted.codes_[name][45])  # title only
        np.testing.assert_array_equal(ext.codes_[name][101], g[name][1])  # own graph codes
        np.testing.assert_array_equal(ext.codes_[name][102], g[name][2])
    np.testing.assert_array_equal(ext.codes_["r"][101], fitted.codes_["r"][45])  # non-graph: from the title
    np.testing.assert_array_equal(ext.codes_["r"][102], fitted.codes_["r"][61])  # ... or the strongest link
    in_cols, out_cols = fitted.item_columns({k: v[100:] for k, v in ext.codes_.items()})
    np.testing.assert_array_equal(ext.item_in_cols_[100:], in_cols)
    np.testing.assert_array_equal(ext.item_out_cols_[100:], out_cols)
    ext.decoder = "mean"  # placement by codes alone (the popularity term is pinned in test_emde)
    sim = {i: ext.similar_items(np.array([i], np.int32), 10)[0][0].tolist() for i in (45, 61, 100, 101, 102)}
    taste4 = {i: np.mean([j // 20 == 4 for j in ids]) for i, ids in sim.items()}
    assert set(sim[100]) - {45} == set(sim[45]) - {100}  # title only: its donor's neighbourhood
    assert taste4[101] >= 0.7 and taste4[100] <= 0.2  # used with taste 4: found among taste 4
    assert len(set(sim[102]) & set(sim[61])) >= 6  # untitled: placed next to its strongest link


def test_new_items_get_knn_neighbours_from_links_or_their_donor() -> None:
    """knn:* views: a new item's neighbour row is its donor's (title only) or its strongest
    links, normalised (as trained rows are); known items never point to new ones."""
    m = EMDE(_MODS, views=("session", "last", "knn:last"), knn_k=3, **_SMALL).fit(_planted_log())
    links = _links([{}, {83: 2.0, 84: 5.0, 85: 1.0, 86: 1.0}])
    ext, _, added = extend_emde(m, ["cobalt w45 new", None], _titles(), links=links)
    assert added.tolist() == [True, True] and ext.neighbours_.shape == (102, 102)
    nb = ext.neighbours_
    np.testing.assert_array_equal(nb[[100]].toarray()[0, :100], m.neighbours_[[45]].toarray()[0])  # the donor's
    row = nb[[101]].toarray()[0]
    assert np.flatnonzero(row).tolist() == [83, 84, 85]  # top 3 by count (ties: lower index)
    np.testing.assert_allclose(row[[83, 84, 85]], [2 / 8, 5 / 8, 1 / 8], rtol=1e-6)
    assert nb[:100, 100:].nnz == 0
    sims, _ = ext.similar_items(np.array([101], np.int32), 10)  # scorable with the neighbour view
    assert np.mean([i // 20 == 4 for i in sims[0].tolist()]) >= 0.6
