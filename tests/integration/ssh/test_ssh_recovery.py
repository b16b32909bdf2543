"""A job on a two-host SSH pool loses its host and resumes on the other one from a real S3 server.

Everything is real: ``launch`` on the command line, a detached supervisor, OpenSSH sshd hosts,
SeaweedFS over HTTP. The toy trainer (standard library only) keeps these tests fast; the flagship
test with the quickstart trainer lives in test_ssh_flagship.py.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from launcher import state as st
from launcher.backends.ssh.leases import Leases
from launcher.store import NotFound, open_store
from launcher.testing import toy_digest, wait_for

pytestmark = pytest.mark.integration

STEPS = 60
TOY = f"python -m launcher.testing toy --steps {STEPS} --step-time 0.15"


def toy_task(tmp_path, name="toy", extra=""):
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\n{extra}run: {TOY}\n")
    return p


def run_log(host, run_id: str, attempt: int = 1) -> str:
    p = host.root / "attempts" / run_id / f"attempt-{attempt}" / "run.log"
    return p.read_text(errors="replace") if p.exists() else ""


def store_log(run_id: str, attempt: int = 1) -> str:
    """The copy of an attempt's log that the agent uploaded to the store (AWS_* from the env)."""
    job = st.State().job(run_id)
    try:
        return open_store(job.store_uri).get_bytes(f"logs/attempt-{attempt}.log").decode(errors="replace")
    except NotFound:
        return ""


def ended_attempt(job: int, n: int) -> st.Attempt | None:
    """Attempt ``n`` of the job once it has ended (read from the state, in-process: cheap)."""
    attempts = st.State().attempts(job)
    return attempts[n - 1] if len(attempts) >= n and attempts[n - 1].ended else None


def job_ended(job: int) -> st.Job | None:
    j = st.State().job(job)
    return j if j.terminal else None


def submit(launch_cli, task, pool: str, bucket: str, *extra: str) -> tuple[int, str]:
    launch_cli("up", str(task), "--infra", f"ssh/{pool}", "--store", f"s3://{bucket}/runs", "-d", *extra)
    job = st.State().jobs()[-1]
    return job.id, job.run_id


@pytest.fixture
def duo(ssh_lab, s3_server, monkeypatch):
    """Two hosts in pool 'duo', S3 credentials in the environment, a fresh bucket."""
    s3_server.use(monkeypatch)
    a, b = ssh_lab.add_host("host-a"), ssh_lab.add_host("host-b")
    ssh_lab.write_pool("duo", ["host-a", "host-b"])
    return a, b, s3_server.make_bucket()


