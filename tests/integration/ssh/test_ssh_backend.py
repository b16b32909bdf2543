"""The SSH backend's calls against real sshd hosts: leases, stale leftovers, terminate, several
nodes, the connection's own behaviour. No store here (the agent runs without one)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from launcher.backends.base import HostLostError, NoCapacityError, ProvisionRequest, RunSpec, RunState
from launcher.backends.ssh.backend import SSHBackend
from launcher.backends.ssh.client import CommandError, CommandTimeout, Remote
from launcher.backends.ssh.leases import Leases
from launcher.backends.ssh.pools import load_pool
from launcher.testing import wait_for

pytestmark = pytest.mark.integration

SLEEPY = "python -m launcher.testing toy --steps 600 --step-time 0.1"


def wait_done(backend, handle, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.poll(handle)
        if status.done:
            return status
        time.sleep(0.3)
    raise AssertionError("the run did not end")


def log_of(host, attempt=1) -> str:
    p = host.root / f"attempts/job-1/attempt-{attempt}/run.log"
    return p.read_text() if p.exists() else ""


def backend(pool="duo") -> SSHBackend:
    return SSHBackend(f"ssh/{pool}", leases=Leases(is_stale=lambda job: False))


def start(be, job="job-1", attempt=1, run=SLEEPY, num_nodes=1, **spec):
    h = be.provision(ProvisionRequest(job, attempt, be.name + "/" + be.pool, num_nodes=num_nodes))
    be.wait_reachable(h, 10)
    be.bootstrap(h)
    be.start_run(h, RunSpec(job, attempt, run=run, **spec))
    return h


@pytest.fixture
def duo(ssh_lab):
    a, b = ssh_lab.add_host("host-a"), ssh_lab.add_host("host-b")
    ssh_lab.write_pool("duo", ["host-a", "host-b"])
    return a, b


def test_each_host_goes_to_one_job_and_comes_back_after_terminate(duo, ssh_lab):
    be = backend()
    h1 = be.provision(ProvisionRequest("job-1", 1, "ssh/duo"))
    h2 = be.provision(ProvisionRequest("job-2", 1, "ssh/duo"))
    assert (h1["host"], h2["host"]) == ("host-a", "host-b")
    assert json.loads((duo[0].root / "lease.json").read_text())["job_id"] == "job-1"
    with pytest.raises(NoCapacityError, match="host-a busy with job job-1.*host-b busy with job job-2"):
        be.provision(ProvisionRequest("job-3", 1, "ssh/duo"))
    be.terminate(h1)
    be.terminate(h1)  # twice: quiet
    assert not (duo[0].root / "lease.json").exists()
    assert be.provision(ProvisionRequest("job-3", 1, "ssh/duo"))["host"] == "host-a"


def test_a_host_leased_by_another_launcher_is_left_alone(duo):
    (duo[0].root / "lease.json").write_text(json.dumps({"owner": "elsewhere:/home/x/.launch", "job_id": "theirs"}))
    h = backend().provision(ProvisionRequest("job-1", 1, "ssh/duo"))
    assert h["host"] == "host-b"


def test_unreachable_hosts_are_skipped_and_named(ssh_lab):
    dead = ssh_lab.add_host("host-dead")
    ssh_lab.add_host("host-b")
    ssh_lab.write_pool("duo", ["host-dead", "host-b"])
    dead.kill()
    be = backend()
    assert be.provision(ProvisionRequest("job-1", 1, "ssh/duo"))["host"] == "host-b"
    with pytest.raises(NoCapacityError, match=r"0 of 1 host\(s\).*host-dead unreachable"):
        be.provision(ProvisionRequest("job-2", 1, "ssh/duo"))
    assert [x.job_id for x in be.leases.all()] == ["job-1"]


def test_leftovers_of_a_lost_attempt_are_killed_when_its_host_is_leased_again(duo, ssh_lab):
    be = backend()
    h = start(be)
    assert wait_for(lambda: ssh_lab.job_pids("job-1"), what="the run")
    be._lost.add(h["nodes"][0]["key"])  # as if the host had dropped off the network
    be.terminate(h)                     # releases here only: the host was not reachable
    assert ssh_lab.job_pids("job-1") and (duo[0].root / "lease.json").exists()
    h2 = be.provision(ProvisionRequest("job-1", 2, "ssh/duo"))
    assert h2["host"] == "host-a"
    assert ssh_lab.job_pids("job-1") == []
    assert json.loads((duo[0].root / "lease.json").read_text())["attempt"] == 2
    assert be.leases.leftovers() == []  # taken over: nothing left to sweep


def test_a_lost_host_loses_the_secrets_of_its_attempt_once_it_answers_again(duo, ssh_lab):
    be = backend()
    h = start(be, secrets={"TOKEN": "s3cret-123"})
    att = duo[0].root / "attempts/job-1/attempt-1"
    assert wait_for(lambda: (att / "secrets.json").exists(), what="the secrets file")
    duo[0].kill()                       # the machine vanishes; its disk stays
    be._lost.add(h["nodes"][0]["key"])
    be.terminate(h)
    assert [n["attempt_dir"] for n, _, _ in be.leases.leftovers()] == [str(att)]
    assert be.sweep_leftovers() == [] and (att / "secrets.json").exists()  # still away: kept for later
    duo[0].start(Path(f"{ssh_lab.key}.pub").read_text())  # it comes back
    ssh_lab.write_pool("solo", ["host-b"])
    h2 = backend("solo").provision(ProvisionRequest("job-2", 1, "ssh/solo"))  # any provision sweeps first
    assert h2["host"] == "host-b"
    assert not (att / "secrets.json").exists() and not (duo[0].root / "lease.json").exists()
    assert be.leases.leftovers() == []


def test_signals_term_is_a_preemption_and_kill_a_vanished_machine(duo, ssh_lab):
    be = backend()
    h = start(be)
    wait_for(lambda: "step 3 " in log_of(duo[0]), what="steps")
    be.signal(h, "term")
    assert wait_done(be, h).state is RunState.PREEMPTED and be.poll(h).exit_code == 75
    be.terminate(h)
    h2 = start(be, attempt=2)
    wait_for(lambda: ssh_lab.job_pids("job-1"), what="attempt 2")
    be.signal(h2, "kill")
    status = wait_done(be, h2)
    assert status.state is RunState.PREEMPTED and "vanished" in status.reason
    assert ssh_lab.job_pids("job-1") == []


def test_a_failing_run_is_failed_with_its_exit_code_and_logs_stream(duo):
    be = backend()
    h = start(be, run="echo hello from $HOSTNAME; exit 3")
    status = wait_done(be, h)
    assert (status.state, status.exit_code) == (RunState.FAILED, 3)
    assert any("hello from" in line for line in be.stream_logs(h))
    assert any("hello from" in line for line in be.stream_logs(h, follow=True))


def test_secrets_are_a_0600_file_never_a_command_line(duo):
    be = backend()
    run = 'printf %s "$TOKEN" | sha256sum > ../token.sha256; stat -c %a secrets.json > ../mode'
    h = start(be, run=run, secrets={"TOKEN": "s3cret-123"})
    assert wait_done(be, h).state is RunState.SUCCEEDED
    att = duo[0].root / "attempts/job-1/attempt-1"
    assert (att.parent / "mode").read_text().strip() == "600"
    assert (att.parent / "token.sha256").read_text().split()[0] == hashlib.sha256(b"s3cret-123").hexdigest()
    be.terminate(h)
    assert not (att / "secrets.json").exists()
    assert all(b"s3cret-123" not in f.read_bytes() for f in att.rglob("*") if f.is_file())


def test_two_nodes_see_skypilots_variables(ssh_lab, tmp_path):
    for name in ("n0", "n1", "n2"):
        ssh_lab.add_host(name)
    ssh_lab.write_pool("trio", ["n0", "n1", "n2"])
    be = backend("trio")
    script = 'echo "rank=$SKYPILOT_NODE_RANK nodes=$SKYPILOT_NUM_NODES gpus=$SKYPILOT_NUM_GPUS_PER_NODE ips=$(echo $SKYPILOT_NODE_IPS)"'
    h = start(be, run=script, num_nodes=2)
    assert [n["name"] for n in h["nodes"]] == ["n0", "n1"]
    assert wait_done(be, h).state is RunState.SUCCEEDED
    for rank, name in enumerate(("n0", "n1")):
        log = log_of(ssh_lab.hosts[name])
        assert f"rank={rank} nodes=2 gpus=0 ips=127.0.0.1 127.0.0.1" in log
    with pytest.raises(NoCapacityError, match="1 of 2"):
        be.provision(ProvisionRequest("job-2", 1, "ssh/trio", num_nodes=2))
    assert [x.job_id for x in be.leases.all()] == ["job-1", "job-1"]  # the partial lease was given back


def test_bootstrap_runs_once_per_host_and_script(duo):
    be = backend()
    h = be.provision(ProvisionRequest("job-1", 1, "ssh/duo"))
    be.bootstrap(h)
    assert h["nodes"][0]["bootstrap"] == "ran"
    be.bootstrap(h)
    assert h["nodes"][0]["bootstrap"] == "skipped"
    assert (duo[0].root / "venv/bin/python").exists()


def test_the_connection_reports_failures_precisely(duo):
    host = load_pool("duo")[0]
    with Remote(host) as r:
        assert r.run("echo $LAUNCH_REMOTE_ROOT").stdout.strip() == str(duo[0].root)
        with pytest.raises(CommandError, match=r"`echo out; echo err >&2; exit 4` failed \(exit code 4\)[\s\S]*err"):
            r.run("echo out; echo err >&2; exit 4")
        with pytest.raises(CommandTimeout):
            r.run("sleep 5", timeout=0.5)
        assert r.run("cat", stdin=b"round trip").stdout == "round trip"
        r.put_bytes(f"{duo[0].root}/x", b"data", mode=0o600)
        assert r.get_bytes(f"{duo[0].root}/x") == b"data" and (duo[0].root / "x").stat().st_mode & 0o777 == 0o600
        assert list(r.stream("printf 'a\\nb\\n'")) == ["a", "b"]
    duo[0].kill()
    with pytest.raises(HostLostError):
        Remote(host, connect_timeout=1).open()


def test_a_host_that_reaches_an_index_installs_what_it_lacks_from_it(ssh_lab, image_python):
    """The image Python lacks boto3, matplotlib and rich; this host reads this machine's pip
    configuration (its local indexes), so it installs them itself and no wheel is sent."""
    host = ssh_lab.add_host("host-a", python=image_python)
    ssh_lab.write_pool("one", ["host-a"])
    be = backend("one")
    h = be.provision(ProvisionRequest("job-1", 1, "ssh/one"))
    be.bootstrap(h)
    assert h["nodes"][0]["bootstrap"] == "ran" and "wheels" not in h["nodes"][0]
    assert not (host.root / "wheels").exists()
    site = next((host.root / "venv/lib").glob("python3*/site-packages"))
    assert {"boto3", "matplotlib", "rich"} <= {p.name for p in site.iterdir()}
    be.terminate(h)
