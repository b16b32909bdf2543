"""The supervisor's side: samples read from the store, alerts recorded once as events, the status
summary written, steps/s from the progress it saw; a fake clock, no sleeping."""

from __future__ import annotations

import json

from launcher import state as st
from launcher.store import open_store
from launcher.testing import FakeClock
from launcher.watch.monitor import Monitor, parse_duration, read_summary, steps_per_second
from launcher.watch.alerts import Thresholds


def setup(tmp_path, clock, temp):
    state = st.State()
    job = state.create_job(name="m", task_path=None, task_yaml="run: x", infra="local",
                           store_uri=(tmp_path / "store").as_uri(), options={})
    store = open_store(state.job(job.id).store_uri)
    store.put_bytes("gpu.jsonl", "".join(json.dumps(
        {"ts": clock.now - 30 + i, "attempt": a, "gpus": [{"index": 0, "name": "Tesla V100", "util": 90,
                                                           "temp_c": temp, "mem_used_mb": 1.0, "mem_total_mb": 16.0}]}
    ) + "\n" for i, a in enumerate([1, 2, 2])).encode())
    return state, job


def test_a_hot_gpu_is_one_alert_event_and_the_summary_shows_the_sample(tmp_path):
    clock = FakeClock()
    state, job = setup(tmp_path, clock, temp=91)
    mon = Monitor(state, job.id, clock.time, thresholds=Thresholds())
    for step in (10, 20, 30):
        assert mon.tick(2, clock.now - 100, {"step": step}) is None
        clock.sleep(10)
    alerts = [e["message"] for e in state.events(job.id) if e["kind"] == "alert"]
    assert alerts == ["attempt 2: GPU 0 (Tesla V100) at 91 °C (over 85 °C)"]
    summary = read_summary(job.id)
    assert summary["gpu"]["attempt"] == 2 and summary["alerts"] == ["hot:0"]
    assert summary["steps_per_s"] == 1.0 and summary["stall_after_s"] == 600.0


def test_samples_of_another_attempt_say_nothing(tmp_path):
    clock = FakeClock()
    state, job = setup(tmp_path, clock, temp=91)
    mon = Monitor(state, job.id, clock.time, thresholds=Thresholds())
    mon.tick(3, clock.now, {})
    assert not [e for e in state.events(job.id) if e["kind"] == "alert"]


def test_steps_per_second_over_recent_progress():
    assert steps_per_second([(0, 0), (10, 50), (20, 100), (25, 100)]) == 5.0
    assert steps_per_second([(0, 7)]) is None


def test_durations():
    assert [parse_duration(x) for x in ("90s", "10m", "1.5h", "0", "45")] == [90, 600, 5400, 0, 45]
