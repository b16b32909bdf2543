"""A synthetic, class-structured image data set, generated in memory from a seed.

Nothing can be downloaded here, and a test must not wait for a real data set. Each class is a
fixed random low-resolution pattern (upsampled, so it has spatial structure a CNN can pick up);
an image is its class pattern at a random contrast, shifted by a few pixels, plus strong noise.
The noise keeps the task from being solved in a handful of steps, so the curves mean something.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def make_images(num_samples: int, seed: int, num_classes: int = 10, size: int = 16,
                noise: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [N,3,size,size] float32, labels [N] int64)``, identical for identical arguments.

    Uses its own generator: the data must not depend on (or disturb) the global RNG, which the
    checkpoint restores for dropout and augmentation.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g) * 2 - 1
    patterns = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.randint(0, num_classes, (num_samples,), generator=g)
    contrast = 0.5 + torch.rand(num_samples, 1, 1, 1, generator=g)
    images = patterns[labels] * contrast
    shifts = torch.randint(-2, 3, (num_samples, 2), generator=g)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        images[i] = torch.roll(images[i], shifts=(dy, dx), dims=(1, 2))
    images += noise * torch.randn(images.shape, generator=g)
    return images.contiguous(), labels


def split(images: torch.Tensor, labels: torch.Tensor, val_fraction: float):
    """The first ``1 - val_fraction`` for training, the rest held out (the order is random
    already)."""
    n_val = max(1, int(len(labels) * val_fraction))
    return (images[:-n_val], labels[:-n_val]), (images[-n_val:], labels[-n_val:])
