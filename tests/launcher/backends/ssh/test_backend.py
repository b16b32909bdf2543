"""The SSH backend's decisions, with a scripted stand-in for the hosts (the real thing runs
against OpenSSH in tests/integration/ssh)."""

from __future__ import annotations

import time

import pytest

from launcher.backends import get_backend
from launcher.backends.base import NoCapacityError, ProvisionRequest, RunSpec, RunState
from launcher.backends.ssh.backend import SSHBackend, gpus_per_node
from launcher.backends.ssh.client import CommandTimeout, Result, Unreachable
from launcher.backends.ssh.leases import Leases
from launcher.errors import InfraError


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class ScriptedRemote:
    """Answers each command with the next scripted output, or raises it."""

    def __init__(self, script):
        self.script = list(script)
        self.commands = []

    def open(self, timeout=None):
        return self

    def run(self, command, *, timeout=30.0, stdin=None, check=True):
        self.commands.append(command)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return Result(0, item, "")

    def put_bytes(self, path, data, mode=0o644):
        self.commands.append(f"put {path}")

    def close(self):
        pass


@pytest.fixture
def pool(tmp_path, monkeypatch):
    f = tmp_path / "pools.yaml"
    f.write_text("duo:\n  user: root\n  hosts: [10.9.9.1, 10.9.9.2]\n")
    monkeypatch.setenv("LAUNCH_SSH_POOLS", str(f))
    monkeypatch.setenv("LAUNCH_SSH_CONFIG", str(tmp_path / "none"))
    return f


def backend_with(script, clock, tmp_path, **kw):
    be = SSHBackend("ssh/duo", clock=clock, leases=Leases(tmp_path / "l.db", is_stale=lambda j: False), **kw)
    remote = ScriptedRemote(script)
    be._remote = lambda node: remote
    return be, remote


def handle(*names):
    nodes = [{"name": n, "hostname": n, "port": 22, "user": "root", "identity_file": "", "key": f"root@{n}:22",
              "root": "/r", "attempt_dir": "/r/attempts/job-1/attempt-1", "agent_pid": 42} for n in names]
    return {"backend": "ssh", "job_id": "job-1", "attempt": 1, "nodes": nodes}


def test_the_registry_finds_the_ssh_backend(pool):
    assert isinstance(get_backend("ssh/duo"), SSHBackend)


@pytest.mark.parametrize("infra, message", [("ssh", "expected ssh/<pool>"), ("ssh/nope", "no SSH pool 'nope'")])
def test_bad_infra_fails_at_submit_time(pool, infra, message):
    with pytest.raises(InfraError, match=message):
        SSHBackend(infra)


def test_exit_codes_map_to_states(pool, tmp_path):
    be, _ = backend_with(["ALIVE", "EXIT 0", "EXIT 75", "EXIT 3", "GONE", "NODIR"], Clock(), tmp_path)
    h = handle("10.9.9.1")
    got = [be.poll(h) for _ in range(6)]
    assert [s.state for s in got] == [RunState.RUNNING, RunState.SUCCEEDED, RunState.PREEMPTED,
                                      RunState.FAILED, RunState.PREEMPTED, RunState.PREEMPTED]
    assert got[3].exit_code == 3 and "vanished without an exit code" in got[4].reason


def test_a_silent_host_is_running_within_the_grace_and_lost_after_it(pool, tmp_path):
    clock = Clock()
    be, _ = backend_with(["ALIVE"] + [Unreachable("host: connection lost")] * 3, clock, tmp_path, grace=6)
    h = handle("10.9.9.1")
    assert be.poll(h).state is RunState.RUNNING
    clock.now += 3
    assert be.poll(h).state is RunState.RUNNING
    clock.now += 2.9
    assert be.poll(h).state is RunState.RUNNING
    clock.now += 0.2
    status = be.poll(h)
    assert status.state is RunState.PREEMPTED and status.reason.startswith("host lost: 10.9.9.1 unreachable for 6.1 s")


def test_a_command_that_hangs_counts_as_no_answer_and_never_raises(pool, tmp_path):
    clock = Clock()
    be, _ = backend_with([CommandTimeout("slow"), CommandTimeout("slow"), "ALIVE"], clock, tmp_path, grace=6)
    h = handle("10.9.9.1")
    assert be.poll(h).state is RunState.RUNNING
    clock.now += 5
    assert be.poll(h).state is RunState.RUNNING
    clock.now += 5
    assert be.poll(h).state is RunState.RUNNING  # it answered again: the grace starts over


