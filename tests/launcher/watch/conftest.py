"""The fake NVML module, for tests that sample or preflight a pretend GPU machine."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

FAKE_DIR = Path(__file__).parent / "fake_nvml"
GIB = 1024 ** 3
A100 = {"name": "NVIDIA A100-SXM4-80GB", "util": 97, "mem_used": 30 * GIB, "mem_total": 80 * GIB,
        "temp": 71, "power_mw": 301200}


@pytest.fixture
def fake_nvml(monkeypatch):
    """The fake ``pynvml`` module with one A100; in this process and, through PYTHONPATH, in
    the processes the test starts. Set ``FAKE_NVML`` to change the GPUs."""
    monkeypatch.setenv("FAKE_NVML", json.dumps([A100]))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(FAKE_DIR), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.syspath_prepend(str(FAKE_DIR))
    sys.modules.pop("pynvml", None)
    import pynvml

    assert pynvml.__file__.startswith(str(FAKE_DIR))
    yield pynvml
    sys.modules.pop("pynvml", None)
