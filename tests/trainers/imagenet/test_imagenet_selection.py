"""Selection and the PI controller, as TRAINERS.md specifies them."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from trainers.imagenet.selection import (INTEGRAL_LIMIT, ControllerConfig, PIController,
                                         min_selected, sample_scores, select)


def controller(**kw) -> PIController:
    return PIController(ControllerConfig(**{"thr_init": 5.0, **kw}))


def test_score_is_0_7_ce_plus_0_3_entropy():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    p = logits.softmax(1)
    expected = 0.7 * F.cross_entropy(logits, y, reduction="none") - 0.3 * (p * p.log()).sum(1)
    got = sample_scores(logits, y)
    torch.testing.assert_close(got["score"], expected)
    assert got["correct"].tolist() == (logits.argmax(1) == y).float().tolist()


def test_selects_the_samples_above_the_threshold():
    scores = torch.tensor([0.1, 3.0, 0.2, 2.5, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert select(scores, thr=1.0).tolist() == [1, 3]


def test_at_least_ten_percent_by_top_k_when_fewer_pass():
    scores = torch.arange(40, dtype=torch.float32).flip(0)  # 39, 38, ..., 0 at positions 0..39
    idx = select(scores, thr=38.5)  # only position 0 passes; ceil(0.1 * 40) = 4
    assert idx.tolist() == [0, 1, 2, 3]
    assert select(scores, thr=1e9).tolist() == [0, 1, 2, 3]  # none pass: still the top 4


def test_min_selected_is_ceil_tenth_and_never_one_sample():
    assert [min_selected(b) for b in (2, 10, 16, 256, 1000)] == [2, 2, 2, 26, 100]
    assert min_selected(255) == math.ceil(25.5)


def test_round_to_fills_with_the_next_best_samples():
    scores = torch.tensor([5.0, 1.0, 4.0, 0.0, 3.0, 2.0, 0.5, 0.2, 0.1, 0.3, 0.6, 0.7])
    assert select(scores, thr=3.5).tolist() == [0, 2]
    assert select(scores, thr=3.5, round_to=4).tolist() == [0, 2, 4, 5]


def test_threshold_rises_when_too_many_are_selected_and_falls_when_too_few():
    up, down = controller(), controller()
    up.update(selected=16, batch_size=16)
    down.update(selected=1, batch_size=16)
    assert up.thr > 5.0 > down.thr
    assert up.integral > 0 > down.integral


def test_update_follows_the_spec_formula():
    c = controller(kp=0.7, ki=0.1, ema=0.25)
    c.update(selected=8, batch_size=16)  # r = 0.5
    ema = 0.25 * 0.5 + 0.75 * 0.2
    e = ema - 0.2
    assert c.ema == pytest.approx(ema) and c.integral == pytest.approx(e)
    assert c.thr == pytest.approx(5.0 + 0.7 * e + 0.1 * e)


def test_anti_windup_integral_does_not_grow_while_threshold_is_saturated():
    c = controller(thr_max=6.0, kp=10.0)
    for _ in range(50):  # rate far above target: thr pinned at thr_max
        c.update(selected=16, batch_size=16)
    assert c.thr == 6.0
    frozen = c.integral
    assert 0 < frozen < 5  # integrated only while thr was inside, then stopped
    for _ in range(20):
        c.update(selected=16, batch_size=16)
    assert c.integral == frozen
    # The error reverses: the integral unwinds at once and the threshold leaves the bound.
    for _ in range(10):
        c.update(selected=0, batch_size=16)
    assert c.integral < frozen and c.thr < 6.0


def test_anti_windup_at_the_floor_too():
    c = controller(thr_init=0.5, thr_min=0.0, kp=10.0)
    for _ in range(30):
        c.update(selected=0, batch_size=16)
    assert c.thr == 0.0
    frozen = c.integral
    c.update(selected=0, batch_size=16)
    assert c.integral == frozen < 0


def test_integral_is_clipped_to_plus_minus_100():
    c = controller(kp=0.0, ki=0.0, ema=1.0, thr_max=1e9)  # thr never moves: always inside
    for _ in range(200):
        c.update(selected=16, batch_size=16)  # e = 0.8 each time
    assert c.integral == INTEGRAL_LIMIT


def test_controller_converges_to_the_target_with_default_gains():
    g = torch.Generator().manual_seed(1)
    c = PIController(ControllerConfig())  # thr from the first batch's quantile
    rates = []
    for step in range(300):
        scores = 4.0 - 0.005 * step + torch.randn(64, generator=g).abs()  # drifting, skewed
        c.init_from(scores)
        n = len(select(scores, c.thr))
        c.update(n, 64)
        rates.append(n / 64)
    assert statistics.mean(rates[150:]) == pytest.approx(0.2, abs=0.02)


def test_state_dict_round_trips_exactly():
    c = controller()
    for k in (3, 9, 1, 4):
        c.update(k, 16)
    d = PIController(ControllerConfig(thr_init=1.0))
    d.load_state_dict(c.state_dict())
    assert d.state_dict() == {**c.state_dict(), "config": d.state_dict()["config"]}
    assert (d.thr, d.integral, d.ema, d.seen, d.selected) == (c.thr, c.integral, c.ema, 64, 17)