def test_the_probe_gets_no_more_time_than_the_grace_has_left(pool, tmp_path):
    clock = Clock()
    be, remote = backend_with(["ALIVE", Unreachable("x"), Unreachable("x")], clock, tmp_path, grace=6)
    timeouts = []
    remote.run = lambda cmd, timeout, **kw: (timeouts.append(timeout), ScriptedRemote.run(remote, cmd))[1]
    h = handle("10.9.9.1")
    be.poll(h)
    clock.now += 5.2
    be.poll(h)
    assert timeouts[0] == 3.0 and timeouts[1] == pytest.approx(0.8)


def test_a_relaunch_on_the_same_host_gets_a_fresh_grace(pool, tmp_path):
    """Attempt 1 was polled long ago (then killed); attempt 2 starts on the same host: its first
    probe has the full time, and a slow first answer is not a lost host."""
    clock = Clock()
    be, remote = backend_with(["ALIVE", "", "4242", CommandTimeout("slow"), "ALIVE"], clock, tmp_path, grace=6)
    timeouts = []
    remote.run = lambda cmd, timeout, **kw: (timeouts.append(timeout), ScriptedRemote.run(remote, cmd))[1]
    first = handle("10.9.9.1")
    assert be.poll(first).state is RunState.RUNNING
    clock.now += 30  # the kill, the back-off, provisioning and bootstrap of attempt 2
    second = {**handle("10.9.9.1"), "attempt": 2}
    be.start_run(second, RunSpec(job_id="job-1", attempt=2, run="true"))
    assert second["nodes"][0]["agent_pid"] == 4242
    clock.now += 1
    assert be.poll(second).state is RunState.RUNNING
    assert timeouts[-1] == 3.0
    assert be.poll(second).state is RunState.RUNNING


def test_a_lost_worker_node_preempts_the_attempt(pool, tmp_path):
    clock = Clock()
    be, _ = backend_with(["ALIVE", "GONE"], clock, tmp_path)
    status = be.poll(handle("10.9.9.1", "10.9.9.2"))
    assert status.state is RunState.PREEMPTED and "10.9.9.2" in status.reason


def test_terminate_after_host_lost_releases_without_calling_the_host(pool, tmp_path):
    clock = Clock()
    be, remote = backend_with(["ALIVE", Unreachable("x")], clock, tmp_path, grace=1)
    h = handle("10.9.9.1")
    be.leases.acquire("root@10.9.9.1:22", "job-1", 1)
    be.poll(h)
    clock.now += 2
    assert be.poll(h).state is RunState.PREEMPTED
    be.terminate(h)
    be.terminate(h)
    assert len(remote.commands) == 2 and be.leases.all() == []


def test_gpus_per_node_from_accelerators():
    assert [gpus_per_node(r) for r in ({"accelerators": "A100:8"}, {"accelerators": {"V100": 2}},
                                       {"accelerators": "T4"}, {"accelerators": ["L4:2", "T4:1"]},
                                       {})] == [8, 2, 1, 2, 0]


def test_node_envs_follow_skypilot(pool, tmp_path):
    be, _ = backend_with([], Clock(), tmp_path)
    h = {**handle("10.9.9.1", "10.9.9.2"), "gpus_per_node": 4}
    assert be.node_envs(h, 1) == {"SKYPILOT_NODE_RANK": "1", "SKYPILOT_NODE_IPS": "10.9.9.1\n10.9.9.2",
                                  "SKYPILOT_NUM_NODES": "2", "SKYPILOT_NUM_GPUS_PER_NODE": "4"}


def test_a_host_that_failed_its_preflight_is_set_aside(pool, tmp_path, monkeypatch):
    import json

    clock = Clock()
    taken = json.dumps({"taken": True, "current": None})
    be, remote = backend_with(["/r", taken], clock, tmp_path)
    be.set_aside(handle("10.9.9.1"), "preflight: the driver sees no GPU")
    h = be.provision(ProvisionRequest("job-2", 1, "ssh/duo"))
    assert [n["name"] for n in h["nodes"]] == ["10.9.9.2"]  # the first host was not even asked
    monkeypatch.setenv("LAUNCH_SSH_SET_ASIDE", "0")
    be.set_aside(handle("10.9.9.2"), "preflight: again")
    assert be.leases.aside("root@10.9.9.2:22", time.time()) is None  # and it comes back after


def test_every_host_set_aside_is_no_capacity_saying_why(pool, tmp_path):
    be, _ = backend_with([], Clock(), tmp_path)
    be.set_aside(handle("10.9.9.1", "10.9.9.2"), "preflight: no GPU")
    with pytest.raises(NoCapacityError, match=r"10.9.9.1 set aside for 3\d\d\d s more \(preflight: no GPU\)"):
        be.provision(ProvisionRequest("job-2", 1, "ssh/duo"))
