"""VastBackend against the fake as strict as the service (issue 12, items 1-6), with the real SDK.

The fake keeps the documented per-IP rate limits (429 without Retry-After), may rent an offer and
answer 504, lists a new instance only after a while (and shows it with null fields), reports an
outbid after the SSH link has dropped, pages its instance list 25 at a time and refuses a wrong
key. It runs on the same fake clock as the backend, so rate limits and boots take no real time.
Each test ends with the same check: nothing billing that the ledger does not know of, nothing open
in the ledger that does not exist.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from launcher import state as st
from launcher.backends.base import (BackendError, CredentialsError, HostLostError, NoCapacityError,
                                    ProvisionRequest, RunState, RunStatus)
from launcher.backends.vast.ledger import Ledger

HOST = SimpleNamespace(hostname="127.0.0.1", port=2222)  # never connected to: the SSH layer is stubbed
LOST = RunStatus(RunState.PREEMPTED, reason="host lost: vast unreachable for 6.0 s")


def req(attempt=1, job="job-1", **resources):
    return ProvisionRequest(job, attempt, "vast", {"accelerators": "RTX4090:1", **resources})


def up(backend, handle):
    backend.wait_reachable(handle, timeout=600)
    return handle


def new_job(name="j") -> str:
    """A job the state knows and that runs (the sweeps leave its instances alone)."""
    return st.State().create_job(name=name, task_path=None, task_yaml="run: x", infra="vast", store_uri=None,
                                 options={}).run_id


def no_leak(fake):
    """Every instance that exists has an open ledger row, and every open row an instance."""
    live = set(fake.live()) - {i for i, x in fake.instances.items() if x["offer_id"] is None}
    open_rows = {e.instance_id for e in Ledger().leaked()}
    assert live == open_rows, f"instances {sorted(live)} vs open ledger rows {sorted(open_rows, key=str)}"


def poll_until_done(backend, handle, clock, seconds=120):
    end = clock() + seconds
    while clock() < end:
        status = backend.poll(handle)
        if status.done:
            return status
        clock.sleep(1.0)
    raise AssertionError(f"poll still RUNNING after {seconds} s: {status}")


# --- 1. rate limits ------------------------------------------------------------------------------
def test_creates_in_a_row_are_paced_and_none_is_refused(backend, fake, clock):
    for _ in range(3):
        fake.add_offer(HOST)
    handles = [backend.provision(req(job=new_job())) for _ in range(3)]
    assert fake.throttled == [] and len({h["instance_id"] for h in handles}) == 3
    assert [e.state for e in Ledger().entries()] == ["created"] * 3
    assert clock.slept >= 2 * 4.5  # the backend waited (on the fake clock) between the creates
    no_leak(fake)


def test_a_429_on_create_is_backed_off_not_read_as_offer_taken(backend, fake, clock):
    first = fake.add_offer(HOST, dph_total=0.1)
    fake.add_offer(HOST, dph_total=0.2)
    fake._throttled("127.0.0.1", "create")  # another process on this IP just created something
    h = backend.provision(req())
    assert h["offer"]["id"] == first and fake.throttled[:1] == ["create"]
    [e] = Ledger().entries()
    assert (e.state, e.instance_id) == ("created", h["instance_id"])  # no row closed as "refused"
    no_leak(fake)


def test_sweep_destroys_back_to_back_without_a_failure(backend, fake):
    state = st.State()
    jobs = [new_job() for _ in range(4)]
    for job in jobs:
        fake.add_offer(HOST)
        backend.provision(req(job=job))  # an attempt whose terminate never came
    for job in jobs:
        state.transition(state.job(job).id, st.CANCELLING)
    assert len(fake.live()) == 4
    backend.terminate({"job_id": jobs[0]})
    assert fake.live() == [] and Ledger().leaked() == [] and "destroy" not in fake.throttled


# --- 2. a create that happened although it failed ------------------------------------------------
def test_create_that_commits_then_answers_504_is_found_by_its_label(backend, fake):
    fake.add_others(30)  # the account's other instances: ours is on the list's second page
    first = fake.add_offer(HOST, dph_total=0.1)
    fake.add_offer(HOST, dph_total=0.2)
    fake.commit_then_fail.append(504)
    h = backend.provision(req())
    assert h["offer"]["id"] == first and fake.calls("create") == 1  # not re-sent blindly
    assert fake.instances[h["instance_id"]]["label"] == h["label"]
    [e] = Ledger().entries()
    assert (e.state, e.instance_id) == ("created", h["instance_id"])
    no_leak(fake)
    backend.terminate(h)
    assert len(fake.live()) == 30 and Ledger().leaked() == []  # the others are left alone


def test_the_sweep_finds_an_instance_by_label_that_the_ledger_closed(backend, fake, clock):
    fake.add_others(26)
    oid = fake.add_offer(HOST)
    label = "launch:job-1:a1:0badc0de"
    row = Ledger().creating("job-1", 1, label, {"id": oid}, 0.4, None)
    Ledger().close(row, "create refused: HTTP 400", made=False)  # what the old backend did after a 504
    with fake.lock:
        fake.create(oid, {"label": label})
    iid = max(fake.instances)
    clock.sleep(fake.new_lag_s)  # listed by now
    backend.terminate({"job_id": "job-1"})
    assert fake.instances[iid].get("destroyed")
    assert len(fake.live()) == 26 and Ledger().leaked() == []


# --- 3. right after create -----------------------------------------------------------------------
def test_null_fields_right_after_create_are_still_starting(backend, fake, clock):
    fake.new_lag_s = 20.0
    fake.add_offer(HOST, loading_s=30.0)
    h = backend.provision(req())
    raw = fake._row(fake.instances[h["instance_id"]])
    assert raw["start_date"] is None and raw["actual_status"] is None  # as the service shows it
    up(backend, h)
    assert h["nodes"] and backend.ssh.calls[0][0] == "attach"


def test_an_instance_not_known_yet_right_after_create_is_not_gone(backend, fake):
    fake.new_lag_s = 10.0
    fake.add_offer(HOST, loading_s=15.0)
    h = backend.provision(req())
    real_row = fake._row
    fake._row = lambda inst: None if not fake._visible(inst) else real_row(inst)  # show: instances null
    up(backend, h)
    assert h["nodes"] and Ledger().entry(h["ledger_row"]).reason == ""


# --- 4. outbid and status ------------------------------------------------------------------------
def test_an_outbid_reported_after_the_ssh_link_dropped_counts_as_an_outbid(backend, fake, clock):
    fake.add_offer(HOST, min_bid=0.1)
    h = up(backend, backend.provision(req(use_spot=True)))
    fake.outbid(h["instance_id"], report_after=12.0)  # SSH notices first, the API later
    backend.ssh.status = LOST
    status = poll_until_done(backend, h, clock)
    assert status.state is RunState.PREEMPTED and status.reason.startswith("outbid"), status
    assert Ledger().outbids("job-1") == 1


def test_a_lost_link_on_a_box_the_api_still_calls_running_is_host_lost_after_the_settle(backend, fake, clock):
    fake.add_offer(HOST, min_bid=0.1)
    h = up(backend, backend.provision(req(use_spot=True)))
    backend.ssh.status = LOST
    started = clock()
    status = poll_until_done(backend, h, clock)
    assert status.state is RunState.PREEMPTED and status.reason.startswith("host lost")
    assert clock() - started >= backend.settings.settle and Ledger().outbids("job-1") == 0


def test_a_brief_offline_is_not_a_loss(backend, fake, clock):
    fake.add_offer(HOST)
    h = up(backend, backend.provision(req()))
    fake.report(h["instance_id"], 0, actual_status="offline")
    fake.report(h["instance_id"], 20, actual_status="running")
    end = clock() + 40
    while clock() < end:
        assert backend.poll(h).state is RunState.RUNNING
        clock.sleep(1.0)


def test_an_exited_container_is_a_failed_run_not_an_outbid(backend, fake, clock):
    fake.add_offer(HOST, min_bid=0.1)
    h = up(backend, backend.provision(req(use_spot=True)))
    fake.report(h["instance_id"], 3, actual_status="exited", cur_state="stopped")
    backend.ssh.status = LOST
    status = poll_until_done(backend, h, clock)
    assert status.state is RunState.FAILED and "exited" in status.reason, status
    assert Ledger().outbids("job-1") == 0


# --- 5. slow boots -------------------------------------------------------------------------------
def test_offers_with_a_slow_download_link_are_not_rented(backend, fake):
    fake.add_offer(HOST, dph_total=0.1, inet_down=20.0)
    fast = fake.add_offer(HOST, dph_total=0.3, inet_down=900.0)
    assert backend.provision(req())["offer"]["id"] == fast


def test_a_box_that_does_not_boot_in_time_is_given_up_and_another_rented(backend, fake, clock):
    backend.settings = replace(backend.settings, boot_timeout=300)
    slow = fake.add_offer(HOST, dph_total=0.1, loading_s=10_000)
    fast = fake.add_offer(HOST, dph_total=0.3)
    h = backend.provision(req())
    assert h["offer"]["id"] == slow
    with pytest.raises(HostLostError, match="not booted"):
        backend.wait_reachable(h, timeout=3600)
    backend.terminate(h)
    assert "not booted" in Ledger().entry(h["ledger_row"]).reason
    h2 = up(backend, backend.provision(req(2)))  # the slow machine's offer is rentable again
    assert h2["offer"]["id"] == fast
    backend.terminate(h2)
    assert fake.live() == [] and Ledger().leaked() == []


# --- 6. keys, pages and authentication -----------------------------------------------------------
def test_the_key_goes_to_the_account_once_and_every_new_instance_has_it(backend, fake):
    fake.add_offer(HOST)
    fake.add_offer(HOST)
    h1 = up(backend, backend.provision(req()))
    h2 = up(backend, backend.provision(req(job=new_job())))
    assert [k["public_key"] for k in fake.account_keys] == ["ssh-ed25519 AAAATEST launch@test"]
    for h in (h1, h2):
        assert fake.instances[h["instance_id"]]["ssh_keys"] == ["ssh-ed25519 AAAATEST launch@test"]


def test_without_the_account_key_the_instance_key_is_attached_once_it_runs(backend, fake):
    fake.fail["keys"] = 500  # the account's keys cannot be read: attach per instance
    fake.add_offer(HOST, loading_s=20)
    h = up(backend, backend.provision(req()))
    assert fake.instances[h["instance_id"]]["ssh_keys"] == ["ssh-ed25519 AAAATEST launch@test"]
    assert fake.live() == [h["instance_id"]] and fake.calls("attach") == 1


def test_a_key_the_instance_never_accepts_gives_the_box_up_with_the_reason(backend, fake):
    backend.settings = replace(backend.settings, boot_timeout=120)
    fake.fail["keys"] = 500
    fake.add_offer(HOST)
    h = backend.provision(req())
    fake.fail["attach"] = 400
    with pytest.raises(HostLostError, match="not booted"):
        backend.wait_reachable(h, timeout=600)
    assert fake.calls("attach") > 3 and "attaching the SSH key" in Ledger().entry(h["ledger_row"]).reason
    backend.terminate(h)
    assert fake.live() == [] and Ledger().leaked() == []


def test_a_refused_api_key_fails_at_once_and_says_so(backend, fake):
    fake.add_offer(HOST)
    fake.api_key = "revoked"
    with pytest.raises(CredentialsError, match="refused the API key .*HTTP 401.*VAST_API_KEY"):
        backend.provision(req())
    assert fake.creates() == [] and Ledger().entries() == []


def test_a_refused_key_is_not_no_capacity(backend, fake):
    fake.add_offer(HOST)
    fake.api_key = "revoked"
    with pytest.raises(BackendError) as e:
        backend.provision(req())
    assert not isinstance(e.value, NoCapacityError)
