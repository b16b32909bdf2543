"""One job per host: the local half of the lease."""

from __future__ import annotations

from launcher import state as st
from launcher.backends.ssh.leases import Leases


def test_a_host_goes_to_one_job_at_a_time(tmp_path):
    leases = Leases(tmp_path / "state.db", is_stale=lambda job: False)
    assert leases.acquire("root@h:22", "job-1", 1)
    assert not leases.acquire("root@h:22", "job-2", 1)
    assert leases.holder("root@h:22").job_id == "job-1"
    leases.release("root@h:22", "job-1", 1)
    assert leases.acquire("root@h:22", "job-2", 1)


def test_acquire_and_release_twice_are_safe(tmp_path):
    leases = Leases(tmp_path / "state.db", is_stale=lambda job: False)
    assert leases.acquire("h", "job-1", 1) and leases.acquire("h", "job-1", 1)
    leases.release("h", "job-1", 1)
    leases.release("h", "job-1", 1)
    assert leases.all() == []


def test_a_later_attempt_of_the_same_job_takes_the_host_over(tmp_path):
    leases = Leases(tmp_path / "state.db", is_stale=lambda job: False)
    leases.acquire("h", "job-1", 1)
    assert leases.acquire("h", "job-1", 2)
    leases.release("h", "job-1", 1)  # a late release of the old attempt frees nothing
    assert leases.holder("h").attempt == 2


def test_leases_of_ended_or_unknown_jobs_are_stale(launch_home):
    state = st.State()
    done = state.create_job(name="a", task_path=None, task_yaml="run: x", infra="ssh/p", store_uri="", options={})
    live = state.create_job(name="b", task_path=None, task_yaml="run: x", infra="ssh/p", store_uri="", options={})
    state.transition(done.id, st.SUCCEEDED)
    leases = Leases()
    assert leases.path == launch_home / "state.db"
    leases.acquire("h1", done.run_id, 1)
    leases.acquire("h2", live.run_id, 1)
    leases.acquire("h3", "vanished-job", 1)
    assert leases.acquire("h1", "new", 1) and leases.acquire("h3", "new", 1)
    assert not leases.acquire("h2", "new", 1)


def test_leases_share_the_state_database_without_disturbing_it(launch_home):
    state = st.State()
    Leases().acquire("h", "job-1", 1)
    assert state.jobs() == []
