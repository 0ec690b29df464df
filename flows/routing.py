"""Spread Kafka partitions' stateful work over a flow's processes, one worker thread per process.

Bytewax 0.21 routes a stateful step's key to worker ``SipHash-1-3(key bytes + 0xFF) % workers``
(Rust's ``DefaultHasher`` over the key string, zero keys; :func:`bytewax_route`). Keyed by the
bare partition number (``"0"`` ... ``"3"``), all four partitions of the default topic landed on one
worker of two: with ``-i 0/1 -a "h1;h2"``, one process applied every event while the other idled.
:func:`partition_key` picks, per partition, the first of ``"p"``, ``"p~1"``, ``"p~2"``, ... that
routes to the first worker of process ``p % processes``. Within a process all partitions stay on
one worker thread (the models it loads are shared by its threads; see :func:`partition_key`).

Source partitions are handed out round-robin over their sorted names (:func:`source_part_name`
zero-pads them, so partition ``p`` of the main topic is read by worker ``p % workers``: with one
worker per process, the process that applies it).

The worker layout comes from the ``python -m bytewax.run`` command line the flow runs under
(``-w``, ``-a`` and their ``BYTEWAX_*`` environment variables; :func:`bytewax_workers`).
The key only decides placement: the state itself is keyed by partition on disk
(:func:`state.partition.partition_path`), so changing ``-w`` moves work, never state.
"""

from __future__ import annotations

import functools
import sys

__all__ = ["bytewax_route", "partition_key", "partition_of_key", "bytewax_workers", "source_part_name",
           "parse_part_name"]

_M64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def _siphash13(data: bytes) -> int:
    """SipHash-1-3 with zero keys (Rust's ``std::collections::hash_map::DefaultHasher::new()``)."""
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573

    def sip_round() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _M64
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _M64
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _M64
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _M64
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        sip_round()
        v0 ^= m
    b = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= b
    sip_round()
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):
        sip_round()
    return v0 ^ v1 ^ v2 ^ v3


def bytewax_route(key: str, worker_count: int) -> int:
    """The worker (0-based, over all processes) Bytewax 0.21 routes a stateful step's ``key`` to.

    Raises
    ------
    ValueError
        If ``worker_count < 1``.
    """
    if worker_count < 1:
        raise ValueError(f"worker_count must be >= 1; got {worker_count}")
    return _siphash13(key.encode() + b"\xff") % worker_count


@functools.lru_cache(maxsize=4096)
def partition_key(partition: int, processes: int = 1, workers_per_process: int = 1) -> str:
    """Stateful-step key of Kafka ``partition``: it routes to the first worker of process
    ``partition % processes``.

    Partitions are spread over processes, and within a process every partition is applied by one
    worker thread: the model objects a process loads (``WorkerResources``) are shared by its worker
    threads and are not safe to score from two threads at once (spread over the threads of one
    process, the fusion's online lists matched its offline ones for 90 % of pairs, not 100 %; and
    under the GIL two scoring threads ran slower than one). ``-w`` above 1 still reads and parses
    partitions in parallel. The key is ``str(partition)`` when it routes there already, else the
    first ``f"{partition}~{n}"`` (n = 1, 2, ...) that does; :func:`partition_of_key` reads it back.

    Raises
    ------
    ValueError
        If ``partition < 0``, ``processes < 1`` or ``workers_per_process < 1``.
    """
    if partition < 0 or processes < 1 or workers_per_process < 1:
        raise ValueError(f"partition must be >= 0 and processes, workers_per_process >= 1; got {partition}, "
                         f"{processes}, {workers_per_process}")
    workers = processes * workers_per_process
    want = (partition % processes) * workers_per_process
    key, n = str(partition), 0
    while bytewax_route(key, workers) != want:  # ~workers tries on average
        n += 1
        key = f"{partition}~{n}"
    return key


def source_part_name(partition: int, topic: str, *, main: bool = True) -> str:
    """Name of a Kafka partition as a Bytewax source partition: ``"00003-events"``.

    Bytewax hands the sorted names out round-robin, so zero-padded numbers put partition ``p`` of
    the main topic on worker ``p % worker_count`` (with one worker per process, where
    :func:`partition_key` sends its state);
    a second topic read alongside (``main=False``) sorts after all of the main topic's
    (``"~00003-served"``), on the same worker when the partition count is a multiple of the
    worker count.
    """
    return f"{'' if main else '~'}{partition:05d}-{topic}"


def parse_part_name(name: str) -> tuple[int, str]:
    """``(partition, topic)`` of a :func:`source_part_name` (older ``"3-events"`` names too)."""
    idx, topic = name.lstrip("~").split("-", 1)
    return int(idx), topic


def partition_of_key(key: str) -> int:
    """The partition a :func:`partition_key` names (``"3"`` or ``"3~2"`` -> 3)."""
    return int(key.split("~", 1)[0])


def bytewax_workers() -> tuple[int, int]:
    """``(processes, workers_per_process)`` of the ``python -m bytewax.run`` this process runs under:
    ``-a`` addresses (``BYTEWAX_ADDRESSES`` or the helm host file) and ``-w``
    (``BYTEWAX_WORKERS_PER_PROCESS``), parsed by Bytewax's own argument parser.

    ``(1, 1)`` when the flow is not run by ``bytewax.run`` (tests running a flow in process).
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or spec.name != "bytewax.run":
        return 1, 1
    from bytewax.run import _parse_args  # the same parse bytewax.run did before it imported the flow

    args = _parse_args()
    processes = len([a for a in (args.addresses or "").split(";") if a.strip()]) or 1
    return processes, max(1, args.workers_per_process or 1)
