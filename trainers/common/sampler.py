"""A sampler that can stop in the middle of an epoch and carry on from the same sample.

A resumed run must see exactly the batches the uninterrupted run would have seen. So the order of
an epoch is a pure function of ``(seed, epoch)`` drawn from the sampler's *own* generator: no other
random draw (dropout, augmentation, model init) can shift it, and nothing about it needs saving
but the seed, the epoch and the position.
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

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        if not 0 <= position <= self.num_samples:
            raise ValueError(f"position {position} outside 0..{self.num_samples}")
        self.epoch, self.position = int(epoch), int(position)

    def order(self) -> torch.Tensor:
        """The full order of the current epoch (the same on every call and every machine)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=g)

    @property
    def exhausted(self) -> bool:
        """True once every index of the epoch has been handed out."""
        return self.position >= self.num_samples

    def __len__(self) -> int:
        """The indices still to come in this epoch."""
        return self.num_samples - self.position

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        while self.position < self.num_samples:
            i = int(order[self.position])
            self.position += 1
            yield i

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The rest of the epoch as index tensors of ``batch_size`` (the last one may be short)."""
        order = self.order()
        while self.position < self.num_samples:
            idx = order[self.position:self.position + batch_size]
            self.position += len(idx)
            yield idx

    def state_dict(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "seed": self.seed, "shuffle": self.shuffle,
                "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_samples"] != self.num_samples:
            raise ValueError(f"checkpoint's sampler covers {state['num_samples']} samples, "
                             f"this data set has {self.num_samples}")
        self.seed, self.shuffle = int(state["seed"]), bool(state["shuffle"])
        self.set_epoch(state["epoch"], state["position"])
