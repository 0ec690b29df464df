"""Score changed users with the active model, batched, and top up from popular items."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import numpy as np

from models.base import Histories
from models.threads import small_batch_threads
from operators.model_version import ModelVersion
from operators.sketch_state import SketchUpdater
from state.users import UserState

__all__ = ["TopN", "score_users", "encode_topn", "decode_topn", "recent_items", "shaped_ts", "POPULAR_KEY_PREFIX",
           "RECENT_ITEMS"]

POPULAR_KEY_PREFIX = "\x00popular:"  # user-topn key of a partition's popular list


class TopN(msgspec.Struct, omit_defaults=True):
    """A user's published recommendations (value of the compacted ``user-topn`` topic).

    ``source`` says where the items came from: ``model``, ``model+popular`` (topped up) or
    ``popular`` (no usable history). ``updated_ts`` is wall-clock epoch seconds of scoring;
    ``last_event_ts`` the event time of the newest event that shaped it. ``recent`` holds the
    user's recently touched items, newest first, distinct (the API's "last seen" scenario;
    absent in lists published before it existed).
    """

    user_id: str
    items: list[str]
    scores: list[float]
    source: str
    model_version: str | None
    updated_ts: float
    last_event_ts: float = 0.0
    recent: list[str] = msgspec.field(default_factory=list)


def shaped_ts(state: UserState) -> float:
    """Event time of the newest event that shaped a user's list: the newest kept history entry.

    Events of weight 0 (searches, served lists, impressions) neither enter the history nor
    trigger a rescore, so they must not set ``last_event_ts`` either: whether one arrived before
    the debounce scored the user would otherwise decide the published value.
    """
    return max(state.ts, default=0.0)


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(TopN)
_dec_json = msgspec.json.Decoder(TopN)


def encode_topn(t: TopN) -> bytes:
    """A ``user-topn`` value: MessagePack (a map of the fields; 17-36 % smaller than the JSON written
    before issue 14's start-up work, which every new API node reads once per user)."""
    return _enc.encode(t)


def decode_topn(raw: bytes) -> TopN:
    """Parse a ``user-topn`` value: MessagePack, or JSON (lists published, or stored in a serving
    store, before; a JSON object starts with ``{``, a MessagePack map never does).

    Raises
    ------
    msgspec.DecodeError
        If the value is neither (``msgspec.ValidationError`` if a field is missing or mistyped).
    """
    return _dec_json.decode(raw) if raw[:1] == b"{" else _dec.decode(raw)


RECENT_ITEMS = 20
"""Recent items published per user (``TopN.recent``)."""


def recent_items(history: list[str], k: int = RECENT_ITEMS) -> list[str]:
    """The last ``k`` distinct items of a history (oldest first), newest first.

    Examples
    --------
    >>> recent_items(["a", "b", "a", "c"], 2)
    ['c', 'a']
    """
    out: dict[str, None] = {}
    for item in reversed(history):
        if len(out) >= k:
            break
        out.setdefault(item, None)
    return list(out)


def _histories(states: list[UserState], index: Mapping[str, int]) -> Histories:
    """Each user's history as the version's item_idx, ids it does not know left out (one batch look-up)."""
    flat = [i for st in states for i in st.items]
    lookup = getattr(index, "lookup", None)  # IdIndex (ModelVersion.item_index): array operations
    pos = (lookup(flat) if lookup is not None
           else np.fromiter((index.get(i, -1) for i in flat), dtype=np.int64, count=len(flat)))
    owner = np.repeat(np.arange(len(states)), [len(st.items) for st in states])
    known = pos >= 0
    lens = np.bincount(owner[known], minlength=len(states))
    return Histories(indptr=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), items=pos[known].astype(np.int32),
                     ts=None)


_SCORE_CELLS = 1 << 23
"""Max (users x items) score cells held at once: users are scored in chunks of this size."""


