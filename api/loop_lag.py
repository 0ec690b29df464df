"""How late the event loop runs what is due: the stalls behind a worker's tail latency.

Every request of a worker waits while its event loop is held: by a handler's own work, a fold, a
scan, a collector pause, or another thread holding the GIL. ``LoopLagProbe`` asks the loop to wake
it every ``interval_s`` and records how late the wake-up came (``fusionrec_api_event_loop_lag_seconds``
in ``/metrics``): a request arriving then waited about as long. ``CollectorPauses`` times every garbage
collection (``fusionrec_api_gc_pause_seconds``). With ``api.loop_stall_log_ms`` set, a watchdog thread
also logs where every thread's Python code was while the loop was held longer than that
(``StallWatchdog``), one warning per stall, naming a collection that ended within it: the place to look
first when p99.9 is far above p99. The probe costs ~100 wake-ups a second; the watchdog one more thread
waking every ``threshold / 4``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback

from prometheus_client import Histogram

__all__ = ["CollectorPauses", "LoopLagProbe", "StallWatchdog", "LAG_BUCKETS_S"]

log = logging.getLogger(__name__)

LAG_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
"""Histogram buckets of the event loop's lateness, seconds."""


class CollectorPauses:
    """Times every cyclic garbage collection (``gc.callbacks``), by generation, into ``histogram``
    (labelled ``generation``, seconds). A collection holds the GIL: every thread of the process,
    the event loop included, waits for it. ``last`` is the newest one: (generation, seconds, its end on
    ``time.monotonic()``, objects it found unreachable). ``install`` adds the callback, ``uninstall``
    removes it.
    """

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.last: tuple[int, float, float, int] | None = None
        self._started = 0.0

    def install(self) -> CollectorPauses:
        gc.callbacks.append(self._on_collect)
        return self

    def uninstall(self) -> None:
        if self._on_collect in gc.callbacks:
            gc.callbacks.remove(self._on_collect)

    def _on_collect(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        took = now - self._started
        generation = info["generation"]
        self.histogram.labels(generation=str(generation)).observe(took)
        self.last = (generation, took, time.monotonic(), info["collected"])


class StallWatchdog:
    """A daemon thread that logs the threads' stacks once per event-loop stall longer than ``threshold_s``.

    The loop's side calls ``beat(interval_s)`` whenever it runs, saying when it will run next; the thread
    checks every ``threshold_s / 4`` seconds how late that next run is. Python frames only: a stall inside
    one C call shows the line that called it. The thread samples only when the GIL is free, so a C call
    that holds the GIL is seen when it returns, or not at all if the loop runs first.
    """

    def __init__(self, threshold_s: float, main_thread_id: int | None = None,
                 collections: CollectorPauses | None = None) -> None:
        if threshold_s <= 0:
            raise ValueError(f"threshold_s must be > 0, got {threshold_s}")
        self.threshold_s = threshold_s
        self.collections = collections
        self.stalls = 0
        self._main = main_thread_id if main_thread_id is not None else threading.get_ident()
        self._due = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loop-stall-watchdog", daemon=True)

    def start(self) -> StallWatchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def beat(self, interval_s: float) -> None:
        """The loop ran just now and will run again in ``interval_s`` seconds (called on the loop)."""
        self._due = time.monotonic() + interval_s

    def _watch(self) -> None:
        reported = 0.0  # the due time whose stall was logged: one warning per stall
        while not self._stop.wait(self.threshold_s / 4):
            due = self._due
            late = time.monotonic() - due
            if late > self.threshold_s and due != reported:
                reported = due
                self.stalls += 1
                log.warning("event loop %.0f ms late so far%s; threads:\n%s", late * 1000, self._collection(due),
                            self.describe())

    def _collection(self, since: float) -> str:
        """What the collector did since ``since`` (its newest collection, when it ended after that)."""
        last = self.collections.last if self.collections is not None else None
        if last is None or last[2] < since:
            return ""
        generation, took, _, collected = last
        return f" (a generation-{generation} collection took {took * 1000:.0f} ms of it, {collected} objects freed)"

    def describe(self) -> str:
        """The newest frames of every thread but this one, the loop's thread first (a few lines each)."""
        frames = sys._current_frames()
        names = {t.ident: t.name for t in threading.enumerate()}
        me = threading.get_ident()
        parts = []
        for ident in sorted(frames, key=lambda i: i != self._main):
            if ident == me:
                continue
            stack = traceback.extract_stack(frames[ident])[-6:]
            where = "\n".join(f"    {f.filename}:{f.lineno} {f.name}" for f in stack)
            parts.append(f"  [{names.get(ident, ident)}{' (event loop)' if ident == self._main else ''}]\n{where}")
        return "\n".join(parts)


class LoopLagProbe:
    """Records the event loop's lateness in waking a sleeper every ``interval_s`` seconds.

    ``run_forever`` is a task on the loop it measures; each wake-up observes ``late = woke - due``
    (seconds, >= 0) into ``histogram`` and keeps the largest one in ``max_s``. A ``watchdog``, when given,
    is told the loop ran at every wake-up.
    """

    def __init__(self, histogram: Histogram, interval_s: float = 0.01, watchdog: StallWatchdog | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.histogram = histogram
        self.interval_s = interval_s
        self.watchdog = watchdog
        self.max_s = 0.0

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            late = max(loop.time() - due, 0.0)
            self.histogram.observe(late)
            self.max_s = max(self.max_s, late)
            if self.watchdog is not None:
                self.watchdog.beat(self.interval_s)
