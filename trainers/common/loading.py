"""Loading batches in an order that resumes exactly, shared by the image trainers.

Workers prefetch, so a sampler's own position runs ahead of what was trained on. ``EpochBatches``
reads a ``ResumableSampler``'s order from its position without moving it; the training loop
advances ``sampler.position`` as it *consumes* batches, so at a step boundary the position is what
the checkpoint must hold. Augmentation is drawn per sample from ``sample_seed(seed, epoch,
index)``, so it does not depend on which worker loaded what, nor on an interruption.
"""

from __future__ import annotations

import os
from typing import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from trainers.common.sampler import ResumableSampler

# The normalisation torchvision's ImageNet weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch (a pure function, cheap to compute)."""
    return ((seed * 1_000_003 + epoch) * 2_000_003 + index) % (2**63)


def epoch_plan(num_samples: int, batch_size: int, world_size: int = 1) -> list[tuple[int, int]]:
    """The ``[start, end)`` global positions of an epoch's steps, ``batch_size`` samples per rank
    each (``num_samples``: the padded epoch, a multiple of ``world_size``). A last step of a single
    sample per rank is merged into the one before (batch norm cannot train on one sample)."""
    size = batch_size * world_size
    plan = [(a, min(a + size, num_samples)) for a in range(0, num_samples, size)]
    if len(plan) > 1 and plan[-1][1] - plan[-1][0] < 2 * world_size:
        plan[-2:] = [(plan[-2][0], num_samples)]
    return plan


class EpochBatches:
    """Batch sampler: the rest of the epoch from ``sampler.position``, which it does not move.

    Each item is ``(dataset index, augmentation seed)``; under torchrun, this rank's share of
    the step (``ResumableSampler.shard``), and the loop advances the sampler with
    ``sampler.advance(len(batch))``. Iterate once per epoch (the DataLoader does so on every
    ``iter(loader)``, persistent workers or not).
    """

    def __init__(self, sampler: ResumableSampler, batch_size: int, seed: int):
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed

    def plan(self) -> list[tuple[int, int]]:
        return epoch_plan(self.sampler.epoch_size, self.batch_size, self.sampler.world_size)

    def remaining(self) -> list[tuple[int, int]]:
        """The steps still to come. A position inside a step (a checkpoint written by another
        number of processes) starts with the rest of that step."""
        start = self.sampler.position
        plan = self.plan()
        if start not in {a for a, _ in plan} | {self.sampler.epoch_size}:
            if self.sampler.world_size == 1 and not self.sampler.resharded:
                raise ValueError(f"sampler position {start} is not at a batch boundary of "
                                 f"batch size {self.batch_size}")
            return [(max(a, start), b) for a, b in plan if b > start]
        return [(a, b) for a, b in plan if a >= start]

    def __len__(self) -> int:
        return len(self.remaining())

    def augmentation_epoch(self) -> int:
        """The epoch that seeds each sample's augmentation (a trainer may count epochs otherwise)."""
        return self.sampler.epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, epoch = self.sampler.padded_order(), self.augmentation_epoch()
        for a, b in self.remaining():
            yield [(int(i), sample_seed(self.seed, epoch, int(i)))
                   for i in self.sampler.shard(a, b, order)]


def eval_batches(n: int, batch_size: int) -> BatchSampler:
    """Batches of this rank's share of an ``n``-item evaluation split, in order (all of it on one
    process); ``distributed.gather_in_order`` or ``all_sum`` puts the shards together."""
    from trainers.common import distributed

    return BatchSampler(list(distributed.rank_indices(n)), batch_size, drop_last=False)


def _worker_init(_worker_id: int) -> None:
    # The launcher forwards a preemption notice (SIGTERM) to the run's whole process group. A
    # worker killed by it would crash the main process at its next batch, before it can save; so
    # workers leave the group. They still stop when the main process shuts them down (or, at
    # exit, terminates them), and on their own once it is gone (the loader's parent watchdog).
    # Ignoring SIGTERM instead would hang the exit: multiprocessing terminates, then joins.
    os.setpgid(0, 0)


def make_loader(dataset: Dataset, batch_sampler, workers: int, pin_memory: bool) -> DataLoader:
    """Workers, pinned memory, persistent workers. The loader gets a generator of its own: every
    ``iter(loader)`` draws a seed from it, and drawn from the global RNG that would make a resumed
    run (which starts one more iteration) drift from an uninterrupted one."""
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers,
                      pin_memory=pin_memory, persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None,
                      worker_init_fn=_worker_init if workers > 0 else None,
                      generator=torch.Generator().manual_seed(0))