def _recommend(version: ModelVersion, states: list[UserState], hist: Histories, n: int,
               sketcher: SketchUpdater | None) -> tuple[np.ndarray, np.ndarray]:
    """Batched top-``n``; models that score densely (``dense_scores``, see :class:`models.base.Recommender`)
    get chunks that keep the (users x items) score matrix under ``_SCORE_CELLS``."""
    n_items = max(len(version.item_ids), 1)
    dense = sketcher is not None or getattr(version.model, "dense_scores", True)
    step = max(1, _SCORE_CELLS // n_items) if dense else max(len(states), 1)
    ids = np.full((len(states), n), -1, np.int32)
    scores = np.full((len(states), n), -np.inf, np.float32)
    for lo in range(0, len(states), step):
        hi = min(len(states), lo + step)
        with small_batch_threads(hi - lo):  # an event's few users: one kernel thread (models.threads)
            if sketcher is not None:
                ids[lo:hi], scores[lo:hi] = version.model.recommend_sketches(sketcher.matrix(states[lo:hi]), n)
            else:
                sub = Histories(indptr=hist.indptr[lo:hi + 1] - hist.indptr[lo],
                                items=hist.items[hist.indptr[lo]:hist.indptr[hi]])
                ids[lo:hi], scores[lo:hi] = version.model.recommend(sub, n)
    return ids, scores


def score_users(
    users: dict[str, UserState],
    version: ModelVersion | None,
    popular: tuple[list[str], np.ndarray],
    n: int,
    now_ts: float,
    sketcher: SketchUpdater | None = None,
) -> list[TopN]:
    """One batched ``recommend`` call for all ``users``; lists shorter than ``n`` are topped up.

    Parameters
    ----------
    users : dict of user_id to UserState
        Users whose state changed in this batch (each is scored once: the debounce).
    version : ModelVersion or None
        Active model; ``None`` before the first training (popular only).
    popular : (list of item_id, float32 scores)
        Popularity ranking of the partition, best first.
    n : int
        Items per list.
    now_ts : float
        Wall-clock epoch seconds stamped on the lists.
    sketcher : SketchUpdater, optional
        When the model is EMDE: score the users' stored sketches (``recommend_sketches``)
        instead of rebuilding them from histories.
    """
    uids = list(users)
    states = [users[u] for u in uids]
    pop_ids, pop_scores = popular
    out: list[TopN] = []
    if version is not None and uids:
        hist = _histories(states, version.item_index)
        has_hist = np.diff(hist.indptr) > 0
        ids, scores = _recommend(version, states, hist, n, sketcher)
    else:
        ids = scores = None
        has_hist = np.zeros(len(uids), dtype=bool)
    # Python lists once per batch (indexing them per item is ~10x cheaper than numpy scalars)
    id_rows = ids.tolist() if ids is not None else []
    score_rows = scores.tolist() if scores is not None else []
    item_ids = version.item_ids if version is not None else []
    pop_pairs = list(zip(pop_ids, pop_scores.tolist(), strict=False))
    for q, uid in enumerate(uids):
        items: list[str] = []
        vals: list[float] = []
        source = "popular"
        if ids is not None and has_hist[q]:
            kept = [(item_ids[i], v) for i, v in zip(id_rows[q], score_rows[q], strict=True) if i >= 0]
            items = [i for i, _ in kept]
            vals = [v for _, v in kept]
            source = "model"
        if len(items) < n:
            seen = set(items)
            extra = [(i, s) for i, s in pop_pairs if i not in seen][: n - len(items)]
            from_model = bool(items)
            if extra and from_model:
                source = "model+popular"
            items += [i for i, _ in extra]
            vals += [0.0 if from_model else float(s) for _, s in extra]
        out.append(TopN(user_id=uid, items=items, scores=vals, source=source,
                        model_version=version.version if version else None,
                        updated_ts=now_ts, last_event_ts=shaped_ts(states[q]), recent=recent_items(states[q].items)))
    return out
