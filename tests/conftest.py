"""Fixtures for every test: an isolated state directory and no real cloud credentials."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def launch_home(tmp_path, monkeypatch):
    """Point the launcher's state (~/.launch) at a temporary folder for every test."""
    home = tmp_path / "launch-home"
    home.mkdir()
    monkeypatch.setenv("LAUNCH_HOME", str(home))
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN", "LAUNCH_STORE", "LAUNCH_INFRA", "LAUNCH_SSH_POOLS"):
        monkeypatch.delenv(var, raising=False)
    return home
