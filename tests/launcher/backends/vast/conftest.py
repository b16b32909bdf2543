"""The Vast.ai fake API (tests/integration/vast/fake_vast.py) in-process, strict (rate limits, late
reports, null fields after create), on a fake clock that it shares with the backend under test: no
test waits in real time."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.backends.base import RunState, RunStatus
from launcher.backends.vast.backend import VastBackend

from launcher.testing import load_by_path

FAKE = Path(__file__).resolve().parents[3] / "integration" / "vast" / "fake_vast.py"


def load_fake():
    return load_by_path(FAKE)


@pytest.fixture
def api_key(monkeypatch, tmp_path):
    key = "vast-key-" + "5eCr3t" * 4
    monkeypatch.setenv("VAST_API_KEY", key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return key


@pytest.fixture
def clock():
    return load_fake().FakeClock()


@pytest.fixture
def fake(api_key, monkeypatch, clock):
    server = load_fake().FakeVast(api_key, clock=clock)
    monkeypatch.setenv("VAST_URL", server.url)
    yield server
    server.close()


@pytest.fixture
def ssh_key(tmp_path, monkeypatch):
    key = tmp_path / "id_test"
    key.write_text("PRIVATE")
    key.with_suffix(".pub").write_text("ssh-ed25519 AAAATEST launch@test\n")
    monkeypatch.setenv("LAUNCH_VAST_SSH_KEY", str(key))
    return key


class StubSSH:
    """The SSH layer's calls, recorded; ``status`` is what poll answers."""

    def __init__(self):
        self.status = RunStatus(RunState.RUNNING)
        self.calls = []

    def attach(self, handle, host):
        self.calls.append(("attach", host))
        handle["nodes"] = [{"name": host.name, "hostname": host.hostname, "port": host.port}]
        return ""

    def poll(self, handle):
        self.calls.append(("poll",))
        return self.status

    def terminate(self, handle):
        self.calls.append(("terminate",))


@pytest.fixture
def backend(fake, ssh_key, monkeypatch, clock):
    monkeypatch.setenv("LAUNCH_VAST_API_POLL", "0")
    b = VastBackend("vast", clock=clock, sleep=clock.sleep)
    b.ssh = StubSSH()
    return b
