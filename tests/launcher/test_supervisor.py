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


class AgentDrills(FakeBackend):
    """A backend whose agent fires the drill it is handed: each attempt commits a checkpoint of
    ``progress[n]`` steps (if any) into the store, then ends as its drill says: recorded in the
    store and lost (kill) or preempted (term), or as scripted when it got none."""

    agent_drills = True

    def __init__(self, store, tmp, progress, **kw):
        super().__init__(**kw)
        self.store, self.tmp, self.progress, self.specs = store, tmp, progress, []

    def start_run(self, handle, spec):
        super().start_run(handle, spec)
        self.specs.append(spec)
        handle["drill_spec"], handle["n"] = spec.drill, spec.attempt

    def poll(self, handle):
        from launcher import checkpoints, contract

        if handle["polls"] == 0 and self.progress.get(handle["n"]):
            d = self.tmp / f"a{handle['n']}" / contract.step_dirname(self.progress[handle["n"]])
            d.mkdir(parents=True)
            (d / "state.pt").write_bytes(b"w")
            contract.write_manifest(d, contract.build_manifest(d, step=self.progress[handle["n"]]))
            checkpoints.upload_checkpoint(self.store, d)
        if handle["polls"] == 1 and handle["drill_spec"]:
            kind = handle["drill_spec"].split("@")[0]
            self.store.child("logs/").put_bytes(contract.drill_name(handle["n"]), json.dumps(
                {"drill": handle["drill_spec"], "step": 40, "phase": ""}).encode())
            handle["outcome"] = "preempted" if kind == "term" else "lost"
            handle["signalled"] = True
        return super().poll(handle)


def agent_drill_job(tmp_path, chaos, script, progress):
    from launcher.store import open_store

    state = st.State()
    job = state.create_job(name="t", task_path=None, task_yaml=TASK.format(errors=0, extra=""), infra="fake",
                           store_uri=f"file://{tmp_path}/store", options={"chaos": chaos})
    clock = FakeClock()
    backend = AgentDrills(open_store(state.job(job.id).store_uri), tmp_path, progress, script=script,
                          polls_per_run=5)
    sup = Supervisor(state, job.id, backend_for=lambda infra: backend, clock=clock.time, sleep=clock.sleep)
    return state, job, sup, backend, clock


def test_the_agent_gets_each_share_drill_in_turn_and_the_store_says_which_fired(tmp_path):
    state, job, sup, backend, clock = agent_drill_job(
        tmp_path, "kill@20%,term@50%", ["succeeded"] * 4, {1: 30, 2: 50})
    # Attempt 3 is preempted for real before its drill fires: the drill stays pending.
    orig = backend.poll

    def poll(handle):
        if handle["n"] == 3 and handle["polls"] == 0:
            handle["drill_spec"], handle["outcome"] = "", "preempted"
        return orig(handle)
    backend.poll = poll
    assert sup.run() == st.SUCCEEDED
    assert [s.drill for s in backend.specs][:2] == ["kill@20%", "term@50%"]
    reasons = [a.reason for a in state.attempts(job.id)]
    assert reasons[0].startswith("fire drill kill@20%: machine lost") and reasons[1].startswith("fire drill term@50%:")
    assert backend.signals == []  # the supervisor delivered nothing itself
    chaos = [e["message"] for e in state.events(job.id) if e["kind"] == "chaos"]
    assert "fire drill kill@20% on attempt 1, at step 40" in chaos
    assert "fire drill kill@20% hit attempt 1 at step 40; the store holds step 30: 10 steps to redo" in chaos


def test_a_real_preemption_leaves_the_drill_for_the_next_attempt(tmp_path):
    state, job, sup, backend, clock = agent_drill_job(tmp_path, "kill@20%", ["lost", "succeeded", "succeeded"], {})
    orig = backend.start_run

    def start_run(handle, spec):
        orig(handle, spec)
        if spec.attempt == 1:
            handle["drill_spec"] = ""  # its agent never got to fire it
    backend.start_run = start_run
    assert sup.run() == st.SUCCEEDED
    assert [s.drill for s in backend.specs] == ["kill@20%", "kill@20%", ""]
    assert [a.state for a in state.attempts(job.id)] == ["PREEMPTED", "PREEMPTED", "SUCCEEDED"]
    assert "fire drill" not in state.attempts(job.id)[0].reason


