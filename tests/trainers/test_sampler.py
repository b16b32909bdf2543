"""The sampler's order depends on (seed, epoch) only, and it resumes at the exact sample."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from trainers.common import ResumableSampler


def test_order_is_a_function_of_seed_and_epoch_only():
    a = ResumableSampler(50, seed=3)
    torch.manual_seed(123)  # the global RNG must not matter
    first = list(a)
    b = ResumableSampler(50, seed=3)
    torch.manual_seed(999)
    torch.rand(7)
    assert list(b) == first and sorted(first) == list(range(50))
    b.set_epoch(1)
    assert list(b) != first
    c = ResumableSampler(50, seed=4)
    assert list(c) != first


def test_sampler_resumes_at_its_position():
    a = ResumableSampler(37, seed=1)
    a.set_epoch(2)
    batches = a.batches(5)
    seen = [next(batches) for _ in range(3)]
    assert a.position == 15 and len(a) == 22
    saved = a.state_dict()
    rest = torch.cat(list(batches))

    b = ResumableSampler(37, seed=1)
    b.load_state_dict(saved)
    resumed = torch.cat(list(b.batches(5)))
    assert torch.equal(resumed, rest)
    assert torch.equal(torch.cat([*seen, resumed]), _order(37, seed=1, epoch=2))
    assert b.exhausted and b.position == 37


def _order(n, seed, epoch):
    s = ResumableSampler(n, seed)
    s.set_epoch(epoch)
    return s.order()


def test_position_tracks_a_dataloader_without_workers():
    data = TensorDataset(torch.arange(20))
    s = ResumableSampler(20, seed=0)
    it = iter(DataLoader(data, batch_size=4, sampler=s))
    next(it), next(it)
    assert s.position == 8


def test_loading_a_sampler_of_another_size_fails():
    s = ResumableSampler(10, seed=0)
    with pytest.raises(ValueError, match="10"):
        ResumableSampler(12, seed=0).load_state_dict(s.state_dict())


def test_harness_saves_the_consumed_position_not_the_prefetched_one(tmp_path, toy):
    """A DataLoader with workers draws ahead; the checkpoint must hold what was trained on."""
    run = toy(tmp_path, n=40, batch_size=8)
    batches = run.sampler.batches(8)
    next(batches), next(batches), next(batches)  # three batches drawn (one is still queued)
    run.h.step_done(n=8)
    run.h.step_done(n=8)
    from trainers.common import state as S

    assert run.h.snapshot()[S.KEY_SAMPLER]["position"] == 16
    assert run.sampler.position == 24
    run.h.progress.close()
