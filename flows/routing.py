"""Place each Kafka partition's stateful work on the worker that reads that partition.

Bytewax 0.21 gives a fixed-partitioned source's partitions to workers round-robin over their
sorted names (``"0-events"``, ``"1-events"``, ... : partition ``p`` is read by worker
``p % worker_count`` for fewer than ten partitions), but routes a stateful step's key to worker
``SipHash-1-3(key bytes + 0xFF) % worker_count`` (Rust's ``DefaultHasher`` over the key string, zero
keys). Keyed by the bare partition number (``"0"`` ... ``"3"``), all four partitions of the
default topic land on one worker of two: one worker applies every event while the other idles,
and every event crosses between workers. :func:`partition_key` picks, per partition, the first of
``"p"``, ``"p~1"``, ``"p~2"``, ... that routes to the worker reading the partition.

The worker count comes from the ``python -m bytewax.run`` command line the flow runs under
(``-w``, ``-a`` and their ``BYTEWAX_*`` environment variables; :func:`bytewax_worker_count`).
The key only decides placement: the state itself is keyed by partition on disk
(:func:`state.partition.partition_path`), so changing ``-w`` moves work, never state.
"""

from __future__ import annotations

import functools
import sys

__all__ = ["bytewax_route", "partition_key", "partition_of_key", "bytewax_worker_count", "source_part_name",
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
def partition_key(partition: int, worker_count: int) -> str:
    """Stateful-step key of Kafka ``partition`` that routes to worker ``partition % worker_count``.

    ``str(partition)`` when it routes there already (always for one worker), else the first
    ``f"{partition}~{n}"`` (n = 1, 2, ...) that does; :func:`partition_of_key` reads it back.

    Raises
    ------
    ValueError
        If ``partition < 0`` or ``worker_count < 1``.
    """
    if partition < 0:
        raise ValueError(f"partition must be >= 0; got {partition}")
    want = partition % worker_count if worker_count >= 1 else -1
    key, n = str(partition), 0
    while bytewax_route(key, worker_count) != want:  # ~worker_count tries on average
        n += 1
        key = f"{partition}~{n}"
    return key


def source_part_name(partition: int, topic: str, *, main: bool = True) -> str:
    """Name of a Kafka partition as a Bytewax source partition: ``"00003-events"``.

    Bytewax hands the sorted names out round-robin, so zero-padded numbers put partition ``p`` of
    the main topic on worker ``p % worker_count`` (where :func:`partition_key` sends its state);
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


def bytewax_worker_count() -> int:
    """Total Bytewax workers of the ``python -m bytewax.run`` this process runs under: workers per
    process (``-w``, ``BYTEWAX_WORKERS_PER_PROCESS``) times processes (``-a``, ``BYTEWAX_ADDRESSES``
    or the helm host file), parsed by Bytewax's own argument parser.

    1 when the flow is not run by ``bytewax.run`` (tests running a flow in process).
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or spec.name != "bytewax.run":
        return 1
    from bytewax.run import _parse_args  # the same parse bytewax.run did before it imported the flow

    args = _parse_args()
    processes = len([a for a in (args.addresses or "").split(";") if a.strip()]) or 1
    return max(1, args.workers_per_process or 1) * processes
