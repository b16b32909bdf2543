"""The deadline policies, one row per case: a job of 48 h, a deadline of 72 h, 6 min changeovers."""

from __future__ import annotations

import pytest

from launcher.deadline import POLICIES, Mode, Situation, choose

H = 3600.0
C = 360.0


def at(elapsed_h, done_h, spot, current=Mode.NONE, total_h=48.0, deadline_h=72.0):
    return Situation(elapsed=elapsed_h * H, deadline=deadline_h * H, work_done=done_h * H,
                     work_total=total_h * H, changeover=C, spot_available=spot, current=current)


# (policy, situation, expected mode, words in the reason)
ROWS = [
    # Uniform Progress: the line is at 2/3 of the elapsed time (48 h of work in 72 h).
    ("uniform_progress", at(0, 0, True), Mode.SPOT, "spot is available"),
    ("uniform_progress", at(30, 10, True), Mode.SPOT, "spot"),                # behind, but spot is there
    ("uniform_progress", at(30, 10, False), Mode.ON_DEMAND, "behind"),         # line at 20 h
    ("uniform_progress", at(30, 25, False), Mode.NONE, "waiting for spot"),    # ahead: wait
    ("uniform_progress", at(30, 20.05, True, Mode.ON_DEMAND), Mode.ON_DEMAND, "two changeovers"),
    ("uniform_progress", at(30, 20.05, False, Mode.ON_DEMAND), Mode.ON_DEMAND, "two changeovers"),
    ("uniform_progress", at(30, 20.25, True, Mode.ON_DEMAND), Mode.SPOT, "spot"),  # 0.25 h > 12 min
    ("uniform_progress", at(30, 20.25, False, Mode.ON_DEMAND), Mode.ON_DEMAND, "until spot is available"),
    ("uniform_progress", at(60, 36.0, True, Mode.SPOT), Mode.ON_DEMAND, "safety net"),  # 12 h < 12 h + 12 min
    ("uniform_progress", at(60, 36.3, True, Mode.SPOT), Mode.SPOT, "spot"),  # 12 h > 11.7 h + 12 min
    ("uniform_progress", at(72, 48, False), Mode.NONE, "done"),
    # Greedy: spot or wait, whatever the line says, until the safety net.
    ("greedy", at(30, 10, False), Mode.NONE, "waiting"),
    ("greedy", at(30, 10, True), Mode.SPOT, "spot"),
    ("greedy", at(60, 36.0, True, Mode.SPOT), Mode.ON_DEMAND, "safety net"),
    ("greedy", at(71, 47.0, False, Mode.ON_DEMAND), Mode.ON_DEMAND, "safety net"),
    # The two bounds.
    ("always_spot", at(71, 10, False), Mode.NONE, "spot only"),
    ("always_spot", at(71, 10, True), Mode.SPOT, "spot only"),
    ("always_on_demand", at(0, 0, True), Mode.ON_DEMAND, "on demand only"),
]


@pytest.mark.parametrize("policy,situation,mode,words", ROWS)
def test_policy_table(policy, situation, mode, words):
    choice = choose(policy, situation)
    assert choice.mode is mode, choice.reason
    assert words in choice.reason


def test_safety_net_holds_until_the_end_once_on_demand():
    """On demand, time left minus work left stays the same, so the net never lets go."""
    s = at(60, 36.0, True, Mode.SPOT)
    while s.work_left > 0:
        c = choose("uniform_progress", s)
        assert c.mode is Mode.ON_DEMAND
        step = min(360.0, s.work_left)
        s = Situation(s.elapsed + step, s.deadline, s.work_done + step, s.work_total, s.changeover,
                      spot_available=True, current=Mode.ON_DEMAND)
    assert s.work_left <= 0 and s.elapsed <= s.deadline


def test_every_policy_is_named():
    assert set(POLICIES) == {"uniform_progress", "greedy", "always_spot", "always_on_demand"}
