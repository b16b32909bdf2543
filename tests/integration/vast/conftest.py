"""A pretend Vast.ai for integration tests: the HTTP fake of its API (``fake_vast.py``) whose offers
rent real sshd hosts (the SSH layer's fixtures, reused from ``tests/integration/ssh/conftest.py``),
and a real S3 server (``s3_server``) for checkpoints.

    def test_x(vast):
        a = vast.add_host("host-a", min_bid=0.10)     # an sshd host, offered for rent
        vast.launch("up", "task.yaml", "--infra", "vast", "--store", vast.store, "-d")
        vast.api.outbid(instance_id)                  # stops the instance, kills the host
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from launcher.testing import load_by_path

HERE = Path(__file__).resolve().parent


fake_vast = load_by_path(HERE / "fake_vast.py")
_ssh = load_by_path(HERE.parent / "ssh" / "conftest.py", "ssh_host_fixtures")
client_key, ssh_lab, wait_for = _ssh.client_key, _ssh.ssh_lab, _ssh.wait_for  # the sshd fixtures


@dataclass
class VastLab:
    api: Any  # fake_vast.FakeVast
    lab: Any  # the sshd hosts
    store: str  # s3://bucket/runs
    api_key: str
    env: dict[str, str]

    def add_host(self, name: str, **offer: Any):
        host = self.lab.add_host(name)
        host.offer_id = self.api.add_offer(host, **offer)
        return host

    def launch(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """``python -m launcher.cli ARGS`` in this test's environment."""
        r = subprocess.run([sys.executable, "-m", "launcher.cli", *args], env={**os.environ, **self.env},
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"launch {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def status(self, job: int | str) -> dict[str, Any]:
        return json.loads(self.launch("status", str(job), "--json").stdout)[0]

    def wait_state(self, job: int | str, states: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
        return wait_for(lambda: (d := self.status(job))["state"] in states and d, timeout,
                        f"job {job} to reach {'/'.join(states)}", every=0.5)


PACE = 0.1  # the fake's rate limits and delays, and the backend's pacing, at a tenth of the service's


@pytest.fixture
def vast(ssh_lab, s3_server, client_key, monkeypatch):
    """The fake API, strict (rate limits, late reports, null fields after create) at ``PACE``
    (its key in VAST_API_KEY), its URL in VAST_URL, our SSH key for instances, S3 credentials, a
    fresh bucket."""
    key = "vast-" + os.urandom(12).hex()
    api = fake_vast.FakeVast(key, pace_scale=PACE)
    s3_server.use(monkeypatch)
    env = {"VAST_API_KEY": key, "VAST_URL": api.url, "LAUNCH_VAST_SSH_KEY": str(client_key),
           "LAUNCH_VAST_API_POLL": "1", "LAUNCH_VAST_BOOT_TIMEOUT": "120", "LAUNCH_VAST_API_PACE": str(PACE),
           "LAUNCH_VAST_SETTLE": "20"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    vl = VastLab(api, ssh_lab, f"s3://{s3_server.make_bucket()}/runs", key, env)
    try:
        yield vl
    finally:  # a failed test leaves no supervisor behind (the API must still answer for this)
        from launcher import state as st

        for job in st.State().jobs():
            if not job.terminal:
                vl.launch("down", str(job.id), check=False)
        api.close()


@pytest.fixture(autouse=True)
def no_accelerator_preflight(monkeypatch):
    """The pretend Vast boxes are sshd hosts on this CPU machine: the RTX 4090 the toy tasks ask
    for is the fake's offer, not a device, so the agent's accelerator check is turned off."""
    monkeypatch.setenv("LAUNCH_PREFLIGHT", "0")
