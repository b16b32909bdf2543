"""`launch up --infra vast` end to end: the real vastai SDK against an HTTP fake of the Vast.ai API
whose offers rent real sshd hosts; checkpoints and logs go through a real S3 server.

- An interruptible instance is outbid mid-run (it stops and every process on its host dies); the
  job rents the next offer, resumes from the store and ends with the digest of an uninterrupted run.
- After LAUNCH_VAST_MAX_OUTBIDS outbids the job rents on-demand: the create call carries no bid.
- `launch down` while the job is recovering (its second instance still booting) destroys every
  instance: the ledger shows as many destroyed as created.
- The API key shows up in no state file, log, store object or process list.
"""

from __future__ import annotations

from pathlib import Path
import subprocess
import time

import pytest

from launcher import state as st
from launcher.backends.vast.ledger import Ledger
from launcher.store import open_store
from launcher.testing import load_by_path, toy_digest, wait_for

pytestmark = pytest.mark.integration

jobs = load_by_path(Path(__file__).with_name("jobs.py"))
STEPS, toy_task, store_log = jobs.STEPS, jobs.toy_task, jobs.store_log


def up(vast, task) -> st.Job:
    vast.launch("up", str(task), "--infra", "vast", "--store", vast.store, "-d")
    return st.State().jobs()[-1]


def outbid_when_under_way(vast, job: st.Job) -> int:
    """Wait for attempt 1's log to show progress in the store, then outbid its instance."""
    wait_for(lambda: "step 8 " in store_log(job, 1), 180, "attempt 1 under way (step 8 in the store)")
    [iid] = vast.api.live()
    vast.api.outbid(iid)
    return iid


def assert_nothing_leaked(vast, job: st.Job) -> None:
    entries = Ledger().entries(job.run_id)
    created = [e for e in entries if e.instance_id is not None]
    destroyed = [e for e in created if e.destroyed is not None]
    print(f"ledger: {len(created)} created, {len(destroyed)} destroyed")
    assert len(created) == len(destroyed) == len(vast.api.instances) and Ledger().leaked() == []
    assert vast.api.live() == [] and vast.lab.job_pids(job.run_id) == []


def assert_no_api_key_anywhere(vast, launch_home, job: st.Job) -> None:
    key = vast.api_key.encode()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert vast.api_key not in ps
    for folder in (launch_home, vast.lab.dir):
        for f in folder.rglob("*"):
            if f.is_file() and not f.is_symlink():
                assert key not in f.read_bytes(), f"the Vast.ai API key leaked into {f}"
    store = open_store(job.store_uri)
    for obj in store.list(""):
        assert key not in store.get_bytes(obj.key), f"the Vast.ai API key leaked into {obj.key}"


def test_outbid_mid_run_rents_another_offer_and_resumes_exactly(vast, tmp_path, launch_home):
    a = vast.add_host("host-a", min_bid=0.10, dph_total=0.50)
    b = vast.add_host("host-b", min_bid=0.20, dph_total=0.60)
    job = up(vast, toy_task(tmp_path))
    first = outbid_when_under_way(vast, job)
    outbid = time.time()

    lost = wait_for(lambda: (x := st.State().attempts(job.id)[0]).ended and x, 30, "attempt 1 to end")
    print(f"\noutbid -> detection: {lost.ended - outbid:.1f} s ({lost.reason})")
    assert lost.state == "PREEMPTED" and lost.reason.startswith("outbid") and lost.ended - outbid <= 10

    final = vast.wait_state(job.id, ("SUCCEEDED", "FAILED", "CANCELLED"), 240)
    assert final["state"] == "SUCCEEDED", final
    log2 = (b.root / "attempts" / job.run_id / "attempt-2" / "run.log").read_text()
    assert "resuming from checkpoint step" in log2
    assert log2.split("final digest")[-1].split()[0] == toy_digest(STEPS, tmp_path / "clean")

    creates = vast.api.creates()
    assert [c["offer_id"] for c in creates] == [a.offer_id, b.offer_id]
    assert [c["price"] for c in creates] == [pytest.approx(0.125), pytest.approx(0.25)]  # min bid x 1.25
    attempts = final["attempts"]
    assert [x["price_per_hour"] for x in attempts] == [pytest.approx(0.125), pytest.approx(0.25)]
    assert [x["host"] for x in attempts] == [f"vast-{first}", f"vast-{max(vast.api.instances)}"]
    assert final["cost"] > 0
    logs = vast.launch("logs", str(job.id)).stdout  # host-a is gone: attempt 1 comes from the store
    assert "===== attempt 1" in logs and "===== attempt 2" in logs and "final digest" in logs
    [e1, e2] = Ledger().entries(job.run_id)
    assert (e1.instance_id, e1.reason, e2.reason) == (first, "outbid", "terminated")
    assert_nothing_leaked(vast, job)
    assert_no_api_key_anywhere(vast, launch_home, job)


def test_bids_exhausted_falls_back_to_on_demand(vast, tmp_path, monkeypatch):
    monkeypatch.setitem(vast.env, "LAUNCH_VAST_MAX_OUTBIDS", "1")
    vast.add_host("host-a", min_bid=0.10, dph_total=0.50)
    b = vast.add_host("host-b", min_bid=0.20, dph_total=0.60)
    job = up(vast, toy_task(tmp_path))
    outbid_when_under_way(vast, job)

    final = vast.wait_state(job.id, ("SUCCEEDED", "FAILED", "CANCELLED"), 240)
    assert final["state"] == "SUCCEEDED", final
    first, second = vast.api.creates()
    assert first["price"] == pytest.approx(0.125) and second["price"] is None  # no bid: on-demand
    assert second["offer_id"] == b.offer_id
    inst2 = vast.api.instances[max(vast.api.instances)]
    assert inst2["is_bid"] is False
    assert [x["price_per_hour"] for x in final["attempts"]] == [pytest.approx(0.125), pytest.approx(0.60)]
    assert any("renting on-demand" in e["message"] for e in st.State().events(job.id))
    assert "resuming from checkpoint step" in (b.root / "attempts" / job.run_id / "attempt-2" / "run.log").read_text()
    assert_nothing_leaked(vast, job)


def test_down_during_recovery_destroys_every_instance(vast, tmp_path, launch_home):
    vast.add_host("host-a", min_bid=0.10)
    vast.add_host("host-b", min_bid=0.20, loading_s=3600)  # attempt 2's instance never finishes booting
    job = up(vast, toy_task(tmp_path))
    outbid_when_under_way(vast, job)
    wait_for(lambda: len(vast.api.instances) == 2 and len(vast.api.live()) == 1, 60,
             "the second instance to be created (and the first destroyed)")
    assert vast.status(job.id)["state"] in ("RECOVERING", "STARTING")

    started = time.monotonic()
    vast.launch("down", str(job.id))
    print(f"\nlaunch down mid-recovery took {time.monotonic() - started:.1f} s")
    assert vast.status(job.id)["state"] == "CANCELLED"
    assert_nothing_leaked(vast, job)
    assert_no_api_key_anywhere(vast, launch_home, job)
