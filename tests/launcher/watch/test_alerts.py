"""Alerts as data: samples and progress observations in, alerts out; nothing sleeps."""

from __future__ import annotations

from launcher.watch.alerts import Thresholds, changes, evaluate, longest_gap, stall_limit, step_time

T0 = 1_000_000.0


def gpu(util=90, temp=60, used=1000.0, total=16000.0, index=0):
    return {"index": index, "name": "Tesla V100", "util": util, "temp_c": temp, "mem_used_mb": used,
            "mem_total_mb": total}


def samples(*gpus_at, every=10.0, start=T0):
    """One sample every ``every`` s from ``start``; each argument is that sample's GPUs."""
    return [{"ts": start + i * every, "attempt": 1, "gpus": gs} for i, gs in enumerate(gpus_at)]


def kinds(alerts):
    return sorted(a.key for a in alerts)


def test_a_cool_busy_gpu_raises_nothing():
    s = samples(*[[gpu()]] * 40)
    assert evaluate(s, [], now=s[-1]["ts"], run_started=T0) == []


def test_heat_and_memory_over_their_thresholds():
    s = samples([gpu(temp=86, used=15500.0), gpu(index=1, temp=85, used=15100.0)])
    alerts = evaluate(s, [], now=T0 + 5, run_started=T0)
    assert kinds(alerts) == ["hot:0", "memory:0"]  # 85 °C and 94.4% are not over
    assert "86 °C" in alerts[0].message and "96.9%" in alerts[1].message


def test_thresholds_are_settings():
    s = samples([gpu(temp=80)])
    assert kinds(evaluate(s, [], now=T0, run_started=T0, th=Thresholds(temp_c=75))) == ["hot:0"]


def test_stale_samples_say_nothing_about_now():
    s = samples([gpu(temp=99)])
    assert evaluate(s, [], now=T0 + 121, run_started=T0) == []


def test_zero_utilisation_for_five_minutes_while_running():
    busy, idle = [gpu()], [gpu(util=0)]
    s = samples(busy, *[idle] * 31)  # zero from T0+10 to T0+310
    assert evaluate(s, [], now=T0 + 305, run_started=T0) == []  # 4m55s of zeros
    alerts = evaluate(s, [], now=T0 + 310, run_started=T0)
    assert kinds(alerts) == ["idle:0"] and "5 min" in alerts[0].message


def test_one_busy_sample_breaks_the_idle_streak():
    idle = [gpu(util=0)]
    s = samples(*[idle] * 20, [gpu(util=3)], *[idle] * 15)
    assert evaluate(s, [], now=s[-1]["ts"], run_started=T0) == []


def test_idle_needs_the_run_going_that_long():
    s = samples(*[[gpu(util=0)]] * 40, start=T0)
    assert evaluate(s, [], now=T0 + 390, run_started=T0 + 200) == []


def test_step_time_from_observations():
    steps = [(T0, 10), (T0 + 10, 20), (T0 + 20, 30), (T0 + 30, 30)]
    assert step_time(steps) == 1.0
    assert step_time([(T0, 10), (T0 + 30, 10)]) is None


def test_default_stall_time_is_a_multiple_of_the_step_time_never_under_the_floor():
    fast = [(T0, 0), (T0 + 10, 100)]  # 0.1 s a step
    assert stall_limit(fast, Thresholds()) == 600.0
    slow = [(T0, 0), (T0 + 120, 2)]  # 60 s a step
    assert stall_limit(slow, Thresholds()) == 1200.0
    assert stall_limit([(T0, 0)], Thresholds()) is None  # no step time yet: not armed
    assert stall_limit(fast, Thresholds(stall_after=0)) is None  # off
    assert stall_limit([], Thresholds(stall_after=45)) == 45.0


def test_no_new_step_for_the_stall_time_is_a_stall():
    steps = [(T0, 0), (T0 + 10, 50), (T0 + 20, 100)]  # then nothing new
    steps += [(T0 + 20 + 10 * i, 100) for i in range(1, 70)]
    assert evaluate([], steps, now=T0 + 619, run_started=T0) == []
    (alert,) = evaluate([], steps, now=T0 + 620, run_started=T0)
    assert alert.kind == "stalled" and "600 s at step 100" in alert.message


def test_a_given_stall_time_also_covers_a_run_that_never_steps():
    th = Thresholds(stall_after=60)
    assert evaluate([], [], now=T0 + 59, run_started=T0, th=th) == []
    (alert,) = evaluate([], [], now=T0 + 60, run_started=T0, th=th)
    assert "before its first step" in alert.message


def test_progress_seen_before_this_attempt_started_does_not_count():
    th = Thresholds(stall_after=60)
    assert evaluate([], [(T0 - 500, 40)], now=T0 + 30, run_started=T0, th=th) == []


def test_an_alert_is_raised_once_until_it_clears():
    hot = evaluate(samples([gpu(temp=90)]), [], now=T0, run_started=T0)
    new, active = changes(hot, set())
    assert kinds(new) == ["hot:0"]
    new, active = changes(hot, active)
    assert new == []
    _, active = changes([], active)
    new, _ = changes(hot, active)
    assert kinds(new) == ["hot:0"]


def test_a_long_start_does_not_inflate_the_step_time():
    steps = [(T0, 0), (T0 + 600, 1), (T0 + 601, 2), (T0 + 602, 3)]  # 10 min of setup, then 1 s a step
    assert step_time(steps) == 1.0


def test_a_long_quiet_gap_seen_before_makes_the_default_longer():
    """An evaluation of 7 min between two metrics lines: the next one must not look like a hang."""
    steps = [(T0, 0), (T0 + 10, 10), (T0 + 20, 20), (T0 + 440, 21), (T0 + 450, 31)]
    assert longest_gap(steps) == 420.0
    assert stall_limit(steps, Thresholds()) == 840.0
    assert stall_limit([(T0, 0), (T0 + 10, 10)], Thresholds(), gap=500.0) == 1000.0  # from an earlier attempt
