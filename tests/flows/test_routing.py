"""Each Kafka partition is applied by the worker that reads it, spread over all workers."""

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
    bytewax_worker_count,
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


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_partitions_are_applied_where_they_are_read_and_spread_over_the_workers(workers: int) -> None:
    placed = _placement(workers, 8, lambda p: partition_key(p, workers))
    assert [p for p, _, _ in placed] == list(range(8))
    assert all(reader == applier for _, reader, applier in placed)  # no event crosses between workers
    appliers = [a for _, _, a in placed]
    assert len(set(appliers)) == workers  # every worker applies partitions
    assert all(appliers[p] == appliers[p % workers] for p in range(8))  # partition p on worker p % workers


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
    for workers in (1, 2, 5, 16):
        for p in range(40):
            key = partition_key(p, workers)
            assert partition_of_key(key) == p and bytewax_route(key, workers) == p % workers
    assert partition_key(7, 1) == "7"
    assert parse_part_name(source_part_name(12, "events")) == (12, "events")
    assert parse_part_name(source_part_name(3, "served-lists", main=False)) == (3, "served-lists")
    assert parse_part_name("3-events") == (3, "events")
    assert sorted(source_part_name(p, "t") for p in range(12)) == [source_part_name(p, "t") for p in range(12)]
    with pytest.raises(ValueError, match="worker_count"):
        bytewax_route("0", 0)
    with pytest.raises(ValueError, match="partition"):
        partition_key(-1, 2)


def test_worker_count_comes_from_the_bytewax_run_command_line(tmp_path: Path) -> None:
    assert bytewax_worker_count() == 1  # not under bytewax.run
    (tmp_path / "count_probe.py").write_text(
        "import bytewax.operators as op\n"
        "from bytewax.dataflow import Dataflow\n"
        "from bytewax.testing import TestingSource\n"
        "from bytewax.connectors.stdio import StdOutSink\n"
        "from flows.routing import bytewax_worker_count\n"
        "flow = Dataflow('probe')\n"
        "op.output('out', op.input('in', flow, TestingSource([f'workers={bytewax_worker_count()}'])), StdOutSink())\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "bytewax.run", "count_probe:flow", "-w", "3"], cwd=tmp_path,
                          env={"PYTHONPATH": f"{tmp_path}:{root}", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["workers=3"]
