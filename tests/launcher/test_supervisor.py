"""The supervisor loop over a scripted FakeBackend and a fake clock: no test sleeps."""

from __future__ import annotations

import json

from launcher import state as st
from launcher.supervisor import Supervisor
from launcher.testing import FakeBackend, FakeClock

TASK = """\
name: t
resources:
  job_recovery:
    max_restarts_on_errors: {errors}
{extra}
run: echo hi
"""


def make(state, script, errors=0, extra="", chaos="", polls=2, poll_interval=1.0):
    job = state.create_job(name="t", task_path=None, task_yaml=TASK.format(errors=errors, extra=extra),
                           infra="fake", store_uri="", options={"chaos": chaos})
    clock = FakeClock()
    backend = FakeBackend(script, polls_per_run=polls)
    sup = Supervisor(state, job.id, backend_for=lambda infra: backend, clock=clock.time,
                     sleep=clock.sleep, poll_interval=poll_interval)
    return job, sup, backend, clock


def states(state, job):
    return [a.state for a in state.attempts(job.id)]


def test_preemptions_relaunch_until_success():
    state = st.State()
    job, sup, backend, clock = make(state, ["preempted", "lost", "succeeded"])
    assert sup.run() == st.SUCCEEDED
    assert states(state, job) == ["PREEMPTED", "PREEMPTED", "SUCCEEDED"]
    assert backend.live == set()  # every machine was terminated
    assert state.job(job.id).state == st.SUCCEEDED


def test_error_without_restarts_fails():
    state = st.State()
    job, sup, backend, _ = make(state, ["failed", "succeeded"])
    assert sup.run() == st.FAILED
    assert states(state, job) == ["FAILED"]
    assert state.attempts(job.id)[0].exit_code == 1


def test_error_restarts_are_bounded():
    state = st.State()
    job, sup, _, _ = make(state, ["failed", "failed", "failed", "succeeded"], errors=2)
    assert sup.run() == st.FAILED
    assert states(state, job) == ["FAILED"] * 3


def test_an_error_the_provider_already_retried_is_not_retried_again():
    state = st.State()
    job, sup, _, _ = make(state, ["failed_final", "succeeded"], errors=2)
    assert sup.run() == st.FAILED
    assert states(state, job) == ["FAILED"]
    assert "already gave up" in state.job(job.id).reason


def test_refused_credentials_fail_the_job_at_once_saying_only_why():
    from launcher.backends.base import CredentialsError

    state = st.State()
    job, sup, backend, _ = make(state, ["succeeded"], errors=3)

    def refuse(req):
        raise CredentialsError("the provider refused the API key (HTTP 401): set VAST_API_KEY")

    backend.provision = refuse
    assert sup.run() == st.FAILED
    assert states(state, job) == ["SETUP_FAILED"]  # no retry: none can fix a refused key
    assert state.job(job.id).reason == "the provider refused the API key (HTTP 401): set VAST_API_KEY"


def test_credentials_refused_when_starting_the_run_fail_the_job_at_once_too():
    """Kaggle learns the key is bad only when the run's kernel is pushed (start_run)."""
    from launcher.backends.base import CredentialsError

    state = st.State()
    job, sup, backend, _ = make(state, ["succeeded"], errors=3)

    def refuse(handle, spec):
        raise CredentialsError("Kaggle refused the credentials in kaggle.json (HTTP 401): sign in again")

    backend.start_run = refuse
    assert sup.run() == st.FAILED
    assert states(state, job) == ["SETUP_FAILED"]
    assert state.job(job.id).reason.startswith("Kaggle refused the credentials")


def test_no_capacity_fails_over_to_next_option_with_backoff():
    state = st.State()
    extra = "  any_of:\n    - accelerators: V100:1\n    - accelerators: A6000:1"
    job, sup, backend, clock = make(state, ["no_capacity", "succeeded"], extra=extra)
    assert sup.run() == st.SUCCEEDED
    provisions = [c[1] for c in backend.calls if c[0] == "provision"]
    assert [p.resources["accelerators"] for p in provisions] == ["V100:1", "A6000:1"]
    assert sum(clock.slept) >= 5  # backed off before retrying


def test_fire_drills_fire_once_each_in_running_time():
    state = st.State()
    job, sup, backend, clock = make(state, ["succeeded"] * 3, chaos="term@2s,kill@5s", polls=20)
    assert sup.run() == st.SUCCEEDED
    assert backend.signals == ["term", "kill"]
    attempts = state.attempts(job.id)
    assert [a.state for a in attempts] == ["PREEMPTED", "PREEMPTED", "SUCCEEDED"]
    assert "fire drill term" in attempts[0].reason and "fire drill kill" in attempts[1].reason


def test_cancel_tears_down_the_running_attempt():
    state = st.State()
    job, sup, backend, clock = make(state, ["succeeded"], polls=10**6)
    orig = clock.sleep

    def sleep(s):
        orig(s)
        if clock.now > 1_000_010:
            state.transition(job.id, st.CANCELLING, "test")
    sup.sleep = sleep
    assert sup.run() == st.CANCELLED
    assert backend.live == set()
    assert states(state, job) == ["CANCELLED"]


