"""A small class-structured data set written to disk in the ImageNet ``ImageFolder`` layout.

Nothing can be downloaded here, and a test cannot wait for ImageNet; so ``--synthetic`` writes
``train/<wnid>/*.png`` and ``val/<wnid>/*.png`` and the trainer then reads them through exactly
the code that reads ImageNet (file decoding, workers, augmentation, the val split).

Each class is a fixed random colour pattern (a coarse grid upsampled, so it has spatial structure
a CNN can learn); an image is its pattern at a random contrast and offset, plus noise. Some classes
share most of their pattern, so samples differ in difficulty and the selection has something to
choose. Val images are drawn from the same classes with a different stream of noise.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MARKER = "synthetic.json"


def wnid(c: int) -> str:
    return f"n{c:08d}"


def _patterns(num_classes: int, size: int, g: torch.Generator) -> torch.Tensor:
    base = torch.rand(num_classes, 3, 4, 4, generator=g)
    # Pairs of classes share 60% of their pattern: the hard cases.
    partner = torch.roll(base, 1, dims=0)
    mix = torch.where(torch.arange(num_classes) % 2 == 1, 0.6, 0.0)[:, None, None, None]
    coarse = (1 - mix) * base + mix * partner
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _images(patterns: torch.Tensor, labels: torch.Tensor, noise: float,
            g: torch.Generator) -> np.ndarray:
    n, size = len(labels), patterns.shape[-1]
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
    x = (patterns[labels] - 0.5) * contrast + 0.5
    shifts = torch.randint(-size // 8, size // 8 + 1, (n, 2), generator=g)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        x[i] = torch.roll(x[i], shifts=(dy, dx), dims=(1, 2))
    x = x + noise * torch.randn(x.shape, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_synthetic(root: Path, *, num_classes: int = 10, train_per_class: int = 64,
                    val_per_class: int = 16, size: int = 32, noise: float = 0.25,
                    seed: int = 0, fmt: str = "png") -> Path:
    """Write the data set under ``root`` (``train/`` and ``val/``) unless the same one is there.

    Built in a temporary folder and renamed into place, so a run killed while writing leaves
    nothing that a later run would take for complete. Returns ``root``.
    """
    root = Path(root)
    params = {"num_classes": num_classes, "train_per_class": train_per_class,
              "val_per_class": val_per_class, "size": size, "noise": noise, "seed": seed,
              "fmt": fmt}
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == params:
        return root
    if fmt not in ("png", "jpeg"):
        raise ValueError(f"fmt must be 'png' or 'jpeg', got {fmt!r}")
    g = torch.Generator().manual_seed(seed)
    patterns = _patterns(num_classes, size, g)
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        pixels = _images(patterns, labels, noise, g)
        for i, (label, img) in enumerate(zip(labels.tolist(), pixels)):
            folder = tmp / split / wnid(label)
            folder.mkdir(parents=True, exist_ok=True)
            ext = "png" if fmt == "png" else "JPEG"
            Image.fromarray(img).save(folder / f"{wnid(label)}_{i:06d}.{ext}",
                                      **({"quality": 95} if fmt == "jpeg" else {}))
    (tmp / MARKER).write_text(json.dumps(params, indent=1) + "\n")
    marker.unlink(missing_ok=True)
    for split in ("train", "val"):
        shutil.rmtree(root / split, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        os.replace(tmp / split, root / split)
    os.replace(tmp / MARKER, marker)  # last: the data set is complete once this exists
    shutil.rmtree(tmp, ignore_errors=True)
    return root