def test_preemptions_that_keep_committing_checkpoints_do_not_back_off(tmp_path):
    state, job, sup, backend, clock = agent_drill_job(
        tmp_path, "", ["preempted"] * 6 + ["succeeded"], {n: 10 * n for n in range(1, 7)})
    assert sup.run() == st.SUCCEEDED
    assert not [e for e in state.events(job.id) if "relaunching in" in e["message"]]
    assert all(a.handle.get("progressed") for a in state.attempts(job.id)[:6])


def test_preemptions_without_progress_back_off(tmp_path):
    state, job, sup, backend, clock = agent_drill_job(tmp_path, "", ["preempted"] * 4 + ["succeeded"], {1: 10})
    assert sup.run() == st.SUCCEEDED
    waits = [e["message"] for e in state.events(job.id) if "relaunching in" in e["message"]]
    assert [w.split(" after")[0] for w in waits] == ["relaunching in 5 s", "relaunching in 10 s"]


def test_drills_left_when_the_training_ends_are_reported(tmp_path):
    state, job, sup, backend, clock = agent_drill_job(tmp_path, "kill@99%", ["succeeded"], {})
    backend.start_run = lambda handle, spec: (FakeBackend.start_run(backend, handle, spec),
                                              handle.update(drill_spec="", n=spec.attempt))
    assert sup.run() == st.SUCCEEDED
    assert "fire drills not fired (the training ended first): kill@99%" in [e["message"] for e in state.events(job.id)]


def test_store_progress_of_an_earlier_attempt_does_not_fire_a_share_drill(tmp_path):
    from launcher.store import open_store

    state = st.State()
    job = state.create_job(name="t", task_path=None, task_yaml=TASK.format(errors=0, extra=""), infra="fake",
                           store_uri=f"file://{tmp_path}/store", options={"chaos": "kill@30%"})
    open_store(state.job(job.id).store_uri).put_bytes("metrics.jsonl", json.dumps(
        {"step": 50, "total_steps": 100, "attempt": 1}).encode())
    state.add_attempt(job.id, handle={"option": 0})
    state.set_attempt(job.id, 1, state="PREEMPTED", ended=1.0)
    clock = FakeClock()
    backend = FakeBackend(["succeeded"], polls_per_run=5)
    sup = Supervisor(state, job.id, backend_for=lambda infra: backend, clock=clock.time, sleep=clock.sleep)
    assert sup.run() == st.SUCCEEDED
    assert backend.signals == []  # attempt 2 never wrote metrics of its own


def test_drills_that_end_attempts_without_progress_do_not_back_off(tmp_path):
    state, job, sup, backend, clock = agent_drill_job(tmp_path, "kill@10%,kill@11%,term@12%,kill@13%",
                                                      ["succeeded"] * 5, {})
    assert sup.run() == st.SUCCEEDED
    assert [a.state for a in state.attempts(job.id)] == ["PREEMPTED"] * 4 + ["SUCCEEDED"]
    assert not [e for e in state.events(job.id) if "relaunching in" in e["message"]]
    assert all(a.handle["drilled"] and not a.handle["progressed"] for a in state.attempts(job.id)[:4])


def test_a_restarted_supervisor_counts_a_drill_fired_on_the_machine_once(tmp_path):
    state, job, sup, backend, clock = agent_drill_job(tmp_path, "kill@10%,kill@20%", ["succeeded"] * 3, {})
    handle = {"drill": "kill@10%"}
    sup._job_store().child("logs/").put_bytes("attempt-1.drill", json.dumps({"drill": "kill@10%", "step": 12}).encode())
    assert sup._drill_fired_on_machine(1, handle)["step"] == 12
    assert sup._drill_fired_on_machine(1, handle)["step"] == 12  # asked again after a restart
    assert state.job(job.id).options["chaos_fired"] == 1
    assert [e["message"] for e in state.events(job.id) if e["kind"] == "chaos"] == [
        "fire drill kill@10% on attempt 1, at step 12"]


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
