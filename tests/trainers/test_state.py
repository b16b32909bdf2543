"""RNG states survive a save/load round trip (weights_only), and the snapshot refuses objects
that would need pickled code to load."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from trainers.common import capture_rng, restore_rng, to_host


def draw():
    return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(),
            torch.rand(4), torch.randn(2))


def same(a, b):
    return all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(a, b))


def test_rng_round_trip_through_a_checkpoint_file():
    random.gauss(0, 1)  # leave a cached gaussian in python's state, and numpy's
    np.random.randn()
    buf = io.BytesIO()
    torch.save(to_host(capture_rng()), buf)
    expected = draw()
    assert not same(draw(), expected)  # the generators really moved on
    buf.seek(0)
    restore_rng(torch.load(buf, weights_only=True))
    assert same(draw(), expected)


def test_to_host_copies_tensors_and_rejects_objects():
    t = torch.ones(3)
    copy = to_host({"a": [t, (1, "x", None)]})
    t.add_(1)
    assert torch.equal(copy["a"][0], torch.ones(3)) and copy["a"][1] == (1, "x", None)
    with pytest.raises(TypeError, match="weights_only"):
        to_host({"f": object()})
