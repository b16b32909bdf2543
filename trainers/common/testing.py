"""Helpers for testing that a trainer resumes exactly (used by this project's tests; use them
for your own trainer too)."""

from __future__ import annotations

from typing import Any

import torch

# Keys whose values differ between two runs of the same training: wall clock and which attempt
# wrote the checkpoint.
VOLATILE_KEYS = ("attempt", "images_per_s", "throughput")


def assert_states_equal(a: Any, b: Any, path: str = "state") -> None:
    """Every tensor bitwise equal (``torch.equal``, same dtype), every other value equal, in two
    checkpoint states; timing keys (containing "time") and ``VOLATILE_KEYS`` are not compared."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys differ"
        for k in a:
            if "time" in str(k) or k in VOLATILE_KEYS:
                continue
            assert_states_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_states_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
