"""The API's RocksDB stores: campaigns (file-locked, generation counter) and the optimizer snapshot."""

from __future__ import annotations

from operators.attribution import Impression
from state.bandit import ArmStats, BanditSnapshot, BanditStore
from state.campaigns import Arm, Campaign, CampaignStore
from state.codec import decode_value, encode_value


def test_campaign_store_round_trip_and_generation(tmp_path):
    store = CampaignStore(tmp_path / "campaigns")
    assert store.load_all() == (0, {})
    c = Campaign("home", "personalized", [Arm("a", "personalized"), Arm("b", "top", {"window": "24h"})],
                 filter="price < 50", n=5)
    assert store.put(c) == 1
    other = CampaignStore(tmp_path / "campaigns")  # another worker process
    gen, all_ = other.load_all()
    assert gen == 1 and all_ == {"home": c}
    assert other.delete("home") == 2
    assert store.generation() == 2 and store.load_all() == (2, {})


def test_bandit_store_one_writer_snapshot_and_deltas(tmp_path):
    a, b = BanditStore(tmp_path / "bandit"), BanditStore(tmp_path / "bandit")
    assert a.try_own() and not b.try_own()
    imp = Impression("r1", "home", "x", 1.0, "click", 60.0, items=["i1"])
    a.replace(BanditSnapshot(arms={("home", "x", ""): ArmStats(3.0, 1.0, 5.0, 3, 1)},
                             impressions={"r1": encode_value(imp)}, rewarded={"r0": 61.0},
                             offsets={("events", 0): 10}))
    batch = a.new_batch()
    a.stage_arm(batch, ("home", "y", "m"), ArmStats(1.0, 0.0, 6.0, 1, 0))
    a.stage_impression(batch, "r1", None)
    a.stage_rewarded(batch, "r1", 61.0)
    a.stage_offset(batch, "events", 0, 12)
    a.commit(batch)
    snap = b.load()  # read-only while a writes
    assert snap.arms == {("home", "x", ""): ArmStats(3.0, 1.0, 5.0, 3, 1), ("home", "y", "m"): ArmStats(1.0, 0.0, 6.0, 1, 0)}
    assert snap.impressions == {} and snap.rewarded == {"r0": 61.0, "r1": 61.0} and snap.offsets == {("events", 0): 12}
    a.close()
    assert b.try_own()  # the role moves when the writer exits
    assert decode_value(b"k", encode_value(imp), Impression) == imp
    b.close()
