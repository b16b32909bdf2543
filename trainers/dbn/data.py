"""The images of one CIFAR-10 class: its training images (to train on) and its test images (held
out: the autoencoder's PSNR, the held-out pseudo-likelihood, the reference codes of the sample
check). Loaded by torchvision's CIFAR10 through ``trainers.common.cifar``, whose checks make a
missing or broken file a one-line error naming it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainers.common import cifar
from trainers.dbn import synthetic


@dataclass
class ClassImages:
    name: str
    train: torch.Tensor  # N x 3 x 32 x 32, 0-1 scale
    heldout: torch.Tensor


def class_index(name: str) -> int:
    if name not in cifar.CLASSES:
        raise cifar.DataError(f"--class {name!r}: CIFAR-10 has no such class (it has "
                              f"{', '.join(cifar.CLASSES)})")
    return cifar.CLASSES.index(name)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def load(data_dir: str | Path, name: str, *, synthetic_counts: tuple[int, int] | None = None,
         seed: int = 0, train_size: int = 0, heldout_size: int = 0) -> ClassImages:
    """The class's images; with ``synthetic_counts`` (train, test images per class) generated
    into ``data_dir`` first. ``train_size``/``heldout_size`` > 0 keep only the first ones."""
    k = class_index(name)
    if synthetic_counts is not None:
        synthetic.write(data_dir, *synthetic_counts, seed=seed)
    parts = []
    for train, size in ((True, train_size), (False, heldout_size)):
        images, labels = cifar.load(data_dir, train=train)
        images = images[labels == k]
        split = "training" if train else "test"
        if len(images) < 2:
            raise cifar.DataError(f"{cifar.batches_folder(data_dir)}: {len(images)} {split} "
                                  f"images of class {name!r}; need at least 2")
        parts.append(to_tensor(images[:size] if size else images))
    return ClassImages(name, *parts)
