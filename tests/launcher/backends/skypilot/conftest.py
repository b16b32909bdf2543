"""SkyPilot writes under ~/.sky (user hash, locks, catalogs): every test here gets its own HOME."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def sky_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home
