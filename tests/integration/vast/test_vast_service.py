"""`launch up --infra vast` on a day when Vast.ai behaves as it does (issue 12): the real supervisor
and the real vastai SDK against the strict fake (per-IP rate limits with 429s, null fields and no
listing right after create, late status reports, 25-row pages), whose offers rent real sshd hosts.

- The first create rents the offer and answers 504; the account has 30 other instances, so ours
  is on the list's second page; the cheapest offer has a slow download link. The outbid of the
  first instance reaches the API only after SSH has lost the host. The job still succeeds: the
  504 instance is found by its label (never a second create on it), the slow offer is never
  rented, the outbid is counted as one, the run resumes on the next offer, nothing is left billing
  and the other instances are left alone.
- A key the API refuses fails the job at once, saying so, instead of waiting for capacity.
"""

from __future__ import annotations

from pathlib import Path
import time

import pytest

from launcher import state as st
from launcher.backends.vast.ledger import Ledger
from launcher.testing import load_by_path, toy_digest, wait_for

pytestmark = pytest.mark.integration

jobs = load_by_path(Path(__file__).with_name("jobs.py"))
STEPS, toy_task, store_log = jobs.STEPS, jobs.toy_task, jobs.store_log


def test_a_504_create_a_late_outbid_and_paged_listing_still_end_in_success(vast, tmp_path):
    others = vast.api.add_others(30)
    slow = vast.api.add_offer(vast.lab.add_host("slow-link"), min_bid=0.05, inet_down=20.0)
    a = vast.add_host("host-a", min_bid=0.10)
    b = vast.add_host("host-b", min_bid=0.20)
    vast.api.commit_then_fail.append(504)
    vast.launch("up", str(toy_task(tmp_path)), "--infra", "vast", "--store", vast.store, "-d")
    job = st.State().jobs()[-1]

    wait_for(lambda: "step 8 " in store_log(job, 1), 180, "attempt 1 under way (step 8 in the store)")
    [first] = [i for i in vast.api.live() if i not in others]
    vast.api.outbid(first, report_after=12.0)  # SSH loses the host at once, the API says so 12 s later
    final = vast.wait_state(job.id, ("SUCCEEDED", "FAILED", "CANCELLED"), 240)

    assert final["state"] == "SUCCEEDED", final
    att1 = final["attempts"][0]
    assert att1["state"] == "PREEMPTED" and att1["reason"].startswith("outbid"), att1
    assert Ledger().outbids(job.run_id) == 1
    creates = vast.api.creates()
    assert [c["offer_id"] for c in creates] == [a.offer_id, b.offer_id]  # the 504 one sent once
    assert slow not in [c["offer_id"] for c in creates]
    log2 = (b.root / "attempts" / job.run_id / "attempt-2" / "run.log").read_text()
    assert "resuming from checkpoint step" in log2
    assert log2.split("final digest")[-1].split()[0] == toy_digest(STEPS, tmp_path / "clean")
    ours = [i for i in vast.api.instances if i not in others]
    assert [e.instance_id for e in Ledger().entries(job.run_id)] == ours
    assert Ledger().leaked() == [] and vast.api.live() == others
    assert vast.api.throttled == []  # one process, paced: not one call came too soon


def test_a_refused_api_key_fails_the_job_at_once(vast, tmp_path):
    vast.add_host("host-a")
    vast.api.api_key = "another-key"  # ours is refused from now on (revoked, mistyped)
    started = time.monotonic()
    vast.launch("up", str(toy_task(tmp_path)), "--infra", "vast", "--store", vast.store, "-d")
    job = st.State().jobs()[-1]
    final = vast.wait_state(job.id, ("SUCCEEDED", "FAILED", "CANCELLED"), 60)
    assert final["state"] == "FAILED" and time.monotonic() - started < 60
    assert len(final["attempts"]) == 1 and "refused the API key" in final["attempts"][0]["reason"]
    assert "VAST_API_KEY" in final["attempts"][0]["reason"] and "capacity" not in final["attempts"][0]["reason"]
    assert vast.api.creates() == [] and Ledger().leaked() == []