def test_killed_host_is_detected_fast_and_the_job_resumes_on_the_other(duo, launch_cli, tmp_path):
    a, b, bucket = duo
    job, run_id = submit(launch_cli, toy_task(tmp_path), "duo", bucket)
    follower = subprocess.Popen([launch_cli.path, "logs", str(job), "-f"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: "step 12 " in store_log(run_id), 120, "attempt 1's log with step 12 in the store")
    killed = time.time()
    a.kill()
    first = wait_for(lambda: ended_attempt(job, 1), 30, "attempt 1 to end")
    detection = first.ended - killed
    print(f"\nkill -> detection: {detection:.1f} s ({first.reason})")
    assert first.state == "PREEMPTED" and "host lost" in first.reason
    assert detection <= 10.0

    assert wait_for(lambda: job_ended(job), 180, "the job to end").state == "SUCCEEDED", launch_cli.status(job)
    assert [x.host for x in st.State().attempts(job)] == ["host-a", "host-b"]
    resumed = run_log(b, run_id, 2)
    assert "resuming from checkpoint step" in resumed and "resumed at step" in resumed

    logs = launch_cli("logs", str(job)).stdout  # host-a is gone: attempt 1 comes from the store
    first_part = logs.split("===== attempt 2")[0]
    assert "===== attempt 1 on host-a" in first_part and "step 12 digest" in first_part
    assert logs.split("final digest")[-1].split()[0] == toy_digest(STEPS, tmp_path / "clean")

    followed = follower.communicate(timeout=60)[0]
    assert "===== attempt 1" in followed and "===== attempt 2" in followed and "final digest" in followed
    assert Leases().all() == []
    assert not (b.root / "lease.json").exists()


def test_down_mid_run_leaves_no_process_and_no_secret(duo, launch_cli, ssh_lab, tmp_path, monkeypatch,
                                                        s3_server, launch_home):
    a, b, bucket = duo
    token = "tok-" + os.urandom(8).hex()
    monkeypatch.setenv("TOY_TOKEN", token)
    task = toy_task(tmp_path, extra="secrets:\n  TOY_TOKEN: null\n")
    job, run_id = submit(launch_cli, task, "duo", bucket)
    att = a.root / "attempts" / run_id / "attempt-1"
    wait_for(lambda: "step 5 " in run_log(a, run_id), 120, "the run to be under way")
    assert oct((att / "secrets.json").stat().st_mode & 0o777) == "0o600"
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert ssh_lab.job_pids(run_id), "the job should be running"

    launch_cli("down", str(job))
    assert launch_cli.status(job)["state"] == "CANCELLED"
    assert ssh_lab.job_pids(run_id) == []
    assert not (att / "secrets.json").exists()
    assert not (a.root / "lease.json").exists() and Leases().all() == []

    secrets = [token.encode(), s3_server.secret_key.encode()]
    processes += subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not any(s.decode() in processes for s in secrets)
    for folder in (launch_home, a.root / "attempts", b.root, ssh_lab.dir):
        for f in folder.rglob("*"):
            if f.is_file() and not f.is_symlink() and f.name != "secrets.json":
                data = f.read_bytes()
                assert not any(s in data for s in secrets), f"a secret leaked into {f}"


def test_recovery_on_hosts_without_a_package_index(ssh_lab, image_python, s3_server, monkeypatch, launch_cli,
                                                   tmp_path, launch_home):
    """Two air-gapped hosts: an image Python with torch, torchvision and numpy but no boto3, and
    no route to any package index (each in its own network namespace, its only link the one to
    us). The bootstrap brings the missing packages as wheels from here; the job loses host-a and
    resumes on host-b from the store, reached over those links too."""
    s3_server.use(monkeypatch)
    a = ssh_lab.add_host("host-a", python=image_python, no_index=True)
    b = ssh_lab.add_host("host-b", python=image_python, no_index=True)
    ssh_lab.write_pool("air", ["host-a", "host-b"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", ssh_lab.s3_endpoint_for(a, s3_server.endpoint_url, b))
    assert subprocess.run([image_python, "-c", "import boto3"], capture_output=True).returncode != 0
    job, run_id = submit(launch_cli, toy_task(tmp_path), "air", s3_server.make_bucket())

    wait_for(lambda: "step 12 " in store_log(run_id) or job_ended(job), 180, "attempt 1's log with step 12")
    assert not job_ended(job), launch_cli.status(job)  # e.g. FAILED: the bootstrap could not install boto3
    a.kill()
    assert wait_for(lambda: job_ended(job), 240, "the job to end").state == "SUCCEEDED", launch_cli.status(job)
    attempts = st.State().attempts(job)
    assert [(x.host, x.state) for x in attempts] == [("host-a", "PREEMPTED"), ("host-b", "SUCCEEDED")]
    assert "resumed at step" in run_log(b, run_id, 2)
    assert launch_cli("logs", str(job)).stdout.split("final digest")[-1].split()[0] == \
        toy_digest(STEPS, tmp_path / "clean")

    # Built once here, sent to both hosts, installed there from those files alone.
    sets = list((launch_home / "wheels").glob("*/*/COMPLETE"))
    assert len(sets) == 1 and sets[0].parent.joinpath("requirements.txt").read_text().split() == \
        ["boto3", "matplotlib", "nvidia-ml-py", "rich"]
    for host in (a, b):
        sent = {p.name for p in (host.root / "wheels" / sets[0].parent.name).glob("*.whl")}
        assert any(n.startswith("boto3-") for n in sent) and any(n.startswith("rich-") for n in sent)
    # And the hosts really reach no index: pip on host-b cannot fetch a single file.
    offline = subprocess.run(["ip", "netns", "exec", b.netns.name, "env", *(f"{k}={v}" for k, v in b.env.items()),
                              str(b.root / "venv/bin/python"), "-m", "pip", "download", "--no-deps", "--retries", "0",
                              "--timeout", "3", "-d", str(tmp_path / "dl"), "six"], capture_output=True, text=True)
    assert offline.returncode != 0, offline.stdout
