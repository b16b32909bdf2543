"""Shared settings for the xr2text tests: a model small enough for seconds on a CPU."""

from __future__ import annotations

import pytest

# ResNet-18 on 32-pixel views (one visual token each), a one-layer 32-wide decoder.
TINY = ["--image-size", "32", "--encoder", "resnet18", "--d-model", "32", "--layers", "1",
        "--heads", "2", "--ff", "64", "--beam-size", "2", "--workers", "0", "--threads", "1",
        "--meteor", "off", "--no-plot", "--log-every", "1"]


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread (as --threads 1 gives a trainer): on a shared, loaded machine two
    spinning threads per process are many times slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
