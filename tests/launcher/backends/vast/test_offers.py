"""The offer query built from resources, the bid, and which offer comes first."""

from __future__ import annotations

import pytest
from vastai.api.query import offers_alias, offers_fields, offers_mult, parse_query

from launcher.backends.vast import offers as of
from launcher.backends.vast.config import VastSettings


@pytest.mark.parametrize("name, vast, min_ram", [
    ("V100", ["Tesla_V100"], 0),
    ("V100-32GB", ["Tesla_V100"], 30),
    ("A6000", ["RTX_A6000"], 0),
    ("RTXA6000", ["RTX_A6000"], 0),
    ("A100", ["A100_SXM4", "A100_PCIE"], 0),
    ("A100-80GB", ["A100_SXM4", "A100_PCIE"], 70),
    ("a100_sxm4", ["A100_SXM4"], 0),
    ("H100", ["H100_SXM", "H100_PCIE", "H100_NVL"], 0),
    ("RTX4090", ["RTX_4090"], 0),
    ("RTX 4090", ["RTX_4090"], 0),
    ("RTX_4090", ["RTX_4090"], 0),
    ("T4", ["Tesla_T4"], 0),
    ("L40S", ["L40S"], 0),
    ("RTX_A5000", ["RTX_A5000"], 0),          # Vast's own spelling
    ("Titan Xp", ["Titan_Xp"], 0),            # unknown: passed on as written
])
def test_accelerator_names_map_to_vast_gpu_names(name, vast, min_ram):
    assert of.vast_gpu_names(name) == (vast, min_ram)


@pytest.mark.parametrize("acc, names, count", [
    ("V100", ["V100"], 1), ("V100:2", ["V100"], 2), ("A100:0.5", ["A100"], 1),
    ({"A100": 8}, ["A100"], 8), (["V100", "A6000:2"], ["V100", "A6000"], 2), (None, [], 0),
])
def test_accelerators_and_count(acc, names, count):
    assert of.accelerators({"accelerators": acc}) == (names, count)


def test_query_has_gpus_disk_reliability_and_price_cap():
    s = VastSettings(max_price=1.5, min_reliability=0.97)
    q = of.build_query({"accelerators": "V100:2", "disk_size": "256GB", "cpus": "8+", "memory": 32}, s)
    assert q.query == ("gpu_name in [Tesla_V100] num_gpus=2 disk_space>=256 reliability>=0.97 "
                       "inet_down>=100 cpu_cores_effective>=8 cpu_ram>=32 dph_total<=1.5")
    assert (q.spot, q.offer_type, q.order, q.disk_gb) == (False, "on-demand", "dph_total", 256)


def test_query_parses_with_the_sdk_into_vast_names():
    q = of.build_query({"accelerators": ["A100-80GB:4", "H100:4"], "use_spot": True}, VastSettings(max_price=9))
    parsed = parse_query(q.query, {}, offers_fields, offers_alias, offers_mult)
    assert parsed["gpu_name"] == {"in": ["A100 SXM4", "A100 PCIE", "H100 SXM", "H100 PCIE", "H100 NVL"]}
    assert parsed["num_gpus"] == {"eq": "4"} and parsed["gpu_ram"] == {"gte": 70000.0}
    assert parsed["min_bid"] == {"lte": "9"} and "dph_total" not in parsed  # a bid is capped on its price
    assert q.offer_type == "bid" and q.order == "min_bid"


def test_spot_argument_overrides_use_spot():
    q = of.build_query({"accelerators": "V100", "use_spot": True}, VastSettings(), spot=False)
    assert q.offer_type == "on-demand"


def test_disk_defaults_to_the_setting():
    assert of.build_query({}, VastSettings(disk_gb=40)).disk_gb == 40
    assert of.size_gb("1TB", 0) == 1024 and of.size_gb(100, 0) == 100


def test_bid_is_the_minimum_times_the_factor_capped_at_the_max_price():
    assert of.bid_price({"min_bid": 0.20}, VastSettings(bid_factor=1.5)) == pytest.approx(0.30)
    assert of.bid_price({"min_bid": 0.20}, VastSettings(bid_factor=1.5, max_price=0.25)) == pytest.approx(0.25)
    assert of.bid_price({"min_bid": 0.30}, VastSettings(max_price=0.25)) is None


def test_rank_is_cheapest_acceptable_first():
    s = VastSettings(min_reliability=0.9, max_price=1.0)
    offers = [{"id": 1, "dph_total": 0.8, "reliability": 0.99}, {"id": 2, "dph_total": 0.5, "reliability": 0.5},
              {"id": 3, "dph_total": 0.6, "reliability": 0.95}, {"id": 4, "dph_total": 1.2, "reliability": 0.99},
              {"id": 5, "dph_total": 0.6, "reliability": 0.99}]
    ranked = of.rank(offers, of.build_query({}, s), s)
    assert [(p, o["id"]) for p, o in ranked] == [(0.6, 5), (0.6, 3), (0.8, 1)]


def test_rank_spot_by_bid():
    s = VastSettings(bid_factor=2.0)
    offers = [{"id": 1, "dph_total": 0.3, "min_bid": 0.2}, {"id": 2, "dph_total": 0.9, "min_bid": 0.1}]
    ranked = of.rank(offers, of.build_query({"use_spot": True}, s), s)
    assert [(p, o["id"]) for p, o in ranked] == [(0.2, 2), (0.4, 1)]


def test_image_from_image_id_or_setting():
    s = VastSettings(image="img:1")
    assert of.image_for({"image_id": "docker:pytorch/pytorch:latest"}, s) == "pytorch/pytorch:latest"
    assert of.image_for({}, s) == "img:1"


def test_rank_leaves_out_slow_links_and_machines_to_avoid():
    s = VastSettings(min_inet_down=200)
    q = of.build_query({"accelerators": "V100:1"}, s)
    offers = [{"id": 1, "machine_id": 10, "dph_total": 0.1, "inet_down": 50},
              {"id": 2, "machine_id": 20, "dph_total": 0.2, "inet_down": 500},
              {"id": 3, "machine_id": 30, "dph_total": 0.3, "inet_down": 900}]
    assert [o["id"] for _, o in of.rank(offers, q, s)] == [2, 3]
    assert [o["id"] for _, o in of.rank(offers, q, s, avoid={20})] == [3]
