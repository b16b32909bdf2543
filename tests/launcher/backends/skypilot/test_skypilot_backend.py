"""The SkyPilot backend with SkyPilot's SDK faked at the client boundary: the status, logs and
teardown tables, and the rules around them (RUNNING until SkyPilot gives up, recovery counts in
the handle, gone counts as done, twice is quiet). No test here imports sky."""

from __future__ import annotations

import json

import pytest

from launcher import contract
from launcher.backends.base import (BackendError, HostLostError, ProvisionRequest, RunSpec, RunState)
from launcher.backends.skypilot import backend as sp
from launcher.backends.skypilot.client import ClusterGone, LaunchFailed, ManagedJob


class FakeClient:
    """Scripted stand-in for SkyPilotClient; records every call."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.request = "RUNNING"
        self.result: int | Exception = 7
        self.managed: ManagedJob | None = None
        self.cluster_status: str | None | Exception = "RUNNING"
        self.log_lines = ["line 1", "line 2"]
        self.downs: set[str] = set()
        self.location: tuple[str, str] | None = None

    def launch_managed(self, config, name):
        self.calls.append(("launch_managed", name, config))
        return "req-m"

    def launch_cluster(self, config, cluster, idle_minutes):
        self.calls.append(("launch_cluster", cluster, idle_minutes, config))
        return "req-c"

    def request_status(self, request_id):
        return self.request

    def launch_result(self, request_id):
        self.calls.append(("launch_result", request_id))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def cancel_request(self, request_id):
        self.calls.append(("cancel_request", request_id))

    def managed_job(self, job_id):
        return self.managed

    def managed_logs(self, job_id, follow):
        self.calls.append(("managed_logs", job_id, follow))
        yield from self.log_lines

    def cancel_managed(self, job_id):
        self.calls.append(("cancel_managed", job_id))

    def cluster_job_status(self, cluster, job_id):
        if isinstance(self.cluster_status, Exception):
            raise self.cluster_status
        return self.cluster_status

    def cluster_location(self, cluster):
        self.calls.append(("cluster_location", cluster))
        return self.location

    def cluster_logs(self, cluster, job_id, follow):
        self.calls.append(("cluster_logs", cluster, job_id, follow))
        if cluster in self.downs:
            raise ClusterGone(f"cluster {cluster} does not exist")
        yield from self.log_lines

    def down(self, cluster):
        self.calls.append(("down", cluster))
        self.downs.add(cluster)


def names(client) -> list[str]:
    return [c[0] for c in client.calls]


def started(yaml_resources: str = "", store_uri: str = "s3://b/runs/qs-1", attempt: int = 1):
    from launcher.task import parse_task

    task = parse_task(f"name: qs\nresources:\n{yaml_resources or '  cpus: 2'}\nrun: python -m trainers.quickstart")
    client = FakeClient()
    backend = sp.SkyPilotBackend("aws", client=client, task_for=lambda run_id: task, sleep=lambda s: None)
    handle = backend.provision(ProvisionRequest("qs-1", attempt, "aws", task.resources.options()[0]))
    backend.wait_reachable(handle, 1)
    backend.bootstrap(handle)
    backend.sync_workdir(handle, None)
    backend.start_run(handle, RunSpec(job_id="qs-1", attempt=attempt, run=task.run, store_uri=store_uri))
    json.dumps(handle)  # always JSON-able
    return backend, client, handle


SPOT = "  accelerators: V100:1\n  use_spot: true"


def test_spot_goes_to_managed_jobs_and_on_demand_to_a_cluster_with_autostop():
    _, client, handle = started(SPOT)
    assert names(client) == ["launch_managed"] and handle["managed"] and handle["request_id"] == "req-m"
    _, client, handle = started("  accelerators: A6000:1")
    (call,) = client.calls
    assert call[0] == "launch_cluster" and call[1] == handle["cluster"] and call[2] == sp.AUTOSTOP_MINUTES
    assert not handle["managed"]


def test_running_while_the_launch_request_runs_then_the_job_id_is_recorded():
    backend, client, handle = started(SPOT)
    client.request = "PENDING"
    assert backend.poll(handle).state is RunState.RUNNING and "job_id" not in handle
    client.request = "SUCCEEDED"
    client.managed = ManagedJob(job_id=7, status="STARTING")
    assert backend.poll(handle).state is RunState.RUNNING
    assert handle["job_id"] == 7


@pytest.mark.parametrize("status, state", sorted(sp.MANAGED_STATES.items()))
def test_managed_status_table(status, state):
    backend, client, handle = started(SPOT)
    client.request = "SUCCEEDED"
    client.managed = ManagedJob(job_id=7, status=status, recovery_count=2,
                                failure_reason="Job exited with exit code 3" if "FAILED" in status else "")
    got = backend.poll(handle)
    assert got.state is state
    assert got.final == (state is RunState.FAILED)  # SkyPilot already spent max_restarts_on_errors
    assert handle["recovery_count"] == 2  # shown by `launch status` as SkyPilot's recoveries
    if status == "FAILED":
        assert got.exit_code == 3
    if status == "SUCCEEDED":
        assert got.exit_code == 0


def test_a_managed_job_stays_running_through_skypilot_recoveries():
    backend, client, handle = started(SPOT)
    client.request = "SUCCEEDED"
    for status, n in (("RUNNING", 0), ("RECOVERING", 0), ("STARTING", 1), ("RUNNING", 1), ("RECOVERING", 1),
                      ("RUNNING", 2)):
        client.managed = ManagedJob(job_id=7, status=status, recovery_count=n, cluster=f"c{n}")
        assert backend.poll(handle).state is RunState.RUNNING
    assert handle["recovery_count"] == 2 and handle["host"] == "c2"
    client.managed = ManagedJob(job_id=7, status="SUCCEEDED", recovery_count=2)
    assert backend.poll(handle).state is RunState.SUCCEEDED


@pytest.mark.parametrize("status, state", sorted(sp.CLUSTER_JOB_STATES.items()))
def test_cluster_job_status_table(status, state):
    backend, client, handle = started()
    client.request = "SUCCEEDED"
    client.cluster_status = status
    assert backend.poll(handle).state is state


def test_a_lost_cluster_is_preempted_unless_the_run_had_finished(tmp_path):
    backend, client, handle = started(store_uri=(tmp_path / "job").as_uri())
    client.request = "SUCCEEDED"
    client.cluster_status = ClusterGone("cluster does not exist")
    got = backend.poll(handle)
    assert got.state is RunState.PREEMPTED and "lost" in got.reason
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / contract.DONE_NAME).write_text("1")
    assert backend.poll(handle).state is RunState.SUCCEEDED


def test_a_failed_cluster_job_reads_its_exit_code_from_the_store(tmp_path):
    backend, client, handle = started(store_uri=(tmp_path / "job").as_uri(), attempt=2)
    client.request = "SUCCEEDED"
    client.cluster_status = "FAILED"
    assert backend.poll(handle).exit_code is None  # nothing reached the store
    logs = tmp_path / "job" / "logs"
    logs.mkdir(parents=True)
    (logs / "attempt-2.exit_code").write_text("4\n")
    got = backend.poll(handle)
    assert (got.state, got.exit_code) == (RunState.FAILED, 4)
    (logs / "attempt-2.exit_code").write_text(f"{contract.EXIT_PREEMPTED}\n")
    assert backend.poll(handle).state is RunState.PREEMPTED  # saved and stopped on a notice


def test_launch_failures_no_capacity_is_preempted_others_failed():
    backend, client, handle = started(SPOT)
    client.request = "FAILED"
    client.result = LaunchFailed("no V100 anywhere", no_capacity=True)
    got = backend.poll(handle)
    assert got.state is RunState.PREEMPTED and "no capacity" in got.reason
    client.result = LaunchFailed("bad credentials")
    assert backend.poll(handle).state is RunState.FAILED


def test_logs_come_from_skypilot_and_a_gone_cluster_raises_host_lost():
    backend, client, handle = started(SPOT)
    client.request = "SUCCEEDED"
    assert list(backend.stream_logs(handle, follow=True)) == ["line 1", "line 2"]
    assert ("managed_logs", 7, True) in client.calls
    backend, client, handle = started()
    client.request = "SUCCEEDED"
    assert list(backend.stream_logs(handle)) == ["line 1", "line 2"]
    client.downs.add(handle["cluster"])
    with pytest.raises(HostLostError):
        list(backend.stream_logs(handle))


def test_logs_while_launching_say_so_or_wait_with_follow():
    backend, client, handle = started(SPOT)
    client.request = "RUNNING"
    (line,) = backend.stream_logs(handle, follow=False)
    assert "launching" in line
    states = iter(["RUNNING", "RUNNING", "SUCCEEDED"])
    client.request_status = lambda rid: next(states)
    assert list(backend.stream_logs(handle, follow=True)) == ["line 1", "line 2"]


def test_terminate_managed_cancels_and_twice_is_quiet():
    backend, client, handle = started(SPOT)
    client.request = "SUCCEEDED"
    client.managed = ManagedJob(job_id=7, status="RUNNING")
    backend.poll(handle)
    backend.terminate(handle)
    backend.terminate(handle)
    assert names(client).count("cancel_managed") == 1
    assert "down" not in names(client)


def test_terminate_during_the_launch_cancels_the_request_and_any_job_it_made():
    backend, client, handle = started(SPOT)
    client.request = "RUNNING"
    backend.terminate(handle)
    assert names(client)[-3:] == ["cancel_request", "launch_result", "cancel_managed"]
    backend, client, handle = started(SPOT)
    client.result = LaunchFailed("cancelled")
    backend.terminate(handle)
    assert "cancel_managed" not in names(client)


def test_terminate_cluster_downs_it_and_gone_is_success():
    backend, client, handle = started()
    client.request = "SUCCEEDED"
    backend.poll(handle)
    backend.terminate(handle)
    assert ("down", handle["cluster"]) in client.calls
    handle.pop("terminated")
    backend.terminate(handle)  # the fake's down of a gone cluster is quiet, as the client's is


def test_fire_drill_kill_downs_the_cluster_under_the_run_and_term_is_refused():
    backend, client, handle = started(SPOT)
    client.request = "SUCCEEDED"
    client.managed = ManagedJob(job_id=7, status="RUNNING", cluster="sky-managed-7")
    backend.signal(handle, "kill")
    assert ("down", "sky-managed-7") in client.calls
    with pytest.raises(BackendError):
        backend.signal(handle, "term")


def test_provision_names_the_attempt_and_calls_nothing():
    backend = sp.SkyPilotBackend("aws", client=FakeClient(), task_for=lambda r: None)
    h1 = backend.provision(ProvisionRequest("quickstart-1a2b3c4d", 1, "aws", {}))
    h2 = backend.provision(ProvisionRequest("quickstart-1a2b3c4d", 2, "aws", {}))
    assert h1["cluster"] != h2["cluster"] and h1["cluster"].endswith("a1")
    assert backend.client.calls == []


def test_attempts_are_priced_where_skypilot_placed_them(monkeypatch):
    from launcher.backends.skypilot import catalog

    asked = []

    def price(option, cloud, region, spot):
        asked.append((option.get("accelerators"), cloud, region, spot))
        return {"AWS": 0.9, "GCP": 0.7}.get(cloud)  # None: no price in the catalog (Slurm)

    monkeypatch.setattr(catalog, "hourly_price", price)
    backend, client, handle = started(SPOT)
    client.request = "SUCCEEDED"
    client.managed = ManagedJob(job_id=7, status="STARTING")  # not placed yet
    backend.poll(handle)
    assert backend.cost_per_hour(handle) == 0.0 and asked == []
    client.managed = ManagedJob(job_id=7, status="RUNNING", cluster="c0", cloud="AWS", region="us-east-1")
    backend.poll(handle)
    backend.poll(handle)  # priced once per placement
    assert backend.cost_per_hour(handle) == 0.9 and asked == [("V100:1", "AWS", "us-east-1", True)]
    client.managed = ManagedJob(job_id=7, status="RUNNING", recovery_count=1, cluster="c1", cloud="GCP",
                                region="us-central1")  # SkyPilot moved it: re-priced
    backend.poll(handle)
    assert backend.cost_per_hour(handle) == 0.7 and len(asked) == 2

    backend, client, handle = started("  accelerators: V100:1")  # a cluster: priced from sky.status
    handle["num_nodes"] = 2
    client.request, client.location = "SUCCEEDED", ("AWS", "us-west-2")
    backend.poll(handle)
    backend.poll(handle)
    assert backend.cost_per_hour(handle) == 1.8 and names(client).count("cluster_location") == 1

    backend, client, handle = started("  cpus: 1+")
    client.request, client.location = "SUCCEEDED", ("Slurm", "launchtest")
    backend.poll(handle)
    assert backend.cost_per_hour(handle) == 0.0 and handle["priced_at"] == ["Slurm", "launchtest"]
