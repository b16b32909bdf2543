"""CIFAR-10 images for the denoiser, and the noise: fresh per step in training, fixed per image in
validation (image ``i`` always gets the same noise for a given seed, whatever else runs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from trainers.common import cifar
from trainers.denoise import synthetic


@dataclass
class Split:
    train: torch.Tensor   # N x 3 x 32 x 32, 0-1 scale
    val: torch.Tensor


def to_tensor(images) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def load(data_dir: str | Path, *, synthetic_counts: tuple[int, int] | None, seed: int,
         train_size: int | None, val_size: int) -> Split:
    """The training images and the first ``val_size`` test images. With ``synthetic_counts``
    (train, test) the batches are generated first, into ``data_dir``."""
    if synthetic_counts is not None:
        synthetic.write(data_dir, *synthetic_counts, seed=seed)
    train, _ = cifar.load(data_dir, train=True)
    test, _ = cifar.load(data_dir, train=False)
    if train_size:
        train = train[:train_size]
    if len(train) == 0 or len(test) == 0:
        raise cifar.DataError(f"{cifar.batches_folder(data_dir)}: no images in the batches")
    return Split(to_tensor(train), to_tensor(test[:val_size]))


def fixed_noise(shape: torch.Size, sigma: float, seed: int) -> torch.Tensor:
    """Noise for images ``0..shape[0]-1``: image ``i`` from its own generator (seed, i)."""
    g = torch.Generator()
    out = torch.empty(shape)
    for i in range(shape[0]):
        g.manual_seed(seed * 1_000_003 + i)
        out[i] = torch.randn(shape[1:], generator=g)
    return out * sigma
