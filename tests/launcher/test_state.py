from __future__ import annotations

import pytest

from launcher import state as st
from launcher.errors import StateError


def test_cancel_request_is_not_overwritten_by_progress():
    s = st.State()
    job = s.create_job(name="j", task_path=None, task_yaml="run: x", infra="local", store_uri="file:///x", options={})
    assert s.transition(job.id, st.CANCELLING)
    assert not s.transition(job.id, st.STARTING)
    assert s.job(job.id).state == st.CANCELLING
    assert s.transition(job.id, st.CANCELLED)
    assert not s.transition(job.id, st.RUNNING)  # terminal states never change


def test_job_prefix_is_unique_per_job():
    s = st.State()
    a = s.create_job(name="j", task_path=None, task_yaml="", infra="local", store_uri="s3://b/p/", options={})
    b = s.create_job(name="j", task_path=None, task_yaml="", infra="local", store_uri="s3://b/p/", options={})
    assert a.store_uri.startswith("s3://b/p/j-") and a.store_uri != b.store_uri


def test_lookup_by_id_run_id_or_name():
    s = st.State()
    job = s.create_job(name="named", task_path=None, task_yaml="", infra="local", store_uri="", options={})
    assert s.job(job.id).id == s.job(job.run_id).id == s.job("named").id == job.id
    with pytest.raises(StateError, match="No job 'nope'"):
        s.job("nope")


def test_attempt_numbers_and_cost():
    s = st.State()
    job = s.create_job(name="j", task_path=None, task_yaml="", infra="local", store_uri="", options={})
    a1 = s.add_attempt(job.id, price_per_hour=2.0, started=0.0)
    a2 = s.add_attempt(job.id)
    assert (a1.n, a2.n) == (1, 2)
    s.set_attempt(job.id, 1, ended=1800.0)
    assert s.attempt(job.id, 1).cost() == pytest.approx(1.0)


def test_estimate_counts_sessions_when_attempts_have_a_session_length():
    from launcher.jobs import estimate

    s = st.State()
    job = s.create_job(name="j", task_path=None, task_yaml="", infra="kaggle", store_uri="", options={})
    s.set_job(job.id, progress={"step": 250, "total_steps": 1000})
    for n in range(2):
        a = s.add_attempt(job.id, handle={"session": {"usable_s": 3600}}, started=0.0)
        s.set_attempt(job.id, a.n, run_started=0.0, ended=1800.0)
    e = estimate(s.job(job.id), s.attempts(job.id), now=1e9)
    # 1 h run for 25% -> 3 h left -> 3 sessions of 1 h
    assert e["fraction_done"] == 0.25 and e["hours_left"] == 3.0
    assert e["sessions_used"] == 2 and e["sessions_left"] == 3


def test_bad_backend_setting_names_the_variable(monkeypatch):
    from launcher.errors import InfraError
    from launcher.settings import env_float

    monkeypatch.setenv("LAUNCH_VAST_MAX_PRICE", "cheap")
    with pytest.raises(InfraError, match="LAUNCH_VAST_MAX_PRICE='cheap': expected a number"):
        env_float("LAUNCH_VAST_MAX_PRICE", 1.0)
