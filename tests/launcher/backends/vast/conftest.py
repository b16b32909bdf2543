"""The Vast.ai fake API (tests/integration/vast/fake_vast.py) in-process, and a backend on it."""

from __future__ import annotations

from pathlib import Path

import pytest

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
def fake(api_key, monkeypatch):
    server = load_fake().FakeVast(api_key)
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
