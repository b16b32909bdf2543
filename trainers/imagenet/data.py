"""ImageNet in ``ImageFolder`` layout, read by worker processes in an order that can resume.

Layout: ``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG`` (the Kaggle layout's flat
val folder is reorganised by ``trainers.imagenet.prepare_kaggle``). Validation reads the real val
split with the val transform, never a slice of train.

Exact resume with workers needs two things the usual pipeline does not give:

- **Order.** Workers prefetch, so the sampler's own position runs ahead of what was trained on.
  ``EpochBatches`` therefore reads the ``ResumableSampler``'s order from its position without
  moving it; the training loop advances ``sampler.position`` as it *consumes* batches, so at a
  step boundary the position is exactly what the checkpoint must hold.
- **Augmentation.** A worker's RNG depends on which batches that worker happened to load since it
  started. Here each sample's crop and flip come from ``random.Random(sample_seed(seed, epoch,
  index))``: the same sample in the same epoch is augmented the same way whatever the number of
  workers, and whether or not the run was interrupted.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import folder
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

# Shared with the other trainers (trainers/common/loading.py); still importable from here.
from trainers.common.loading import (IMAGENET_MEAN, IMAGENET_STD, EpochBatches,  # noqa: F401
                                     epoch_plan, make_loader, sample_seed)

CROP_RATIO = (3 / 4, 4 / 3)
VAL_CROP_FRACTION = 0.875  # resize to size/0.875 (256 for 224), then centre-crop


def crop_box(rng: random.Random, width: int, height: int,
             scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a RandomResizedCrop, drawn from ``rng`` (torchvision's recipe:
    ten tries at a random area and log-uniform aspect ratio, then a centre crop)."""
    area = width * height
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif in_ratio > CROP_RATIO[1]:
        h, w = height, int(round(height * CROP_RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _to_normalized_tensor(img: Image.Image) -> torch.Tensor:
    return TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)


class TrainTransform:
    """RandomResizedCrop + horizontal flip + normalise, driven by a per-sample seed."""

    def __init__(self, size: int, min_scale: float = 0.08):
        self.size, self.scale = size, (min_scale, 1.0)

    def __call__(self, img: Image.Image, seed: int) -> torch.Tensor:
        rng = random.Random(seed)
        top, left, h, w = crop_box(rng, img.width, img.height, self.scale)
        img = TF.resized_crop(img, top, left, h, w, [self.size, self.size],
                              InterpolationMode.BILINEAR, antialias=True)
        if rng.random() < 0.5:
            img = TF.hflip(img)
        return _to_normalized_tensor(img)


class ValTransform:
    """Resize the short side to ``size / 0.875``, centre-crop ``size``, normalise."""

    def __init__(self, size: int):
        self.size, self.resize = size, int(round(size / VAL_CROP_FRACTION))

    def __call__(self, img: Image.Image, seed: int = 0) -> torch.Tensor:
        img = TF.resize(img, self.resize, InterpolationMode.BILINEAR, antialias=True)
        return _to_normalized_tensor(TF.center_crop(img, [self.size, self.size]))


class SeededImageFolder(Dataset):
    """An ``ImageFolder`` whose items are asked for as ``(index, seed)`` pairs.

    ``classes`` fixes the label of each class folder (pass the train split's to the val split, so
    a class missing from val cannot shift every label after it).
    """

    def __init__(self, root: Path, transform, classes: Sequence[str] | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"no image folder at {root} (expected <root>/<wnid>/*.JPEG)")
        given = classes is not None  # a val split may lack classes, or have empty folders
        if classes is None:
            classes, _ = folder.find_classes(str(root))
        self.classes = list(classes)
        class_to_idx = {c: i for i, c in enumerate(self.classes)}
        present = {p.name for p in root.iterdir() if p.is_dir()}
        unknown = sorted(present - set(class_to_idx))
        if unknown:
            raise ValueError(f"{root}: class folders not in the training set: {unknown[:5]}")
        self.samples = folder.make_dataset(
            str(root), {c: i for c, i in class_to_idx.items() if c in present},
            extensions=folder.IMG_EXTENSIONS, allow_empty=given)
        self.targets = [t for _, t in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int] | int) -> tuple[torch.Tensor, int]:
        index, seed = item if isinstance(item, tuple) else (item, 0)
        path, target = self.samples[index]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.transform(img, seed), target


def check_layout(root: Path) -> tuple[Path, Path]:
    """``(train, val)`` folders of ``root``, with a message that says what is missing."""
    root = Path(root)
    train, val = root / "train", root / "val"
    missing = [p.name + "/" for p in (train, val) if not p.is_dir()]
    if missing:
        hint = ""
        if (root / "ILSVRC").is_dir() or any(root.glob("LOC_val_solution.csv")):
            hint = (" (this looks like the Kaggle layout: run python -m "
                    "trainers.imagenet.prepare_kaggle first)")
        raise FileNotFoundError(f"{root}: no {' or '.join(missing)} folder{hint}")
    return train, val