def test_restarted_supervisor_reattaches_to_running_attempt():
    state = st.State()
    job, sup, backend, clock = make(state, ["succeeded"], polls=3)
    # A first supervisor started the attempt and died while it ran.
    sup._start(state.add_attempt(job.id, handle={"option": 0}).n, 0)
    assert state.attempts(job.id)[0].state == "RUNNING"
    sup2 = Supervisor(state, job.id, backend_for=lambda infra: backend, clock=clock.time, sleep=clock.sleep)
    assert sup2.run() == st.SUCCEEDED
    assert len(state.attempts(job.id)) == 1  # no second machine was rented
    assert [c[0] for c in backend.calls].count("provision") == 1


def test_cost_is_recorded_per_attempt():
    state = st.State()
    job, sup, _, clock = make(state, ["preempted", "succeeded"], polls=6, poll_interval=600)
    sup.run()
    costs = [a.cost() for a in state.attempts(job.id)]
    assert all(c > 0.9 for c in costs)  # about an hour each at $1/h


class Progressing(FakeBackend):
    """A run that writes a metrics line per poll into the job's store: one step per poll, kept
    across attempts (as a resumed trainer does)."""

    def __init__(self, store, total, **kw):
        super().__init__(**kw)
        self.store, self.total, self.step = store, total, 0

    def poll(self, handle):
        status = super().poll(handle)
        if not status.done:
            self.step += 1
            self.store.put_bytes("metrics.jsonl", json.dumps({"step": self.step, "total_steps": self.total}).encode())
        return status

    def signal(self, handle, kind):
        super().signal(handle, kind)
        self.signals[-1] = (kind, self.step)


def test_fire_drills_at_a_share_of_the_training(tmp_path):
    from launcher.store import open_store

    state = st.State()
    job = state.create_job(name="t", task_path=None, task_yaml=TASK.format(errors=0, extra=""), infra="fake",
                           store_uri=f"file://{tmp_path}/store", options={"chaos": "term@30%,kill@60%"})
    clock = FakeClock()
    backend = Progressing(open_store(state.job(job.id).store_uri), total=100, script=["succeeded"] * 3, polls_per_run=200)
    sup = Supervisor(state, job.id, backend_for=lambda infra: backend, clock=clock.time, sleep=clock.sleep,
                     poll_interval=1.0)
    assert sup.run() == st.SUCCEEDED
    # Each fired once the progress in the store had reached its share, at the next poll.
    (term, at_term), (kill, at_kill) = backend.signals
    assert (term, kill) == ("term", "kill") and 30 <= at_term <= 31 and 60 <= at_kill <= 61
    fired = [e["message"] for e in state.events(job.id) if e["kind"] == "chaos"]
    assert fired == ["fire drill term@30% on attempt 1", "fire drill kill@60% on attempt 2"]


def test_a_start_refused_for_capacity_is_a_wait_not_a_setup_failure():
    """A Kaggle push refused for the GPU session limit comes from start_run: more of them than
    max_setup_failures still end in success, each machine released."""
    from launcher.backends.base import NoCapacityError

    class RefusingStarts(FakeBackend):
        refusals = 4

        def start_run(self, handle, spec):
            super().start_run(handle, spec)
            if self.refusals:
                self.refusals -= 1
                raise NoCapacityError("Maximum batch GPU session count of 2 reached.")

    state = st.State()
    job = state.create_job(name="t", task_path=None, task_yaml=TASK.format(errors=0, extra=""),
                           infra="fake", store_uri="", options={})
    clock, backend = FakeClock(), RefusingStarts([])
    sup = Supervisor(state, job.id, backend_for=lambda infra: backend, clock=clock.time, sleep=clock.sleep)
    assert sup.run() == st.SUCCEEDED
    assert states(state, job) == ["NO_CAPACITY"] * 4 + ["SUCCEEDED"]
    assert backend.live == set() and sum(clock.slept) >= 5 + 10 + 20 + 40
def test_a_hung_run_is_killed_and_relaunched_like_a_preemption():
    state = st.State()
    job, sup, backend, clock = make(state, ["hung", "succeeded"])
    state.set_job(job.id, options={**state.job(job.id).options, "stall_after": 120.0})
    sup = Supervisor(state, job.id, backend_for=lambda infra: backend, clock=clock.time, sleep=clock.sleep)
    t0 = clock.now
    assert sup.run() == st.SUCCEEDED
    assert states(state, job) == ["STALLED", "SUCCEEDED"]
    first = state.attempts(job.id)[0]
    assert "no training progress for 120 s" in first.reason
    assert 120 <= first.ended - t0 <= 125  # found at the first poll past the stall time
    assert backend.live == set()
    kinds = [e["kind"] for e in state.events(job.id)]
    assert "alert" in kinds


def test_a_run_that_hangs_every_time_fails_after_three():
    state = st.State()
    job, _, backend, clock = make(state, ["hung"] * 5)
    state.set_job(job.id, options={**state.job(job.id).options, "stall_after": 60.0})
    sup = Supervisor(state, job.id, backend_for=lambda infra: backend, clock=clock.time, sleep=clock.sleep)
    assert sup.run() == st.FAILED
    assert states(state, job) == ["STALLED"] * 3
    assert "stalled 3 times in a row" in state.job(job.id).reason


def test_no_stall_check_by_default_before_any_progress():
    state = st.State()
    job, sup, backend, clock = make(state, ["succeeded"], polls=60, poll_interval=10.0)  # 10 min
    assert sup.run() == st.SUCCEEDED and states(state, job) == ["SUCCEEDED"]
