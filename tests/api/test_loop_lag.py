"""The event loop's lateness is measured (``LoopLagProbe``), and a stall longer than the threshold is logged
with the stack that held the loop (``StallWatchdog``)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest
from prometheus_client import CollectorRegistry, Histogram

from api.loop_lag import LAG_BUCKETS_S, CollectorPauses, LoopLagProbe, StallWatchdog


def _histogram() -> Histogram:
    return Histogram("lag_seconds", "lag", registry=CollectorRegistry(), buckets=LAG_BUCKETS_S)


def _count_at_most(h: Histogram, le: float) -> float:
    """Observations <= ``le`` (the cumulative bucket)."""
    for sample in h.collect()[0].samples:
        if sample.name.endswith("_bucket") and float(sample.labels["le"]) == le:
            return sample.value
    raise AssertionError(f"no bucket {le}")


def _count(h: Histogram) -> float:
    return next(s.value for s in h.collect()[0].samples if s.name.endswith("_count"))


def _hold_the_loop_for_a_while() -> None:
    time.sleep(0.12)  # a handler doing 120 ms of work on the loop


async def _run_probe(probe: LoopLagProbe, hold: bool) -> None:
    task = asyncio.create_task(probe.run_forever())
    await asyncio.sleep(0.1)
    if hold:
        _hold_the_loop_for_a_while()
    await asyncio.sleep(0.1)
    task.cancel()


def test_a_held_loop_is_measured_as_late_by_about_as_long() -> None:
    quiet, held = _histogram(), _histogram()
    asyncio.run(_run_probe(LoopLagProbe(quiet, interval_s=0.01), hold=False))
    probe = LoopLagProbe(held, interval_s=0.01)
    asyncio.run(_run_probe(probe, hold=True))
    assert _count(quiet) >= 5 and _count(held) >= 5
    assert 0.09 <= probe.max_s <= 0.5  # the 120 ms stall less the part of the 10 ms sleep it overlapped
    assert _count(held) - _count_at_most(held, 0.05) >= 1  # in a bucket above 50 ms
    assert _count(quiet) - _count_at_most(quiet, 0.05) == 0  # an idle loop is not late by that much


def test_a_stall_is_logged_once_with_the_stack_that_held_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    watchdog = StallWatchdog(0.03).start()
    try:
        with caplog.at_level(logging.WARNING, logger="api.loop_lag"):
            asyncio.run(_run_probe(LoopLagProbe(_histogram(), interval_s=0.01, watchdog=watchdog), hold=True))
    finally:
        watchdog.stop()  # the loop is gone: no more beats
    stalls = [r.getMessage() for r in caplog.records if "event loop" in r.getMessage() and "late so far" in r.getMessage()]
    assert len(stalls) == 1 and watchdog.stalls == 1, stalls  # one warning per stall, not one per check
    assert "_hold_the_loop_for_a_while" in stalls[0] and "(event loop)" in stalls[0], stalls[0]


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        LoopLagProbe(_histogram(), interval_s=0)
    with pytest.raises(ValueError, match="threshold_s"):
        StallWatchdog(0)


def test_collections_are_timed_by_generation() -> None:
    h = Histogram("gc_seconds", "gc", ["generation"], registry=CollectorRegistry(), buckets=LAG_BUCKETS_S)
    pauses = CollectorPauses(h).install()
    try:
        garbage = [[] for _ in range(1000)]
        for a, b in zip(garbage, garbage[1:]):  # cycles only the collector frees
            a.append(b)
            b.append(a)
        del garbage, a, b
        gc.collect(2)
    finally:
        pauses.uninstall()
    assert pauses.last is not None and pauses.last[0] == 2 and pauses.last[3] >= 1000
    counts = {s.labels["generation"]: s.value for s in h.collect()[0].samples if s.name.endswith("_count")}
    assert counts.get("2", 0) >= 1
    assert pauses._on_collect not in gc.callbacks
