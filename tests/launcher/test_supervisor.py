"""The supervisor loop over a scripted FakeBackend and a fake clock: no test sleeps."""

from __future__ import annotations

import dataclasses
import json
import signal

import pytest

from launcher import daemon, state as st
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



def test_the_agents_word_on_an_unreachable_store_goes_to_the_jobs_reason_and_events():
    state = st.State()
    job, sup, backend, _ = make(state, ["succeeded"], polls=6)
    notes = iter(["", "store unreachable: 1 queued", "store unreachable: 2 queued", "", ""])
    reasons = []

    def poll(handle, poll=backend.poll):
        status = poll(handle)
        reasons.append(state.job(job.id).reason)
        return status if status.done else dataclasses.replace(status, store=next(notes, ""))
    backend.poll = poll
    assert sup.run() == st.SUCCEEDED
    on = "attempt 1 on fake-1"
    assert reasons[:5] == [on, on, f"{on}; store unreachable: 1 queued", f"{on}; store unreachable: 2 queued", on]
    assert [e["message"] for e in state.events(job.id) if e["kind"] == "store"] == [
        "attempt 1: store unreachable: 1 queued", "attempt 1: the store answers again; the queued checkpoints go up"]


# --- a supervisor killed at a phase and restarted (launcher.daemon's test hook) ------------------

class Killed(BaseException):
    """Stands for the SIGKILL: no ``except`` of the supervisor catches it."""


class OneMachine(FakeBackend):
    """Refuses to rent a machine while another one of the job is still up."""

    def provision(self, req):
        assert not self.live, f"a second machine rented while {sorted(self.live)} is up"
        return super().provision(req)


def kill_at(monkeypatch, phase):
    fired = []

    def kill_point(p, job):
        if p == phase and not fired:
            fired.append(p)
            raise Killed(p)
    monkeypatch.setattr(daemon, "kill_point", kill_point)
    return fired


def restart(state, job, backend, clock, dead_for=3.0):
    clock.now += dead_for  # time passes before the next `launch` command restarts it
    return Supervisor(state, job.id, backend_for=lambda infra: backend, clock=clock.time, sleep=clock.sleep)


@pytest.mark.parametrize("phase", ["provisioned", "running", "attempt-ended:preempted", "backoff",
                                   "attempt-ended:succeeded"])
def test_a_killed_supervisor_restarted_ends_the_job_as_an_unkilled_one(monkeypatch, phase):
    state = st.State()
    job = state.create_job(name="t", task_path=None, task_yaml=TASK.format(errors=0, extra=""),
                           infra="fake", store_uri="", options={})
    clock, backend = FakeClock(), OneMachine(["preempted", "preempted", "succeeded"])
    fired = kill_at(monkeypatch, phase)
    with pytest.raises(Killed):
        restart(state, job, backend, clock, 0).run()
    assert fired == [phase]
    assert restart(state, job, backend, clock).run() == st.SUCCEEDED
    assert states(state, job) == ["PREEMPTED", "PREEMPTED", "SUCCEEDED"]  # no attempt after the success
    assert backend.live == set()
    a = state.attempts(job.id)
    assert 5 <= a[2].started - a[1].ended < 6  # the back-off after 2 preemptions, from the end, once


@pytest.mark.parametrize("phase", ["provisioned", "running", "attempt-ended:preempted"])
def test_a_restarted_supervisor_that_finds_the_cancel_tears_the_attempt_down(monkeypatch, phase):
    state = st.State()
    job = state.create_job(name="t", task_path=None, task_yaml=TASK.format(errors=0, extra=""),
                           infra="fake", store_uri="", options={})
    clock, backend = FakeClock(), OneMachine(["preempted"])
    kill_at(monkeypatch, phase)
    with pytest.raises(Killed):
        restart(state, job, backend, clock, 0).run()
    state.transition(job.id, st.CANCELLING, "launch down")  # while no supervisor runs
    assert restart(state, job, backend, clock).run() == st.CANCELLED
    assert states(state, job) == (["PREEMPTED"] if phase.startswith("attempt-ended") else ["CANCELLED"])
    assert backend.live == set()


def test_the_kill_hook_fires_once_per_job_and_phase_and_only_in_a_supervisor(monkeypatch):
    sent = []
    monkeypatch.setattr(daemon.os, "kill", lambda pid, sig: sent.append(sig))
    monkeypatch.setenv(daemon.KILL_AT_ENV, "running, backoff")
    state = st.State()
    job = state.create_job(name="t", task_path=None, task_yaml="run: x", infra="fake", store_uri="", options={})
    daemon.kill_point("running", job.id)
    assert sent == []  # not armed: not a supervisor process
    monkeypatch.setattr(daemon, "_armed", True)
    for phase, ref in [("running", job.id), ("running", job.run_id), ("vast:before-create", job.id),
                       ("backoff", job.run_id)]:
        daemon.kill_point(phase, ref)
    assert sent == [signal.SIGKILL, signal.SIGKILL]
    assert [e["message"] for e in state.events(job.id) if e["kind"] == daemon.KILL_EVENT] == [
        "LAUNCH_TEST_KILL_AT: SIGKILL at running", "LAUNCH_TEST_KILL_AT: SIGKILL at backoff"]
