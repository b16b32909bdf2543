"""One job across providers, end to end: the options [Kaggle with its GPU quota used up, Vast.ai
spot, Vast.ai on demand], in this order. Kaggle has no quota left (no capacity: the next
option); the spot instance is outbid twice (two outbids in a row: the next option); the
on-demand instance finishes the job, resumed from the store each time, with the digest of an
uninterrupted run, and the Vast.ai ledger shows nothing left billing. The real vastai SDK talks
to the HTTP fake of the API whose offers rent real sshd hosts; checkpoints go through a real S3
server; the Kaggle backend is configured against the HTTP fake of Kaggle's API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from launcher import state as st
from launcher.testing import load_by_path, toy_digest, wait_for

pytestmark = pytest.mark.integration

jobs = load_by_path(Path(__file__).with_name("jobs.py"))
recovery = load_by_path(Path(__file__).with_name("test_vast_recovery.py"), "vast_recovery_helpers")
fake_kaggle = load_by_path(Path(__file__).resolve().parents[1] / "fake_kaggle.py")
store_log = jobs.store_log
# Longer than the other Vast tests' toy: two outbids must each land while steps are left. The
# outbid follows three steps in the store log, which the agent uploads every few seconds, so on a
# busy machine an attempt runs well past its third step first (with 40 steps, attempt 3 of a CI
# run finished before its outbid came).
STEPS = 120
TOY = f"python -m launcher.testing toy --steps {STEPS} --step-time 0.2"

TASK = f"""\
name: anywhere
resources:
  disk_size: 40
  ordered:
    - infra: kaggle
      accelerators: T4:1
    - infra: vast
      accelerators: RTX4090:1
      use_spot: true
    - infra: vast
      accelerators: RTX4090:1
      use_spot: false
run: {TOY}
"""


def outbid_attempt(vast, job: st.Job, n: int) -> None:
    """Once attempt ``n`` has made three steps (its log in the store), outbid its instance."""
    wait_for(lambda: len(re.findall(r"step \d+ digest", store_log(job, n))) >= 3, 180,
             f"attempt {n} under way (three steps in the store)")
    [iid] = vast.api.live()
    vast.api.outbid(iid)
    wait_for(lambda: st.State().attempts(job.id)[n - 1].ended, 60, f"attempt {n} to end")


def test_kaggle_out_of_quota_then_vast_spot_outbid_twice_then_vast_on_demand(vast, tmp_path, monkeypatch):
    for name in ("host-a", "host-b", "host-c"):
        vast.add_host(name, min_bid=0.10, dph_total=0.50)
    task = tmp_path / "anywhere.yaml"
    task.write_text(TASK)
    # Kaggle's own quota view says the week's GPU hours are spent (so does launch's count).
    with fake_kaggle.FakeKaggle(tmp_path / "kaggle", quota_hours=30.0, quota_used=30.0) as kaggle:
        for k, v in {**kaggle.env(), "LAUNCH_KAGGLE_WEEKLY_GPU_HOURS": "0.01"}.items():  # < one session
            monkeypatch.setitem(vast.env, k, v)
        out = vast.launch("up", str(task), "--store", vast.store, "-d")
        assert "submitted on kaggle,vast" in out.stderr
        job = st.State().jobs()[-1]
        outbid_attempt(vast, job, 2)
        outbid_attempt(vast, job, 3)
        final = vast.wait_state(job.id, ("SUCCEEDED", "FAILED", "CANCELLED"), 240)
        assert kaggle.pushes == []  # no session was started on a used-up quota

    assert final["state"] == "SUCCEEDED", final
    attempts = final["attempts"]
    assert [(a["state"], a["infra"]) for a in attempts] == [
        ("NO_CAPACITY", "kaggle"), ("PREEMPTED", "vast"), ("PREEMPTED", "vast"), ("SUCCEEDED", "vast")]
    assert "weekly GPU quota" in attempts[0]["reason"]
    assert attempts[1]["reason"].startswith("outbid") and attempts[2]["reason"].startswith("outbid")
    assert [a.handle["option"] for a in st.State().attempts(job.id)] == [0, 1, 1, 2]
    bids = [c["price"] for c in vast.api.creates()]
    assert bids[:2] == [pytest.approx(0.125)] * 2 and bids[2] is None  # the third rents on demand
    events = [e["message"] for e in st.State().events(job.id)]
    assert any("2 outbids in a row on this option: moving to the next" in e for e in events), events
    for n in (3, 4):
        assert "resumed at step" in store_log(st.State().job(job.id), n), f"attempt {n} did not resume"
    assert store_log(st.State().job(job.id), 4).split("final digest")[-1].split()[0] == \
        toy_digest(STEPS, tmp_path / "clean")
    recovery.assert_nothing_leaked(vast, job)
