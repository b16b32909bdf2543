"""The supervisor SIGKILLed at chosen phases of a Vast.ai job's life, restarted by the next
`launch` command each time: the job ends as an unkilled run does, never has two instances (or two
attempts) at once, and leaves nothing billing.

The kills are deterministic: ``LAUNCH_TEST_KILL_AT`` (the supervisor's test hook, see
``launcher.daemon``) names phases, and each fires once per job. The test's own `launch status`
calls are what restart the supervisor.

- A job goes through: killed after its ledger row but before the create call; killed while the
  restarted supervisor abandons that attempt (its end recorded, nothing torn down yet); killed
  just after the next create call (the instance exists, the ledger does not know its id); killed
  in the back-off that this second abandoned attempt (a second preemption in a row) brings;
  killed while its run goes; outbid; no capacity until the test adds a host; killed after the
  run succeeded, before the job is marked so. It ends SUCCEEDED with the digest of an
  uninterrupted run, and no attempt is started after the success.
- A job whose supervisor is killed just after its create call, while the new instance is not
  listed yet: the restarted one waits for it and destroys it before it rents again. Then killed
  while the run goes, restarted by `launch down`, and killed again as it starts tearing down:
  down finishes the teardown itself.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from launcher import daemon, state as st
from launcher.backends.vast.ledger import Ledger
from launcher.testing import load_by_path, toy_digest, wait_for

jobs = load_by_path(Path(__file__).with_name("jobs.py"))
STEPS, store_log, toy_task = jobs.STEPS, jobs.store_log, jobs.toy_task

pytestmark = pytest.mark.integration

RESTARTED = "supervisor was not running: restarted"


def kills(job: st.Job) -> list[str]:
    return [e["message"].rsplit(" ", 1)[1] for e in st.State().events(job.id) if e["kind"] == daemon.KILL_EVENT]


class Watch:
    """Polls `launch status JOB` (which restarts a dead supervisor) until a condition holds, and
    checks at every poll that the job never has two live instances or two unfinished attempts."""

    def __init__(self, vast, job: st.Job):
        self.vast, self.job, self.restarts = vast, job, 0

    def until(self, pred, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.vast.launch("status", str(self.job.id), "--json")
            self.restarts += "restarted the supervisor" in r.stderr
            self.check()
            value = pred()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; kills so far: "
                             f"{kills(self.job)}; attempts: {self.attempts()}")

    def attempts(self) -> list[st.Attempt]:
        return st.State().attempts(self.job.id)

    def check(self) -> None:
        with self.vast.api.lock:
            live = [i for i, x in self.vast.api.instances.items()
                    if not x.get("destroyed") and str(x.get("label")).startswith(f"launch:{self.job.run_id}:")]
        assert len(live) <= 1, f"two live instances for one job: {live}"
        unfinished = [a.n for a in self.attempts() if a.ended is None]
        assert len(unfinished) <= 1, f"two unfinished attempts: {unfinished}"


def print_timeline(job: st.Job) -> None:
    events = st.State().events(job.id)
    for e in events:
        print(f"{e['ts'] - events[0]['ts']:7.1f} s  {e['kind']:10} {e['message'][:110]}")


def assert_one_at_a_time(vast, job: st.Job) -> None:
    """Over the whole run: each instance of the job was destroyed before the next was created,
    and each attempt ended before the next started."""
    mine = sorted((x["start_date"], x["destroyed"]) for x in vast.api.instances.values()
                  if str(x.get("label")).startswith(f"launch:{job.run_id}:"))
    assert all(end is not None for _, end in mine)
    assert all(mine[i][1] <= mine[i + 1][0] for i in range(len(mine) - 1)), mine
    attempts = st.State().attempts(job.id)
    assert all(attempts[i].ended <= attempts[i + 1].started for i in range(len(attempts) - 1))


def assert_nothing_billing(vast, job: st.Job) -> None:
    entries = Ledger().entries(job.run_id)
    made = [e for e in entries if e.instance_id is not None]
    assert Ledger().leaked() == [], [(e.id, e.state, e.reason) for e in Ledger().leaked()]
    assert len(made) == len(vast.api.instances) and vast.api.live() == []
    assert vast.lab.job_pids(job.run_id) == []


def test_supervisor_killed_at_every_phase_ends_the_same_and_leaks_nothing(vast, tmp_path, monkeypatch):
    phases = ["vast:before-create", "attempt-ended:preempted", "vast:after-create", "backoff",
              "running", "attempt-ended:succeeded"]
    monkeypatch.setitem(vast.env, daemon.KILL_AT_ENV, ",".join(phases))
    monkeypatch.setitem(vast.env, "LAUNCH_VAST_CREATE_SETTLE", "3")
    vast.add_host("host-a", min_bid=0.10, dph_total=0.50)
    vast.add_host("host-b", min_bid=0.20, dph_total=0.60)
    started = time.monotonic()
    vast.launch("up", str(toy_task(tmp_path)), "--infra", "vast", "--store", vast.store, "-d")
    job = st.State().jobs()[-1]
    w = Watch(vast, job)

    # Attempt 3 (1: killed before its create; 2: killed after it) runs; outbid it under way.
    w.until(lambda: "running" in kills(job) and "step 5 " in store_log(job, 3), 150, "attempt 3 under way")
    [iid] = vast.api.live()
    vast.api.outbid(iid)
    # Every offer is taken now: the relaunch finds no capacity until a host is added.
    w.until(lambda: any(a.state == "NO_CAPACITY" for a in w.attempts()), 90, "a relaunch with no capacity")
    c = vast.add_host("host-c", min_bid=0.30, dph_total=0.70)
    w.until(lambda: st.State().job(job.id).terminal, 150, "the job to end")
    print(f"\n{len(phases)} supervisor kills, job ended in {time.monotonic() - started:.0f} s")
    print_timeline(job)

    final = vast.status(job.id)
    assert final["state"] == "SUCCEEDED", final
    assert kills(job) == phases  # each phase killed it once, in the order of the job's life
    restarted = [e for e in st.State().events(job.id) if e["message"] == RESTARTED]
    assert len(restarted) == len(phases) and w.restarts == len(phases)
    attempts = w.attempts()
    assert [a.state for a in attempts] == ["PREEMPTED", "PREEMPTED", "PREEMPTED", "NO_CAPACITY", "SUCCEEDED"]
    assert [a.reason for a in attempts[:2]] == ["supervisor restarted while starting"] * 2
    assert attempts[2].reason.startswith("outbid")
    log = (c.root / "attempts" / job.run_id / f"attempt-{attempts[-1].n}" / "run.log").read_text()
    assert "resuming from checkpoint step" in log
    assert log.split("final digest")[-1].split()[0] == toy_digest(STEPS, tmp_path / "clean")

    rows = Ledger().entries(job.run_id)
    assert [(e.attempt, e.state) for e in rows] == [(1, "not created"), (2, "destroyed"), (3, "destroyed"),
                                                     (5, "destroyed")]
    assert [e.reason for e in rows] == ["create made no instance", "swept", "outbid", "terminated"]
    assert_one_at_a_time(vast, job)
    assert_nothing_billing(vast, job)


def test_a_create_the_dead_supervisor_made_is_waited_for_and_down_finishes_a_killed_teardown(vast, tmp_path,
                                                                                             monkeypatch):
    monkeypatch.setitem(vast.env, daemon.KILL_AT_ENV, "vast:after-create,running,cancel:teardown")
    # A new instance is listed only a while after its create call, longer than a supervisor takes
    # to be restarted: the restarted one must wait for what the dead one's call made before it
    # rents again (no back-off after a first preemption to hide it).
    vast.api.new_lag_s = 12.0
    monkeypatch.setitem(vast.env, "LAUNCH_VAST_CREATE_SETTLE", "20")
    vast.add_host("host-d", min_bid=0.10)
    vast.add_host("host-e", min_bid=0.20)
    vast.launch("up", str(toy_task(tmp_path)), "--infra", "vast", "--store", vast.store, "-d")
    job = st.State().jobs()[-1]

    def killed_at(phase):  # the event comes just before the kill
        return lambda: phase in kills(job) and not daemon.is_supervised(job.id)
    wait_for(killed_at("vast:after-create"), 120, "the supervisor killed after its create call")
    vast.launch("status", str(job.id))  # restarts it
    # No `launch` command from here: the supervisor stays dead until `launch down` runs.
    wait_for(killed_at("running"), 150, "the supervisor killed while the run went")
    assert len(vast.api.live()) == 1

    r = vast.launch("down", str(job.id))
    assert "restarted the supervisor" in r.stderr and f"Job {job.id} CANCELLED" in r.stderr
    assert kills(job) == ["vast:after-create", "running", "cancel:teardown"]
    assert vast.status(job.id)["state"] == "CANCELLED"
    assert [(a.state, a.reason) for a in st.State().attempts(job.id)] == [
        ("PREEMPTED", "supervisor restarted while starting"), ("CANCELLED", "cancelled by launch down")]
    assert [(e.state, e.reason) for e in Ledger().entries(job.run_id)] == [("destroyed", "swept"),
                                                                           ("destroyed", "terminated")]
    assert_one_at_a_time(vast, job)
    assert_nothing_billing(vast, job)
