"""Duplicate ``event_id``s per user: what producers' retries re-send within minutes is skipped.

The guarantee: an event whose ``event_id`` was applied for the same user is skipped while the
first copy's event time lies within ``window_s`` of the user's newest event time, or while it is
among the user's last ``keep_min`` events — whichever holds longer — up to ``keep_max`` ids per
user (a user sending more than that within the window keeps only the newest ``keep_max``).
Everything depends on the events alone (no wall clock), so a replay after ``kill -9`` skips the
same ones.
"""

from __future__ import annotations

__all__ = ["remember_event", "DEFAULT_WINDOW_S", "DEFAULT_KEEP_MIN", "DEFAULT_KEEP_MAX"]

DEFAULT_WINDOW_S = 900.0
DEFAULT_KEEP_MIN = 64
DEFAULT_KEEP_MAX = 2000


def remember_event(ids: list[str], tss: list[float], event_id: str, ts: float, newest_ts: float,
                   window_s: float = DEFAULT_WINDOW_S, keep_min: int = DEFAULT_KEEP_MIN,
                   keep_max: int = DEFAULT_KEEP_MAX) -> bool:
    """Record ``event_id`` (event time ``ts``) in a user's remembered ids; False if it is a duplicate.

    Parameters
    ----------
    ids, tss : list of str, list of float
        The user's remembered event ids and their event times (epoch seconds), oldest first;
        changed in place. ``tss`` may be shorter than ``ids`` (states written before event times
        were kept): the missing times count as ``ts``.
    event_id : str
        The event's id.
    ts, newest_ts : float
        The event's time and the user's newest event time including it (epoch seconds).
    window_s : float
        Ids whose event time is within this of ``newest_ts`` are kept, seconds.
    keep_min, keep_max : int
        The last ``keep_min`` ids are always kept; never more than ``keep_max``.
    """
    if event_id in ids:
        return False
    if len(tss) < len(ids):
        tss[:0] = [ts] * (len(ids) - len(tss))
    ids.append(event_id)
    tss.append(ts)
    horizon = newest_ts - window_s
    drop = 0
    n = len(ids)
    while n - drop > keep_min and (n - drop > keep_max or tss[drop] < horizon):
        drop += 1
    if drop:
        del ids[:drop], tss[:drop]
    return True
