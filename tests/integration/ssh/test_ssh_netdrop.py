"""A host whose network silently drops (no reset, no refusal: packets just vanish) is noticed
within 10 seconds, thanks to TCP keepalive, TCP_USER_TIMEOUT and the poll's own deadline.

The host lives in its own network namespace behind a veth pair; the test sets the host's end of
the link down mid-run. It reaches the S3 server only through that link too, so once cut off it
cannot touch the store while the job resumes on the other host.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from launcher import state as st
from launcher.store import NotFound, open_store
from launcher.testing import wait_for

pytestmark = pytest.mark.integration

STEPS = 60


def store_log(run_id: str) -> str:
    try:
        return open_store(st.State().job(run_id).store_uri).get_bytes("logs/attempt-1.log").decode()
    except NotFound:
        return ""


def ended(job: int, n: int):
    attempts = st.State().attempts(job)
    return attempts[n - 1] if len(attempts) >= n and attempts[n - 1].ended else None


def test_silent_network_drop_is_detected_within_10_s(ssh_lab, s3_server, monkeypatch, launch_cli, tmp_path):
    s3_server.use(monkeypatch)
    far = ssh_lab.add_host("host-far", netns=True)
    ssh_lab.add_host("host-b")
    ssh_lab.write_pool("split", ["host-far", "host-b"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", ssh_lab.s3_endpoint_for(far, s3_server.endpoint_url))
    bucket = s3_server.make_bucket()
    task = tmp_path / "toy.yaml"
    task.write_text(f"name: toy\nrun: python -m launcher.testing toy --steps {STEPS} --step-time 0.15\n")

    launch_cli("up", str(task), "--infra", "ssh/split", "--store", f"s3://{bucket}/runs", "-d")
    job = st.State().jobs()[-1]
    wait_for(lambda: "step 12 " in store_log(job.run_id), 120, "attempt 1 under way on host-far")
    dropped = time.time()
    far.netns.drop_link()
    first = wait_for(lambda: ended(job.id, 1), 30, "attempt 1 to end")
    detection = first.ended - dropped
    print(f"\nlink down -> detection: {detection:.1f} s ({first.reason})")
    assert first.state == "PREEMPTED" and "host lost" in first.reason
    assert detection <= 10.0

    final = wait_for(lambda: st.State().job(job.id).terminal and st.State().job(job.id), 180, "the job to end")
    assert final.state == "SUCCEEDED", launch_cli.status(job.id)
    assert [a.host for a in st.State().attempts(job.id)] == ["host-far", "host-b"]
    env = {**os.environ, "LAUNCH_CHECKPOINT_DIR": str(tmp_path / "c"), "LAUNCH_OUTPUT_DIR": str(tmp_path / "o")}
    clean = subprocess.run([sys.executable, "-m", "launcher.testing", "toy", "--steps", str(STEPS), "--step-time",
                            "0"], env=env, capture_output=True, text=True, check=True).stdout
    logs = launch_cli("logs", str(job.id)).stdout
    assert logs.split("final digest")[-1].split()[0] == clean.split("final digest")[-1].split()[0]
