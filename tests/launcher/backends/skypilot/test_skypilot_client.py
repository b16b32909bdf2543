"""The client's own work: turning SkyPilot's answers (records, tuples, streamed chunks, its
exceptions) into plain values and our errors. SkyPilot's module is replaced by a stand-in, so
nothing here talks to an API server."""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

import pytest

from launcher.backends import get_backend
from launcher.backends.base import BackendError, MissingDependencyError
from launcher.backends.skypilot.client import (ClusterGone, LaunchFailed, ManagedJob, SkyPilotClient,
                                               _lines)


class Status:  # like SkyPilot's enums: a .value
    def __init__(self, value):
        self.value = value


def client_with(**sdk) -> SkyPilotClient:
    c = SkyPilotClient()
    jobs = SimpleNamespace(**{k[5:]: v for k, v in sdk.items() if k.startswith("jobs_")})
    c._sky = SimpleNamespace(jobs=jobs, **{k: v for k, v in sdk.items() if not k.startswith("jobs_")})
    return c


def test_streamed_chunks_become_lines_and_heartbeats_are_skipped():
    assert list(_lines(iter(["a\nb", None, "c\r\n", "d"]))) == ["a", "bc", "d"]


def test_exit_code_is_read_from_the_controllers_failure_reason():
    assert ManagedJob(1, "FAILED", failure_reason="Job exited with exit code 75. See logs").exit_code == 75
    assert ManagedJob(1, "FAILED", failure_reason="To see the details, run: ...").exit_code is None


def test_managed_job_record_to_plain_values():
    record = {"job_id": 7, "status": Status("RECOVERING"), "recovery_count": 3,
              "failure_reason": None, "current_cluster_name": "c-7", "region": "us-east-2", "cloud": "AWS"}
    pending = {"job_id": 6, "status": Status("PENDING"), "region": "-", "cloud": "-"}  # not placed yet
    c = client_with(jobs_queue_v2=lambda **kw: "rq", get=lambda rid: ([pending, record], 2, {}, 2))
    assert c.managed_job(7) == ManagedJob(7, "RECOVERING", 3, "", "c-7", "us-east-2", "AWS")
    assert c.managed_job(6) == ManagedJob(6, "PENDING")
    assert c.managed_job(8) is None


def test_launch_results_managed_list_and_cluster_tuple():
    assert client_with(get=lambda rid: ([12], None)).launch_result("r") == 12
    assert client_with(get=lambda rid: (3, object())).launch_result("r") == 3


def test_launch_errors_say_whether_capacity_was_the_problem():
    from sky import exceptions

    def no_capacity(rid):
        raise exceptions.ResourcesUnavailableError("no V100")

    def other(rid):
        raise RuntimeError("boom")

    with pytest.raises(LaunchFailed) as e:
        client_with(get=no_capacity).launch_result("r")
    assert e.value.no_capacity
    with pytest.raises(LaunchFailed) as e:
        client_with(get=other).launch_result("r")
    assert not e.value.no_capacity


def test_down_of_a_gone_cluster_is_quiet_and_other_errors_are_ours():
    from sky import exceptions

    def gone(rid):
        raise exceptions.ClusterDoesNotExist("no cluster c")

    client_with(down=lambda name: "r", get=gone).down("c")
    with pytest.raises(ClusterGone):
        client_with(job_status=lambda c, ids: "r", get=gone).cluster_job_status("c", 1)

    def broken(rid):
        raise RuntimeError("server error")

    with pytest.raises(BackendError, match="server error"):
        client_with(down=lambda name: "r", get=broken).down("c")


def test_request_status_unknown_when_the_server_does_not_know_it():
    assert client_with(api_status=lambda ids: []).request_status("r") == "UNKNOWN"
    assert client_with(api_status=lambda ids: [SimpleNamespace(status="running")]).request_status("r") == "RUNNING"


def test_missing_skypilot_gives_the_registrys_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sky" else real(name, *a))
    monkeypatch.delitem(sys.modules, "launcher.backends.skypilot.backend", raising=False)
    with pytest.raises(MissingDependencyError) as e:
        get_backend("aws")
    assert "pip install 'launch[skypilot]'" in str(e.value) and "\n" not in str(e.value)
