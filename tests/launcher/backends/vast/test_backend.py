"""VastBackend against the HTTP fake of the Vast.ai API, with the real vastai SDK in between.

The SSH layer is replaced by a stub here (the integration tests run it for real on sshd hosts):
these tests are about renting, bidding, noticing an outbid, and never leaking an instance.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from types import SimpleNamespace

import pytest

from launcher import state as st
from launcher.backends.base import (BackendError, CredentialsError, HostLostError, NoCapacityError,
                                    ProvisionRequest, RunState, RunStatus)
from launcher.backends.ssh.backend import SSHBackend
from launcher.backends.vast.backend import RentedSSH, VastBackend
from launcher.backends.vast.ledger import Ledger
from launcher.errors import InfraError

HOST = SimpleNamespace(hostname="127.0.0.1", port=2222)  # never connected to: the SSH layer is stubbed
GPU = {"accelerators": "RTX4090:1"}


def req(attempt=1, job="job-1", **resources):
    return ProvisionRequest(job, attempt, "vast", {**GPU, **resources})


def running(backend, handle):
    backend.wait_reachable(handle, timeout=30)
    return handle


def test_provision_rents_the_cheapest_acceptable_offer_on_demand(backend, fake):
    fake.add_offer(HOST, dph_total=0.50)
    cheap = fake.add_offer(HOST, dph_total=0.30)
    fake.add_offer(HOST, dph_total=0.10, gpu_name="RTX 3090")
    fake.add_offer(HOST, dph_total=0.20, reliability=0.5)
    h = backend.provision(req(disk_size=50))
    assert h["offer"]["id"] == cheap and h["bid"] is None and backend.cost_per_hour(h) == 0.30
    create = fake.creates()[0]
    assert create["offer_id"] == cheap and create["price"] is None and create["disk"] == 50
    assert create["runtype"] == "ssh_proxy" and create["image"].startswith("pytorch/pytorch")
    assert create["label"].startswith("launch:job-1:a1:")
    assert fake.instances[h["instance_id"]]["ssh_keys"] == ["ssh-ed25519 AAAATEST launch@test"]
    [e] = Ledger().entries("job-1")
    assert (e.instance_id, e.offer_id, e.price_per_hour, e.bid, e.open) == (h["instance_id"], cheap, 0.30, None, True)
    json.dumps(h)  # a handle is JSON


def test_spot_bids_the_minimum_bid_times_the_factor(backend, fake):
    backend.settings = replace(backend.settings, bid_factor=1.5)
    fake.add_offer(HOST, min_bid=0.20, dph_total=0.9)
    h = backend.provision(req(use_spot=True))
    assert fake.creates()[0]["price"] == pytest.approx(0.30)
    assert h["bid"] == pytest.approx(0.30) and backend.cost_per_hour(h) == pytest.approx(0.30)
    assert fake.instances[h["instance_id"]]["is_bid"] is True


def test_after_max_outbids_the_job_rents_on_demand(backend, fake):
    backend.settings = replace(backend.settings, max_outbids=2)
    for _ in range(3):
        fake.add_offer(HOST, min_bid=0.1, dph_total=0.4)
    for attempt in (1, 2):
        h = running(backend, backend.provision(req(attempt, use_spot=True)))
        fake.outbid(h["instance_id"], report_after=0)
        assert backend.poll(h).reason.startswith("outbid")
        backend.terminate(h)
    h = backend.provision(req(3, use_spot=True))
    prices = [c["price"] for c in fake.creates()]
    assert prices[:2] == [pytest.approx(0.125)] * 2 and prices[2] is None
    assert h["bid"] is None and backend.cost_per_hour(h) == 0.4
    assert Ledger().outbids("job-1") == 2


def test_no_matching_offer_is_no_capacity_and_creates_nothing(backend, fake):
    fake.add_offer(HOST, gpu_name="RTX 3090")
    with pytest.raises(NoCapacityError, match=r"no on-demand offer matches `gpu_name in \[RTX_4090\]"):
        backend.provision(req())
    assert fake.creates() == [] and Ledger().entries() == []


def test_price_cap_filters_offers(backend, fake):
    backend.settings = replace(backend.settings, max_price=0.25)
    fake.add_offer(HOST, dph_total=0.30)
    with pytest.raises(NoCapacityError):
        backend.provision(req())


def test_a_taken_offer_falls_through_to_the_next(backend, fake):
    first = fake.add_offer(HOST, dph_total=0.1)
    second = fake.add_offer(HOST, dph_total=0.2)
    listed = dict(fake.offers[first])
    fake.offers[first]["rentable"] = False  # someone else takes it between our search and our create
    search = fake.search
    fake.search = lambda q: {"offers": [listed, *search(q)["offers"]]}
    h = backend.provision(req())
    assert h["offer"]["id"] == second
    refused, rented = Ledger().entries("job-1")
    assert (refused.state, refused.open, refused.instance_id) == ("not created", False, None)
    assert "create refused" in refused.reason and rented.instance_id == h["instance_id"]


def test_create_without_answer_finds_the_instance_by_label(backend, fake):
    fake.add_offer(HOST)
    real_create = fake.create

    def create_then_fail(oid, body):
        real_create(oid, body)
        return 500, {"msg": "gateway fell over"}

    fake.create = create_then_fail
    h = backend.provision(req())
    assert h["instance_id"] in fake.instances and Ledger().entries()[0].instance_id == h["instance_id"]


def test_a_create_of_unknown_outcome_stays_in_the_ledger_until_a_sweep_finds_it(backend, fake):
    fake.add_offer(HOST)
    real_create = fake.create

    def create_then_fail(oid, body):
        real_create(oid, body)
        fake.fail["list"] = 503  # ... and the API cannot list instances either, for now
        return 500, {"msg": "gateway fell over"}

    fake.create = create_then_fail
    with pytest.raises(NoCapacityError):
        backend.provision(req())
    [e] = Ledger().leaked()
    assert (e.state, e.instance_id) == ("creating", None)  # not forgotten: it may be billing
    fake.fail.clear()
    backend.terminate({"job_id": "job-1"})
    [iid] = fake.instances
    assert fake.instances[iid].get("destroyed") and Ledger().leaked() == []
    assert Ledger().entries()[0].instance_id == iid


def test_wait_reachable_hands_the_ssh_address_to_the_ssh_layer(backend, fake):
    fake.add_offer(HOST, loading_s=0.3)
    h = running(backend, backend.provision(req()))
    [(_, host)] = backend.ssh.calls
    assert (host.hostname, host.port, host.user) == ("127.0.0.1", 2222, "root")
    assert host.identity_file == backend.settings.ssh_key and h["nodes"]


def test_wait_reachable_gives_up_when_the_job_is_cancelled(backend, fake):
    job = st.State().create_job(name="j", task_path=None, task_yaml="run: x", infra="vast", store_uri=None, options={})
    fake.add_offer(HOST, loading_s=3600)
    h = backend.provision(req(job=job.run_id))
    st.State().transition(job.id, st.CANCELLING)
    with pytest.raises(HostLostError, match="cancelled"):
        backend.wait_reachable(h, 30)


def test_outbid_while_loading_is_host_lost_and_counted(backend, fake):
    fake.add_offer(HOST, loading_s=3600)
    h = backend.provision(req(use_spot=True))
    fake.outbid(h["instance_id"])
    with pytest.raises(HostLostError, match="outbid"):
        backend.wait_reachable(h, 30)
    assert Ledger().outbids("job-1") == 1


@pytest.mark.parametrize("spot, act, reason", [
    (True, "outbid", "outbid: instance"),
    (False, "stop", "instance stopped"),
    (True, "destroy", "instance gone"),
])
def test_poll_says_why_the_instance_ended(backend, fake, spot, act, reason):
    fake.add_offer(HOST)
    h = running(backend, backend.provision(req(use_spot=spot)))
    assert backend.poll(h).state is RunState.RUNNING
    inst = fake.instances[h["instance_id"]]
    {"outbid": lambda: fake.outbid(h["instance_id"], report_after=0),
     "stop": lambda: inst.update(actual_status="stopped", cur_state="stopped", intended_status="stopped"),
     "destroy": lambda: inst.update(destroyed=1)}[act]()
    status = backend.poll(h)
    assert status.state is RunState.PREEMPTED and status.reason.startswith(reason)
    assert (Ledger().outbids("job-1") == 1) == (act == "outbid")


def test_poll_asks_the_api_only_every_interval_unless_ssh_says_the_run_is_gone(backend, fake):
    backend.settings = replace(backend.settings, api_poll=3600)
    fake.add_offer(HOST)
    h = running(backend, backend.provision(req(use_spot=True)))
    shows = lambda: sum(1 for m, p, _ in fake.requests if m == "GET" and p.startswith("/api/v0/instances/"))
    backend.poll(h)
    before = shows()
    for _ in range(5):
        assert backend.poll(h).state is RunState.RUNNING
    assert shows() == before
    fake.outbid(h["instance_id"], report_after=0)
    backend.ssh.status = RunStatus(RunState.PREEMPTED, reason="host lost: no answer")
    assert backend.poll(h).reason.startswith("outbid")  # the API gives the real reason


def test_poll_keeps_the_run_exit_code(backend, fake):
    fake.add_offer(HOST)
    h = running(backend, backend.provision(req()))
    backend.ssh.status = RunStatus(RunState.SUCCEEDED, 0)
    assert backend.poll(h) == RunStatus(RunState.SUCCEEDED, 0)


def test_terminate_destroys_the_instance_and_is_quiet_twice(backend, fake):
    fake.add_offer(HOST)
    h = running(backend, backend.provision(req()))
    backend.terminate(h)
    backend.terminate(h)
    assert fake.live() == [] and Ledger().leaked() == []
    assert [c[0] for c in backend.ssh.calls].count("terminate") == 1
    assert sum(1 for m, *_ in fake.requests if m == "DELETE") == 1


def test_terminate_of_an_instance_already_gone_is_success(backend, fake):
    fake.add_offer(HOST)
    h = backend.provision(req())
    del fake.instances[h["instance_id"]]  # the API no longer knows it: DELETE answers 404
    backend.terminate(h)
    assert Ledger().leaked() == []


def test_terminate_sweeps_leftovers_of_the_job_and_of_cancelled_jobs(backend, fake):
    state = st.State()
    live = state.create_job(name="live", task_path=None, task_yaml="run: x", infra="vast", store_uri=None, options={})
    gone = state.create_job(name="gone", task_path=None, task_yaml="run: x", infra="vast", store_uri=None, options={})
    for _ in range(4):
        fake.add_offer(HOST)
    old = backend.provision(req(1, job=live.run_id))  # an attempt whose terminate never came
    other = backend.provision(req(1, job=gone.run_id))
    state.transition(gone.id, st.CANCELLING)
    cur = backend.provision(req(2, job=live.run_id))  # provision sweeps the job's own leftovers
    assert fake.instances[old["instance_id"]].get("destroyed")
    assert fake.live() == [cur["instance_id"]]  # the cancelled job's instance went too
    assert not fake.instances[cur["instance_id"]].get("destroyed")
    backend.terminate({"option": 0})  # a handle that never got further than the supervisor's stub
    assert fake.live() == [cur["instance_id"]]
    backend.terminate(cur)
    assert fake.live() == [] and Ledger().leaked() == []
    assert other["instance_id"] in fake.instances


def test_destroy_error_is_raised_and_the_row_stays_open_for_the_next_sweep(backend, fake):
    fake.add_offer(HOST)
    h = backend.provision(req())
    fake.fail["destroy"] = 500
    with pytest.raises(BackendError, match="HTTP 500"):
        backend.terminate(h)
    assert len(Ledger().leaked()) == 1
    del fake.fail["destroy"]
    backend.terminate(h)
    assert Ledger().leaked() == [] and fake.live() == []


def test_missing_public_key_fails_at_construction(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCH_VAST_SSH_KEY", str(tmp_path / "nope"))
    with pytest.raises(InfraError, match="LAUNCH_VAST_SSH_KEY"):
        VastBackend("vast")


def test_missing_api_key_names_where_to_put_it(ssh_key, monkeypatch, tmp_path):
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty-home" / ".config"))
    with pytest.raises(InfraError, match="VAST_API_KEY"):
        VastBackend("vast")


def test_api_key_is_never_logged_printed_stored_or_in_errors(backend, fake, api_key, caplog, capsys, launch_home):
    caplog.set_level(logging.DEBUG)
    fake.add_offer(HOST, min_bid=0.1)
    h = running(backend, backend.provision(req(use_spot=True)))
    fake.outbid(h["instance_id"])
    backend.poll(h)
    fake.fail["destroy"] = 503
    errors = []
    with pytest.raises(BackendError) as e:
        backend.terminate(h)
    errors.append(str(e.value))
    fake.fail.clear()
    fake.api_key = "another"  # the server now refuses our key: the 401 error must not echo it
    with pytest.raises(CredentialsError) as e:
        backend.provision(req(2))
    errors.append(str(e.value))
    assert "HTTP 401" in errors[1]
    out = capsys.readouterr()
    seen = [caplog.text, out.out, out.err, json.dumps(h), json.dumps(backend.settings.to_dict()), *errors]
    seen += [f.read_bytes().decode(errors="replace") for f in launch_home.rglob("*") if f.is_file()]
    assert not any(api_key in s for s in seen)


def test_rented_ssh_has_every_field_the_ssh_backend_sets(tmp_path, monkeypatch):
    pools = tmp_path / "pools.yaml"
    pools.write_text("p:\n  hosts: [10.0.0.1]\n")
    monkeypatch.setenv("LAUNCH_SSH_POOLS", str(pools))
    monkeypatch.setenv("LAUNCH_SSH_CONFIG", str(tmp_path / "none"))
    assert set(vars(SSHBackend("ssh/p"))) == set(vars(RentedSSH()))


def orphan_create(job="job-1", attempt=1):
    """The ledger row of a create call whose process was killed during it: written, no id."""
    label = f"launch:{job}:a{attempt}:dead0000"
    return Ledger().creating(job, attempt, label, {"id": 0}, 0.5, 0.2), label


def test_a_create_whose_process_died_is_waited_for_and_destroyed_before_the_next(backend, fake):
    oid = fake.add_offer(HOST)
    fake.add_offer(HOST, dph_total=0.9)
    row, label = orphan_create()
    calls = []

    def sleep(s):  # the killed call's instance shows up while the sweep waits
        calls.append(s)
        if len(calls) == 1:
            fake.create(oid, {"label": label})
    backend.sleep = sleep
    h = backend.provision(req(2))
    [orphan] = [i for i, x in fake.instances.items() if x["label"] == label]
    assert calls and fake.instances[orphan]["destroyed"] <= fake.instances[h["instance_id"]]["start_date"]
    e = Ledger().entry(row)
    assert (e.instance_id, e.state, e.reason) == (orphan, "destroyed", "swept")


def test_a_create_whose_process_died_and_made_nothing_is_closed_after_the_settle_time(backend, fake):
    from launcher.testing import FakeClock

    fake.add_offer(HOST)
    clock = FakeClock()
    backend.clock, backend.sleep = clock.time, clock.sleep
    row, _ = orphan_create()
    other, _ = orphan_create("job-2")
    backend.terminate({"option": 0, "run_id": "job-1"})  # a handle the supervisor wrote before provision
    assert 59 <= sum(clock.slept) <= 60.5  # LAUNCH_VAST_CREATE_SETTLE, 60 s by default
    e = Ledger().entry(row)
    assert (e.state, e.reason) == ("not created", "create made no instance")
    assert Ledger().entry(other).open  # another job's call may still be in flight: not waited for
    assert fake.instances == {}
