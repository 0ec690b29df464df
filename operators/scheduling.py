"""CPU weight of a process's scheduling autogroup (Linux): how the write path keeps its share on one box.

With ``kernel.sched_autogroup_enabled = 1`` (most desktop and many server kernels), the scheduler
shares the CPU fairly between *sessions* first, and a thread's ``nice`` only orders it inside its
own session. fusionrec's components each run in their own session (``fusionrec run`` starts them
with ``start_new_session``), so on one machine the API, the flow, the broker and any load generator
get equal shares whatever their threads' nice. Only the autogroup's own nice
(``/proc/<pid>/autogroup``, see ``sched(7)``) moves that: a process may raise it (lower its weight)
without privileges. ``api.autogroup_nice`` uses it to give the API's session a smaller share, so the
flow keeps event -> visible fresh under serving load (bench/RESULTS.md, issue 14).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["set_autogroup_nice", "set_own_session_nice", "leads_own_session", "autogroup_nice", "confine_to_cpus",
           "one_box_trainer_cpus", "ONE_BOX_API_NICE", "ONE_BOX_TRAINER_NICE"]

log = logging.getLogger(__name__)

ONE_BOX_API_NICE = 2
"""``api.autogroup_nice`` when every component shares one machine (``fusionrec run``, ``bench/api.py``) and
none is configured. At 1,000 events/s under saturating serving load on 2 quiet cores: event -> visible p99
0.40-0.63 s (3 runs) against 0.67-1.28 s unchanged (6 runs), for ~10 % fewer recommendations per second
(median of runs 1,639 against 1,827); 4 gave 0.25-0.35 s for ~37 % fewer (bench/RESULTS.md, issue 14)."""

ONE_BOX_TRAINER_NICE = 19
"""``trainer.autogroup_nice`` under ``fusionrec run`` when none is configured: the lowest CPU weight (15 against
1,024 at nice 0), so the gated trainer's fits (minutes of both cores for the fusion) take what the flow and the API
leave instead of half the box. Measured (session 31, quiet 2-core box, one run each): while the fusion trained,
event -> visible p50 / p99 0.35 / 3.0 s at 19 against 0.43 / 3.5 s at 0 (0.11 / 0.23 s before the run), the run
6.0 min against 4.4: the weight alone helps little. With ``trainer.cpus`` keeping one CPU free as well
(``one_box_trainer_cpus``, session 32): p50 / p99 0.19 / 0.54 s, against 0.30 / 2.8 s on both CPUs (bench/RESULTS.md)."""

SELF_AUTOGROUP = Path("/proc/self/autogroup")


def autogroup_nice(path: Path = SELF_AUTOGROUP) -> int | None:
    """The nice of the autogroup ``path`` describes (``/autogroup-42 nice 3`` -> 3); None if unreadable.

    Parameters
    ----------
    path : Path
        ``/proc/<pid>/autogroup`` (default: this process's).
    """
    try:
        return int(path.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def set_autogroup_nice(nice: int, path: Path = SELF_AUTOGROUP) -> bool:
    """Set the nice (-20..19) of this process's autogroup, i.e. of its whole session; True if it took.

    Every process of the session shares the new weight (uvicorn's workers with their parent).
    Raising it needs no privilege; lowering it below the current value may (``EPERM``). A kernel
    without autogroups (no ``path``) or a refusal is logged once at warning and returns False: the
    process runs on at its current weight.

    Raises
    ------
    ValueError
        If ``nice`` is outside -20..19.
    """
    if not -20 <= nice <= 19:
        raise ValueError(f"autogroup nice must be in -20..19; got {nice}")
    try:
        path.write_text(f"{nice}\n")
    except OSError as exc:
        log.warning("cannot set the session's autogroup nice to %d (%s): CPU shares are left as they are", nice, exc)
        return False
    return autogroup_nice(path) == nice


def leads_own_session() -> bool:
    """True if this process's session is its own: led by this process, or by its parent running the same
    executable (uvicorn's master of its workers). False when it was started inside another program's
    session, e.g. from an interactive shell, whose whole session an autogroup nice would slow down too."""
    sid = os.getsid(0)
    if sid not in (os.getpid(), os.getppid()):
        return False
    try:
        return os.path.realpath(f"/proc/{sid}/exe") == os.path.realpath("/proc/self/exe")
    except OSError:
        return False


def set_own_session_nice(nice: int, what: str = "api.autogroup_nice") -> bool:
    """``set_autogroup_nice`` if this process leads its own session (``leads_own_session``); else nothing is
    changed and a warning says to start it in its own session (``setsid fusionrec serve``, as ``fusionrec
    run`` does): the nice would hold for the shell that started it and for everything else it starts.

    Raises
    ------
    ValueError
        If ``nice`` is outside -20..19.
    """
    if not leads_own_session():
        log.warning("%s = %d not applied: this process does not lead its own session, so it would slow down "
                    "the session that started it (a shell and what else it runs) and outlive it; start it with "
                    "setsid (e.g. `setsid fusionrec serve`), as fusionrec run starts each component", what, nice)
        return False
    return set_autogroup_nice(nice)


def one_box_trainer_cpus(n_cpus: int | None = None) -> int | None:
    """``trainer.cpus`` under ``fusionrec run`` when none is configured: every CPU this process may use but one, so
    one CPU is never the trainer's and the flow, the broker and the API find it free when an event wakes them; None
    (no limit) with fewer than 2.

    Measured on a quiet 2-core box (session 32, ``fusionrec run``, an event -> visible probe every second, two
    burners in their own session at autogroup nice 19): with the burners on both CPUs, p50 / p99 0.24 / 0.74 s (CPU
    loops) and 0.29 / 1.70 s (memory copies); on one CPU, 0.17 / 0.42 s and 0.28 / 1.13 s; nothing, 0.11 / 0.21 s
    (bench/RESULTS.md, "Event -> visible while `make run`'s gated trainer fits the fusion")."""
    n = len(os.sched_getaffinity(0)) if n_cpus is None else n_cpus
    return n - 1 if n >= 2 else None


def confine_to_cpus(n: int) -> set[int]:
    """Run this process, and the threads and processes it starts from now on, on at most ``n`` of the CPUs it may
    use now: the highest-numbered ones (``sched_setaffinity``; Linux). Threads started before keep their CPUs, so
    call it first thing. Returns the CPUs it now runs on (all of them when ``n`` is not smaller, or when the
    kernel refuses: logged once at warning).

    Raises
    ------
    ValueError
        If ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"the number of CPUs must be >= 1; got {n}")
    allowed = sorted(os.sched_getaffinity(0))
    if n >= len(allowed):
        return set(allowed)
    keep = set(allowed[-n:])
    try:
        os.sched_setaffinity(0, keep)
    except OSError as exc:
        log.warning("cannot confine this process to CPUs %s (%s): it runs on %s", sorted(keep), exc, allowed)
        return set(allowed)
    return keep
