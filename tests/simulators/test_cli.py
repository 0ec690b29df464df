"""``fusionrec simulate`` and ``fusionrec replay`` against the real test broker."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

import flows.commands.simulate  # noqa: F401  (registers the commands)
from flows.cli import app
from simulators.shop import SyntheticShop

pytestmark = pytest.mark.integration


def _consume(bootstrap: str, topic: str, partitions: int, expected: int) -> list:
    import time

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cli-test", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list = []
    deadline = time.monotonic() + 20
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(1000, timeout=0.5) if m.error() is None)
    finally:
        consumer.close()
    return out


def _records(bootstrap: str, topic: str, expected: int) -> dict[str, object]:
    """Each key's value on a one-partition topic (decoded JSON; None for a tombstone), ``expected`` records read."""
    return {m.key().decode(): (orjson.loads(m.value()) if m.value() is not None else None)
            for m in _consume(bootstrap, topic, 1, expected)}


def _rejected_lines(out: str) -> list[str]:
    """The ``rejected <file>:<line>: <reason>`` lines ``fusionrec catalog`` printed."""
    return [line.strip() for line in out.splitlines() if line.strip().startswith("rejected ")]


def test_simulate_sends_catalog_then_events(tansu_bootstrap: str, make_topic) -> None:
    events, catalog = make_topic("sim-events", 2), make_topic("sim-catalog", 1)
    args = [
        "simulate",
        "--brokers",
        tansu_bootstrap,
        "--events",
        "500",
        "--rate",
        "0",
        "--seed",
        "3",
        "--n-items",
        "100",
        "--n-users",
        "30",
        "--topic",
        events,
        "--catalog-topic",
        catalog,
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sent 500 events" in result.output and "errors 0" in result.output
    msgs = _consume(tansu_bootstrap, events, 2, 500)
    assert len(msgs) == 500
    shop = SyntheticShop(n_items=100, n_users=30, seed=3)
    want = {e.event_id: e.user_id for e in shop.events(500, rate_per_s=100.0)}  # the --rate 0 ts spacing
    got = {orjson.loads(m.value())["event_id"]: m.key().decode() for m in msgs}
    assert got == want  # same seed -> same events, keyed by user
    items = _consume(tansu_bootstrap, catalog, 1, 100)
    assert len(items) >= 100
    assert [m.key().decode() for m in items[:100]] == [f"i{i:06d}" for i in range(100)]


def test_replay_sessionrec_max_rate(tansu_bootstrap: str, make_topic, tmp_path: Path) -> None:
    topic = make_topic("replay-events", 3)
    p = tmp_path / "clicks.txt"
    p.write_text(
        "SessionId\tItemId\tTime\n" + "".join(f"{s}\t{100 + s % 7}\t{1000.0 + s}\n" for s in range(50))
    )
    args = [
        "replay",
        str(p),
        "--format",
        "sessionrec",
        "--max-rate",
        "--limit",
        "40",
        "--brokers",
        tansu_bootstrap,
        "--topic",
        topic,
        "--no-progress",
        "--now",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "replayed 40 events" in result.output
    msgs = _consume(tansu_bootstrap, topic, 3, 40)
    assert sorted(m.key().decode() for m in msgs) == sorted(str(s) for s in range(40))
    ts = sorted(orjson.loads(m.value())["ts"] for m in msgs)
    assert ts[-1] - ts[0] == pytest.approx(39.0) and ts[0] > 1.7e9


def test_replay_rejects_unknown_format_and_two_paces(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text("SessionId\tItemId\tTime\n")
    result = CliRunner().invoke(app, ["replay", str(p), "--format", "csv"])
    assert result.exit_code == 2 and "must be one of" in result.output
    result = CliRunner().invoke(app, ["replay", str(p), "--speed", "2", "--max-rate"])
    assert result.exit_code == 2 and "give one of --speed, --rate, --max-rate" in result.output


def test_catalog_publishes_items_and_names_bad_lines(tansu_bootstrap: str, make_topic, tmp_path: Path,
                                                     monkeypatch) -> None:
    import flows.commands.platform  # noqa: F401  (registers the command)

    topic = make_topic("cli-catalog", 1)
    monkeypatch.setenv("FUSIONREC_KAFKA__BROKERS", tansu_bootstrap)
    monkeypatch.setenv("FUSIONREC_KAFKA__CATALOG_TOPIC", topic)
    good = tmp_path / "items.jsonl"
    good.write_bytes(b'{"item_id": "n-1", "title": "Red wool scarf", "price": 9.5}\n\n{"item_id": "n-2"}\n')
    result = CliRunner().invoke(app, ["catalog", str(good)])
    assert result.exit_code == 0, result.output
    assert "published 2 items" in result.output
    got = _records(tansu_bootstrap, topic, 2)
    assert got == {"n-1": {"item_id": "n-1", "title": "Red wool scarf", "price": 9.5}, "n-2": {"item_id": "n-2"}}



def _publish_catalog(bootstrap: str, make_topic, monkeypatch, path: Path, topic_name: str, lines: bytes):
    """``fusionrec catalog <path>`` with ``lines`` into a new one-partition topic: (result, topic)."""
    import flows.commands.platform  # noqa: F401  (registers the command)

    topic = make_topic(topic_name, 1)
    monkeypatch.setenv("FUSIONREC_KAFKA__BROKERS", bootstrap)
    monkeypatch.setenv("FUSIONREC_KAFKA__CATALOG_TOPIC", topic)
    path.write_bytes(lines)
    return CliRunner().invoke(app, ["catalog", str(path)]), topic


def test_catalog_reads_a_pipe(tansu_bootstrap: str, make_topic, tmp_path: Path, monkeypatch) -> None:
    """``fusionrec catalog /dev/stdin`` (or ``<(...)``): the command reads its file twice, and a pipe is empty
    the second time; it published nothing, with exit status 0 (a fresh-user try)."""
    import os
    import threading

    import flows.commands.platform  # noqa: F401  (registers the command)

    topic = make_topic("cli-catalog-pipe", 1)
    monkeypatch.setenv("FUSIONREC_KAFKA__BROKERS", tansu_bootstrap)
    monkeypatch.setenv("FUSIONREC_KAFKA__CATALOG_TOPIC", topic)
    fifo = tmp_path / "items.pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes,
                              args=(b'{"item_id": "p1", "price": 1}\n{"item_id": "p2", "price": "x"}\n',))
    writer.start()
    result = CliRunner().invoke(app, ["catalog", str(fifo)])
    writer.join(10)
    assert result.exit_code == 0, result.output
    assert "published 1 items" in result.output and "rejected 1 lines" in result.output, result.output
    assert f"rejected {fifo}:2: item 'p2'" in result.output
    assert _records(tansu_bootstrap, topic, 1) == {"p1": {"item_id": "p1", "price": 1}}


def test_catalog_rejects_a_record_too_large_to_send_and_publishes_the_rest(tansu_bootstrap: str, make_topic,
                                                                           tmp_path: Path, monkeypatch) -> None:
    """A 2.7 MB line (a huge vector, which the rule takes without ``api.vector_dim``) stopped the whole file
    with one error line and nothing after it published, however often it was run again (a fresh-user try)."""
    big = orjson.dumps({"item_id": "huge", "vector": [0.123456] * 300_000})
    path = tmp_path / "items.jsonl"
    result, topic = _publish_catalog(tansu_bootstrap, make_topic, monkeypatch, path, "cli-catalog-huge",
                                     b'{"item_id": "a", "price": 1}\n' + big + b'\n{"item_id": "b", "price": 2}\n')
    assert result.exit_code == 0, result.output
    assert "published 2 items" in result.output and "rejected 1 lines" in result.output, result.output
    assert _rejected_lines(result.output) == [  # by the size rule now, before the producer's record limit
        f"rejected {path}:2: item 'huge': the item is 2,700,029 bytes as JSON (its largest attribute, 'vector': "
        "2,700,001 bytes); at most 65,536 (api.catalog_max_item_bytes)"]
    assert _records(tansu_bootstrap, topic, 2) == {"a": {"item_id": "a", "price": 1}, "b": {"item_id": "b", "price": 2}}


def test_catalog_rejects_items_over_a_size_limit_and_publishes_the_rest(tansu_bootstrap: str, make_topic,
                                                                        tmp_path: Path, monkeypatch) -> None:
    """A new user's trial (F2): a line with a 200,000-character title was published (and served back); an
    item over a size limit (``api.catalog_max_*``) is a rejected line naming the item and the attribute."""
    monkeypatch.setenv("FUSIONREC_API__CATALOG_MAX_ATTRIBUTES", "3")
    path = tmp_path / "items.jsonl"
    lines = [{"item_id": "a", "title": "Red wool scarf"}, {"item_id": "long", "title": "x" * 200_000},
             {"item_id": "wide", "a": 1, "b": 2, "c": 3, "d": 4}, {"item_id": "b", "tags": ["s", "é" * 9000]},
             {"item_id": "c", "title": "Blue hat", "price": 2}]
    result, topic = _publish_catalog(tansu_bootstrap, make_topic, monkeypatch, path, "cli-catalog-size",
                                     b"".join(orjson.dumps(x) + b"\n" for x in lines))
    assert result.exit_code == 0, result.output
    assert "published 2 items" in result.output and "rejected 3 lines" in result.output, result.output
    assert _rejected_lines(result.output) == [
        f"rejected {path}:2: item 'long': attribute 'title' is 200,000 bytes (UTF-8); at most 16,384 "
        "(api.catalog_max_value_bytes)",
        f"rejected {path}:3: item 'wide': the item has 4 attributes besides item_id; at most 3 "
        "(api.catalog_max_attributes)",
        f"rejected {path}:4: item 'b': attribute 'tags' element 1 is 18,000 bytes (UTF-8); at most 16,384 "
        "(api.catalog_max_value_bytes)"], result.output
    assert _records(tansu_bootstrap, topic, 2) == {"a": lines[0], "c": lines[4]}


def test_catalog_rejects_lines_adding_names_beyond_the_catalog_limit(tansu_bootstrap: str, make_topic,
                                                                     tmp_path: Path, monkeypatch) -> None:
    """A new user's trial (catalog defects 1 and 3): lines within the per-item limits but each with its own names
    froze the API; a line that would bring the file's distinct names beyond ``api.catalog_max_attribute_names`` is
    rejected. And a line rejected for its size fixed ``zcolor`` as a number, rejecting a later ``"red"``."""
    monkeypatch.setenv("FUSIONREC_API__CATALOG_MAX_ATTRIBUTE_NAMES", "3")
    path = tmp_path / "items.jsonl"
    lines = [{"item_id": "z1", "zcolor": 1, "title": "x" * 17_000}, {"item_id": "z2", "zcolor": "red"},
             {"item_id": "a", "brand": "b", "price": 1}, {"item_id": "wide", "w1": 1, "brand": "c"},
             {"item_id": "c", "zcolor": "blue", "price": 2}]
    result, topic = _publish_catalog(tansu_bootstrap, make_topic, monkeypatch, path, "cli-catalog-names",
                                     b"".join(orjson.dumps(x) + b"\n" for x in lines))
    assert result.exit_code == 0, result.output
    assert "published 3 items" in result.output and "rejected 2 lines" in result.output, result.output
    assert _rejected_lines(result.output) == [
        f"rejected {path}:1: item 'z1': attribute 'title' is 17,000 bytes (UTF-8); at most 16,384 "
        "(api.catalog_max_value_bytes)",
        f"rejected {path}:4: item 'wide': attribute 'w1' would make 4 distinct attribute names in the catalog; "
        "at most 3 (api.catalog_max_attribute_names)"], result.output
    assert _records(tansu_bootstrap, topic, 3) == {"z2": lines[1], "a": lines[2], "c": lines[4]}


def test_catalog_rejects_bad_lines_one_by_one_and_publishes_the_rest(tansu_bootstrap: str, make_topic,
                                                                      tmp_path: Path, monkeypatch) -> None:
    """Trial 13, D15: a line that is not JSON (a number out of range), has no or an empty item_id, or
    is not an object is reported with its number and reason; every other line is published (exit 0)."""
    bad = tmp_path / "bad.jsonl"
    result, topic = _publish_catalog(
        tansu_bootstrap, make_topic, monkeypatch, bad, "cli-catalog-bad-lines",
        b'{"item_id": "n-3", "price": 2}\n{"title": "no id"}\n{"item_id": "n-4", "price": 1e999}\n'
        b'{"item_id": "", "title": "x"}\n[1, 2]\n{"item_id": "n-5", "price": "cheap"}\n{"item_id": "n-6"\n'
        b'\n{"item_id": "n-7", "title": "Blue hat"}\n{"item_id": "", "deleted": true}\n')
    out = result.output
    assert result.exit_code == 0, out
    assert "Traceback" not in out and "Invalid value" not in out, out
    assert "published 2 items" in out and "rejected 7 lines; deleted 0" in out, out
    reported = _rejected_lines(out)
    assert reported == [
        f"rejected {bad}:2: item_id: must be a string or an integer; got None",
        f"rejected {bad}:3: not JSON: number is infinity when parsed as double (column 29)",
        f"rejected {bad}:4: item_id: must be a non-empty string; got ''",
        f"rejected {bad}:5: needs a JSON object with an item_id; got a list",
        f"rejected {bad}:6: item 'n-5': attribute 'price' must be a number; got 'cheap' (str)",
        f"rejected {bad}:7: not JSON: unexpected end of data (column 18)",
        f"rejected {bad}:10: item_id: must be a non-empty string; got ''",
    ], out
    got = _records(tansu_bootstrap, topic, 2)
    assert got == {"n-3": {"item_id": "n-3", "price": 2}, "n-7": {"item_id": "n-7", "title": "Blue hat"}}


def test_catalog_coerces_rejects_and_deletes_by_the_rule(tansu_bootstrap: str, make_topic, tmp_path: Path,
                                                         monkeypatch) -> None:
    result, topic = _publish_catalog(
        tansu_bootstrap, make_topic, monkeypatch, tmp_path / "items.jsonl", "cli-catalog-rule",
        b'{"item_id": "a", "price": 10.0}\n{"item_id": "b", "price": "12.5"}\n'
        b'{"item_id": "c", "price": "cheap"}\n{"item_id": 7.0, "price": 1}\n{"item_id": "old", "deleted": true}\n')
    assert result.exit_code == 0, result.output
    assert "published 3 items" in result.output and "coerced 1 values (price 1)" in result.output
    assert "rejected 1 lines; deleted 1" in result.output
    assert "items.jsonl:3: item 'c': attribute 'price' must be a number; got 'cheap'" in result.output
    got = _records(tansu_bootstrap, topic, 4)
    assert got == {"a": {"item_id": "a", "price": 10.0}, "b": {"item_id": "b", "price": 12.5},
                   "7": {"item_id": "7", "price": 1}, "old": None}


def test_catalog_the_last_line_of_an_item_wins(tansu_bootstrap: str, make_topic, tmp_path: Path, monkeypatch) -> None:
    """A delete followed by a new version publishes the new version, a version followed by a delete
    publishes the delete (the file's order, not upserts first and deletes after)."""
    result, topic = _publish_catalog(
        tansu_bootstrap, make_topic, monkeypatch, tmp_path / "items.jsonl", "cli-catalog-last-line",
        b'{"item_id": "readd", "deleted": true}\n{"item_id": "readd", "price": 2.0}\n'
        b'{"item_id": "gone", "price": 3.0}\n{"item_id": "gone", "deleted": true}\n'
        b'{"item_id": "twice", "price": 4.0}\n{"item_id": "twice", "price": 5.0}\n')
    assert result.exit_code == 0, result.output
    assert "published 2 items" in result.output and "deleted 1" in result.output, result.output
    got = _records(tansu_bootstrap, topic, 3)
    assert got == {"readd": {"item_id": "readd", "price": 2.0}, "gone": None, "twice": {"item_id": "twice", "price": 5.0}}


def test_catalog_deleted_must_be_a_json_bool(tansu_bootstrap: str, make_topic, tmp_path: Path, monkeypatch) -> None:
    """Issue 13: ``"deleted": "true"`` or ``1`` was published as a live item with a ``deleted`` attribute; it is
    a rejected line now, ``"deleted": false`` a live item without it."""
    path = tmp_path / "items.jsonl"
    result, topic = _publish_catalog(
        tansu_bootstrap, make_topic, monkeypatch, path, "cli-catalog-deleted",
        b'{"item_id": "s", "deleted": "true"}\n{"item_id": "one", "deleted": 1, "price": 2.0}\n'
        b'{"item_id": "keep", "deleted": false, "price": 3.0}\n{"item_id": "gone", "deleted": true}\n')
    out = result.output
    assert result.exit_code == 0, out
    assert "published 1 items" in out and "rejected 2 lines; deleted 1" in out, out
    reported = _rejected_lines(out)
    assert reported == [
        f"rejected {path}:1: item 's': attribute 'deleted' must be a JSON bool: use true to delete the item or "
        "false to keep it; got 'true' (str)",
        f"rejected {path}:2: item 'one': attribute 'deleted' must be a JSON bool: use true to delete the item or "
        "false to keep it; got 1 (int)"], out
    got = _records(tansu_bootstrap, topic, 2)
    assert got == {"keep": {"item_id": "keep", "price": 3.0}, "gone": None}


def test_catalog_vector_must_be_a_flat_array_of_finite_numbers(tansu_bootstrap: str, make_topic, tmp_path: Path,
                                                               monkeypatch) -> None:
    """Issue 14: a nested vector or one of numeric strings was published; with ``api.vector_dim`` set, a wrong
    length is rejected too (the API's index rejects the same items)."""
    monkeypatch.setenv("FUSIONREC_API__VECTOR_DIM", "2")
    path = tmp_path / "items.jsonl"
    result, topic = _publish_catalog(
        tansu_bootstrap, make_topic, monkeypatch, path, "cli-catalog-vectors",
        b'{"item_id": "ok", "vector": [1, 0.5]}\n{"item_id": "nested", "vector": [[1, 2], [3, 4]]}\n'
        b'{"item_id": "strings", "vector": ["1", "2"]}\n{"item_id": "long", "vector": [1.0, 2.0, 3.0]}\n')
    out = result.output
    assert result.exit_code == 0, out
    assert "published 1 items" in out and "rejected 3 lines; deleted 0" in out, out
    reported = _rejected_lines(out)
    want = "attribute 'vector' must be a flat JSON array of 2 finite numbers"
    assert reported == [
        f"rejected {path}:2: item 'nested': {want} (element 0 is an array); got [[1, 2], [3, 4]] (list)",
        f"rejected {path}:3: item 'strings': {want} (element 0 is a string); got ['1', '2'] (list)",
        f"rejected {path}:4: item 'long': {want} (3 numbers, not 2); got [1.0, 2.0, 3.0] (list)"], out
    got = _records(tansu_bootstrap, topic, 1)
    assert got == {"ok": {"item_id": "ok", "vector": [1, 0.5]}}


def test_catalog_is_checked_in_chunks_as_one_file(tansu_bootstrap: str, make_topic, tmp_path: Path,
                                                  monkeypatch) -> None:
    """Chunks of 2 lines: types fixed by the file's first values and counts carry across chunks; the last
    line of an item wins across chunks; rejected lines keep their numbers."""
    import flows.commands.platform

    monkeypatch.setattr(flows.commands.platform, "CATALOG_CHUNK_LINES", 2)
    path = tmp_path / "items.jsonl"
    result, topic = _publish_catalog(
        tansu_bootstrap, make_topic, monkeypatch, path, "cli-catalog-chunks",
        b'{"item_id": "x", "price": 1.0, "meta": {"k": 1}}\n{"item_id": "b", "price": "2.5"}\n'
        b'{"item_id": "c", "price": "cheap"}\n{"item_id": "a", "price": 1.0}\n{"item_id": "a", "price": "3"}\n'
        b'{"item_id": "d", "meta": "x"}\n{"item_id": "b", "deleted": true}\n{"item_id": "e"\n')
    out = result.output
    assert result.exit_code == 0, out
    assert "published 3 items" in out and "coerced 1 values (price 1)" in out, out
    assert "rejected 2 lines; deleted 1" in out, out
    reported = _rejected_lines(out)
    assert reported == [f"rejected {path}:3: item 'c': attribute 'price' must be a number; got 'cheap' (str)",
                        f"rejected {path}:8: not JSON: unexpected end of data (column 16)"], out
    got = _records(tansu_bootstrap, topic, 4)
    assert got == {"x": {"item_id": "x", "price": 1.0, "meta": {"k": 1}}, "a": {"item_id": "a", "price": 3},
                   "d": {"item_id": "d", "meta": "x"}, "b": None}  # meta: not indexed, from the first chunk on


def test_catalog_memory_does_not_grow_with_the_file(tansu_bootstrap: str, make_topic, tmp_path: Path,
                                                    monkeypatch) -> None:
    """Issue 14: every parsed line was held (~481 MB RSS for 100k items); now one chunk is (bench/RESULTS.md)."""
    import tracemalloc

    item = {"title": "t" * 200, "tags": [f"tag-{k}" for k in range(20)], "vector": [0.125] * 64}
    lines = b"".join(orjson.dumps({"item_id": f"i{j}", **item}) + b"\n" for j in range(20_000))
    tracemalloc.start()
    try:
        result, topic = _publish_catalog(tansu_bootstrap, make_topic, monkeypatch, tmp_path / "items.jsonl",
                                         "cli-catalog-memory", lines)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0 and "published 20000 items" in result.output, result.output
    assert peak < 20e6, peak  # the 20k parsed items alone take ~80 MB


def test_catalog_serving_attributes_have_fixed_types(tansu_bootstrap: str, make_topic, tmp_path: Path,
                                                     monkeypatch) -> None:
    """New-user trial: ``"hidden": "true"`` first made ``hidden`` a string attribute (published as the string,
    served by the API, and a later ``"hidden": true`` rejected); the same for ``in_stock`` and ``stock``. They
    are a bool, a bool and a number whatever comes first: coerced, or the line rejected naming the attribute;
    chunks of 2 lines, so the types hold across chunks."""
    import flows.commands.platform

    monkeypatch.setattr(flows.commands.platform, "CATALOG_CHUNK_LINES", 2)
    path = tmp_path / "items.jsonl"
    result, topic = _publish_catalog(
        tansu_bootstrap, make_topic, monkeypatch, path, "cli-catalog-serving",
        b'{"item_id": "s20hid1", "hidden": "true"}\n{"item_id": "s20stk1", "in_stock": "false"}\n'
        b'{"item_id": "s20stk2", "stock": "0"}\n{"item_id": "later", "hidden": true, "in_stock": true, "stock": 4}\n'
        b'{"item_id": "maybe", "hidden": "maybe"}\n{"item_id": "lots", "stock": "lots"}\n')
    out = result.output
    assert result.exit_code == 0, out
    assert "published 4 items" in out and "coerced 3 values (hidden 1, in_stock 1, stock 1)" in out, out
    assert _rejected_lines(out) == [
        f"rejected {path}:5: item 'maybe': attribute 'hidden' must be a bool; got 'maybe' (str)",
        f"rejected {path}:6: item 'lots': attribute 'stock' must be a number; got 'lots' (str)"], out
    got = _records(tansu_bootstrap, topic, 4)
    assert got == {"s20hid1": {"item_id": "s20hid1", "hidden": True},
                   "s20stk1": {"item_id": "s20stk1", "in_stock": False},
                   "s20stk2": {"item_id": "s20stk2", "stock": 0},
                   "later": {"item_id": "later", "hidden": True, "in_stock": True, "stock": 4}}


def test_catalog_types_come_from_the_first_values_in_file_order(tansu_bootstrap: str, make_topic, tmp_path: Path,
                                                                  monkeypatch) -> None:
    """New-user trial: ``t33-new-1``'s first line (price 10.5) is superseded by its last (price 11), so only the
    winning lines fixed the types: ``"12.50"`` of line 2 made ``price`` a string and the number 11 was published
    as ``"11"``. The types come from the file's first values in file order, superseded lines included (a rejected
    line still fixes none); chunks of 2 lines, so the order holds across chunks."""
    import flows.commands.platform

    monkeypatch.setattr(flows.commands.platform, "CATALOG_CHUNK_LINES", 2)
    path = tmp_path / "items.jsonl"
    lines = [{"item_id": "t33-rej", "price": "cheap", "color": 1, "deleted": 1},  # rejected: fixes no type
             {"item_id": "t33-new-1", "price": 10.5}, {"item_id": "t33-new-2", "price": "12.50"},
             {"item_id": "t33-new-3", "color": "red"}, {"item_id": "t33-new-1", "price": 11}]
    result, topic = _publish_catalog(tansu_bootstrap, make_topic, monkeypatch, path, "cli-catalog-first-values",
                                     b"".join(orjson.dumps(x) + b"\n" for x in lines))
    out = result.output
    assert result.exit_code == 0, out
    assert "published 3 items" in out and "coerced 1 values (price 1)" in out and "rejected 1 lines" in out, out
    got = _records(tansu_bootstrap, topic, 3)
    assert got == {"t33-new-1": {"item_id": "t33-new-1", "price": 11},
                   "t33-new-2": {"item_id": "t33-new-2", "price": 12.5},
                   "t33-new-3": {"item_id": "t33-new-3", "color": "red"}}
    assert type(got["t33-new-1"]["price"]) is int  # type: ignore[index]
