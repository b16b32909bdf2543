"""A sampler that can stop in the middle of an epoch and carry on from the same sample.

A resumed run must see exactly the batches the uninterrupted run would have seen. So the order of
an epoch is a pure function of ``(seed, epoch)`` drawn from the sampler's *own* generator: no other
random draw (dropout, augmentation, model init) can shift it, and nothing about it needs saving
but the seed, the epoch and the position.

Under torchrun every rank builds the same sampler; each takes its shard of the *same* global
order, interleaved as ``DistributedSampler`` does (rank r gets positions r, r+W, r+2W, ...). The
epoch is padded to a multiple of the world size W by repeating its first indices, so every rank
has as many samples. ``position`` is global (positions of the padded order handed out on all
ranks together): saved by rank 0, it means the same on every rank, and with W = 1 it is exactly
the single-process count.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Indices ``0..num_samples-1``, a fresh permutation per epoch, resumable at any position.

    ``position`` counts the indices already handed out in this epoch; it advances *before* an
    index (or batch) is yielded. A ``DataLoader`` with workers draws ahead of training, so the
    harness saves the position from the samples its steps consumed (``step_done(n=...)``) rather
    than this count; used alone, draw lazily (``batches()`` or ``num_workers=0``).
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True, *,
                 rank: int | None = None, world_size: int | None = None):
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        if rank is None or world_size is None:
            from trainers.common import distributed

            w = distributed.world()
            rank, world_size = (w.rank if rank is None else rank), (w.size if world_size is None else world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.num_samples = int(num_samples)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        if not 0 <= position <= self.epoch_size:
            raise ValueError(f"position {position} outside 0..{self.epoch_size}")
        self.epoch, self.position = int(epoch), int(position)

    @property
    def epoch_size(self) -> int:
        """The padded epoch: a multiple of the world size (``num_samples`` for one process)."""
        return -(-self.num_samples // self.world_size) * self.world_size

    def order(self) -> torch.Tensor:
        """The order of the current epoch, the same on every call, rank and machine (a subclass
        may draw it otherwise: the sharding below pads and splits whatever this returns)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=g)

    def padded_order(self) -> torch.Tensor:
        """``order()`` with its first indices repeated up to ``epoch_size``."""
        perm = self.order()
        pad = self.epoch_size - len(perm)
        return perm if pad <= 0 else torch.cat([perm, perm[:pad]])

    def steps_per_epoch(self, batch_size: int) -> int:
        """Steps of one epoch with ``batch_size`` samples per rank (and per step)."""
        return -(-self.epoch_size // (batch_size * self.world_size))

    def shard(self, start: int, end: int, order: torch.Tensor | None = None) -> torch.Tensor:
        """This rank's indices among the global positions ``[start, end)``."""
        order = self.padded_order() if order is None else order
        return order[start + self.rank:end:self.world_size]

    def advance(self, n: int) -> None:
        """This rank consumed ``n`` samples of a step: every rank did, so the global position
        moves by ``n`` times the world size (for loops that draw through a DataLoader)."""
        self.position = min(self.epoch_size, self.position + int(n) * self.world_size)

    @property
    def exhausted(self) -> bool:
        """True once every index of the epoch has been handed out."""
        return self.position >= self.epoch_size

    def __len__(self) -> int:
        """The indices still to come in this epoch, on this rank."""
        return len(range(self.position + self.rank, self.epoch_size, self.world_size))

    def __iter__(self) -> Iterator[int]:
        order = self.padded_order()
        while self.position < self.epoch_size:
            i = int(order[self.position + self.rank])
            self.position += self.world_size
            yield i

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The rest of the epoch as index tensors of ``batch_size`` per rank (the last one may be
        short, never empty)."""
        order = self.padded_order()
        while self.position < self.epoch_size:
            end = min(self.epoch_size, self.position + batch_size * self.world_size)
            idx = self.shard(self.position, end, order)
            self.position = end
            yield idx

    def state_dict(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "seed": self.seed, "shuffle": self.shuffle,
                "epoch": self.epoch, "position": self.position, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back a saved position. One saved by another number of processes keeps the global
        order: the position goes back to this world's last step boundary at or before it (at
        most ``world_size - 1`` samples are seen twice) and past this world's padded end it is the
        end of the epoch. ``resharded`` tells whether that happened."""
        if state["num_samples"] != self.num_samples:
            raise ValueError(f"checkpoint's sampler covers {state['num_samples']} samples, "
                             f"this data set has {self.num_samples}")
        self.seed, self.shuffle = int(state["seed"]), bool(state["shuffle"])
        saved_world = int(state.get("world_size", 1))
        position = int(state["position"])
        self.resharded = saved_world != self.world_size
        if self.resharded:
            position = min(self.epoch_size, position - position % self.world_size)
        self.set_epoch(state["epoch"], position)

    resharded = False
