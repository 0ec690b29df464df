"""Kafka partitions spread over a flow's processes; within a process one worker thread applies them."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, TestingSource, cluster_main

from flows.routing import (
    bytewax_route,
    bytewax_workers,
    parse_part_name,
    partition_key,
    partition_of_key,
    source_part_name,
)


class _Part(StatefulSourcePartition):
    def __init__(self, name: str) -> None:
        self.name, self.done = name, False

    def next_batch(self) -> list[tuple[str, int]]:
        if self.done:
            raise StopIteration
        self.done = True
        return [(self.name, threading.get_ident())]

    def snapshot(self) -> None:
        return None


class _Parts(FixedPartitionedSource):
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def list_parts(self) -> list[str]:
        return self.names

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(for_part)


def _placement(workers: int, n_partitions: int, key_of) -> list[tuple[int, int, int]]:  # noqa: ANN001
    """(partition, reading thread, applying thread) for every partition of a real Bytewax run."""
    names = [source_part_name(p, "events") for p in range(n_partitions)]
    names += [source_part_name(p, "served", main=False) for p in range(n_partitions)]
    out: list[tuple[int, int, int]] = []
    flow = Dataflow("placement")
    read = op.input("in", flow, _Parts(names))
    mains = op.filter("main", read, lambda x: not x[0].startswith("~"))
    keyed = op.map("key", mains, lambda x: (key_of(parse_part_name(x[0])[0]), (parse_part_name(x[0])[0], x[1])))
    applied = op.stateful_map("apply", keyed, lambda s, v: (s, (v[0], v[1], threading.get_ident())))
    op.output("out", op.key_rm("rm", applied), TestingSink(out))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return sorted(out)


@pytest.mark.parametrize("workers", [2, 3])
def test_one_process_applies_every_partition_on_one_worker_thread(workers: int) -> None:
    """The models a process loads are shared by its worker threads and not safe to score from two
    at once (spread over threads, online lists matched offline ones for 90 % of pairs): ``-w N``
    reads and parses on N threads, and applies on one."""
    placed = _placement(workers, 8, lambda p: partition_key(p, 1, workers))
    assert [p for p, _, _ in placed] == list(range(8))
    assert len({a for _, _, a in placed}) == 1
    assert len({r for _, r, _ in placed}) == workers  # reading is spread


@pytest.mark.parametrize(("processes", "per_process"), [(2, 1), (3, 1), (2, 2), (4, 3)])
def test_partitions_spread_over_processes_on_each_ones_first_worker(processes: int, per_process: int) -> None:
    """With ``-i 0/1 -a "h1;h2"`` every partition went to process 1; now partition p goes to process
    p % processes (its first worker, index (p % processes) * workers_per_process)."""
    for p in range(16):
        key = partition_key(p, processes, per_process)
        assert bytewax_route(key, processes * per_process) == (p % processes) * per_process
        assert partition_of_key(key) == p
    placed = _placement(processes, 8, lambda p: partition_key(p, processes, 1))  # workers stand in for processes
    assert all(reader == applier for _, reader, applier in placed)  # one worker per process: no exchange
    assert len({a for _, _, a in placed}) == processes


def test_bytewax_route_predicts_bytewax_s_own_key_routing() -> None:
    """The bare partition numbers (the keys before this module) all went to one worker of two:
    the same grouping :func:`bytewax_route` computes."""
    placed = _placement(2, 4, str)
    appliers = [a for _, _, a in placed]
    assert len(set(appliers)) == 1  # the imbalance the keys fix
    for workers in (2, 3):
        keys = [str(i) for i in range(12)] + [f"p{i}" for i in range(8)]
        flow = Dataflow("route")
        out: list[tuple[str, int]] = []
        keyed = op.key_on("k", op.input("in", flow, TestingSource(keys)), lambda x: x)
        applied = op.stateful_map("m", keyed, lambda s, v: (s, threading.get_ident()))
        op.output("out", applied, TestingSink(out))
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
        thread_of = dict(out)
        for a in keys:
            for b in keys:
                assert (thread_of[a] == thread_of[b]) == (bytewax_route(a, workers) == bytewax_route(b, workers))


def test_keys_and_part_names_read_back() -> None:
    assert partition_key(7) == "7"
    assert parse_part_name(source_part_name(12, "events")) == (12, "events")
    assert parse_part_name(source_part_name(3, "served-lists", main=False)) == (3, "served-lists")
    assert parse_part_name("3-events") == (3, "events")
    assert sorted(source_part_name(p, "t") for p in range(12)) == [source_part_name(p, "t") for p in range(12)]
    with pytest.raises(ValueError, match="worker_count"):
        bytewax_route("0", 0)
    with pytest.raises(ValueError, match="partition"):
        partition_key(-1, 2)
    with pytest.raises(ValueError, match="processes"):
        partition_key(1, 0)


def test_worker_count_comes_from_the_bytewax_run_command_line(tmp_path: Path) -> None:
    assert bytewax_workers() == (1, 1)  # not under bytewax.run
    (tmp_path / "count_probe.py").write_text(
        "import bytewax.operators as op\n"
        "from bytewax.dataflow import Dataflow\n"
        "from bytewax.testing import TestingSource\n"
        "from bytewax.connectors.stdio import StdOutSink\n"
        "from flows.routing import bytewax_workers\n"
        "flow = Dataflow('probe')\n"
        "op.output('out', op.input('in', flow, TestingSource([f'workers={bytewax_workers()}'])), StdOutSink())\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "bytewax.run", "count_probe:flow", "-w", "3"], cwd=tmp_path,
                          env={"PYTHONPATH": f"{tmp_path}:{root}", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "workers=(1, 3)"
