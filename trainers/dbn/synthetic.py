"""Small generated images for ``--synthetic``, ten kinds of them, written as real CIFAR-10
batches (``trainers.common.cifar.write_batches``) so they go through the real loader.

Class k has its own look: a sky and a ground in two colours of its own, split at a horizon
whose height, softness and brightness vary per image, and one object of its own shape (ellipse,
box or cross, like a plane's fuselage and wings), dark or light, placed, sized and turned at
random, plus a little sensor noise. Within a class the images share a structure that a short
code can hold (the light, the horizon, where the object is, how big, which way it points), which
is what the diffusion over codes has to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainers.common import cifar

SIDE = cifar.SIDE


def _palette(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top colour, bottom colour and object colour of class k (fixed per class)."""
    rng = np.random.default_rng([7919, k])
    top, bottom = rng.uniform(0.2, 0.8, 3), rng.uniform(0.2, 0.8, 3)
    return top, bottom, rng.uniform(0.0, 1.0, 3)


def make_image(rng: np.random.Generator, k: int) -> np.ndarray:
    """One 32 x 32 x 3 uint8 image of class k."""
    top, bottom, colour = _palette(k)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(float) + 0.5
    horizon, soft = rng.uniform(8, 24), rng.uniform(1, 6)
    mix = (1 / (1 + np.exp(-(yy - horizon) / soft)))[..., None]
    img = (top * (1 - mix) + bottom * mix) * rng.uniform(0.6, 1.25)
    if rng.random() < 0.5:  # a dark object or a light one
        colour = colour * 0.3
    else:
        colour = 0.7 + colour * 0.3
    cy, cx = rng.uniform(9, 23, 2)
    r = rng.uniform(6, 12)
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    shape = k % 3
    if shape == 0:  # a cross: fuselage and wings
        mask = ((np.abs(u) <= r) & (np.abs(v) <= r / 5)) | \
               ((np.abs(u + r / 4) <= r / 5) & (np.abs(v) <= 0.8 * r))
    elif shape == 1:  # a box
        mask = (np.abs(u) <= r) & (np.abs(v) <= r / 2)
    else:  # an ellipse
        mask = (u / r) ** 2 + (v / (0.55 * r)) ** 2 <= 1
    img = np.where(mask[..., None], colour, img) + rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_images(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of each of the ten classes, interleaved (labels 0..9, 0..9, ...);
    image i depends only on (seed, i)."""
    n = per_class * len(cifar.CLASSES)
    labels = np.arange(n, dtype=np.int64) % len(cifar.CLASSES)
    images = np.stack([make_image(np.random.default_rng([seed, i]), int(labels[i]))
                       for i in range(n)])
    return images, labels


def write(data_dir: str | Path, train_per_class: int, test_per_class: int,
          seed: int = 0) -> Path:
    """Generate and write the batches unless the same set is already there; returns the
    ``cifar-10-batches-py`` folder."""
    folder = Path(data_dir).expanduser() / cifar.BASE_FOLDER
    stamp = folder / "SYNTHETIC"
    want = f"dbn train={train_per_class} test={test_per_class} seed={seed}\n"
    if stamp.is_file() and stamp.read_text() == want:
        return folder
    train = make_images(train_per_class, seed)
    test = make_images(test_per_class, seed + 1)
    cifar.write_batches(data_dir, train, test)
    stamp.write_text(want)
    return folder
