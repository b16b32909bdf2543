"""Small natural-looking images for ``--synthetic``, written as real CIFAR-10 batches.

What a denoiser must get right in natural images is here in miniature: smooth shading (a
low-frequency colour field), sharp edges (discs, boxes and triangles drawn at twice the size and
box-filtered down, so edges are anti-aliased like a camera's), and textures (gratings and checks
of random frequency and orientation inside some of the shapes). The label of an image is the kind
of its largest shape; the denoiser does not use it, but the files must carry one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainers.common import cifar

SIDE = cifar.SIDE
_UP = 2  # drawn at twice the size, then averaged down: anti-aliased edges


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A size x size x 3 colour field interpolated bilinearly from a cells x cells grid."""
    grid = rng.uniform(0, 1, (cells + 1, cells + 1, 3))
    t = np.linspace(0, cells, size)
    i0 = np.minimum(t.astype(int), cells - 1)
    f = (t - i0)[:, None]
    rows = grid[i0] * (1 - f[..., None]) + grid[i0 + 1] * f[..., None]      # size x cells+1 x 3
    cols = rows[:, i0] * (1 - f.T[..., None]) + rows[:, i0 + 1] * f.T[..., None]
    return cols


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A grating or a check pattern in [0, 1]."""
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(3.0, 9.0) * _UP
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / period
    if rng.random() < 0.6:
        return 0.5 + 0.5 * np.sin(2 * np.pi * u)
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / period
    return ((np.floor(u) + np.floor(v)) % 2).astype(float)


def _mask(rng: np.random.Generator, kind: int, yy: np.ndarray, xx: np.ndarray, n: int):
    cy, cx = rng.uniform(0.15, 0.85, 2) * n
    r = rng.uniform(0.12, 0.35) * n
    if kind == 0:  # disc or ellipse
        a = rng.uniform(0.6, 1.4)
        return ((yy - cy) / (r * a)) ** 2 + ((xx - cx) / (r / a)) ** 2 <= 1
    if kind == 1:  # rotated box
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        return (np.abs(u) <= r) & (np.abs(v) <= r * rng.uniform(0.4, 1.0))
    # triangle: inside three half-planes
    angles = np.sort(rng.uniform(0, 2 * np.pi, 3))
    px, py = cx + r * 1.3 * np.cos(angles), cy + r * 1.3 * np.sin(angles)
    inside = np.ones_like(xx, dtype=bool)
    for i in range(3):
        j = (i + 1) % 3
        cross = (px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i])
        inside &= cross >= 0
    return inside


def make_image(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One 32 x 32 x 3 uint8 image and its label."""
    n = SIDE * _UP
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    img = _smooth_field(rng, n, int(rng.integers(1, 4))) * rng.uniform(0.5, 1.0)
    largest, label = 0, 0
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 3))
        m = _mask(rng, kind, yy, xx, n)
        colour = rng.uniform(0, 1, 3)
        fill = np.broadcast_to(colour, img.shape).copy()
        textured = rng.random() < 0.45
        if textured:
            tex = _texture(rng, yy, xx)[..., None]
            other = rng.uniform(0, 1, 3)
            fill = fill * tex + other * (1 - tex)
        else:  # shading across the shape
            fill = fill * (0.75 + 0.25 * _smooth_field(rng, n, 1)[..., :1])
        img = np.where(m[..., None], fill, img)
        if m.sum() > largest:
            largest, label = int(m.sum()), kind * 2 + int(textured)
    img = img.reshape(SIDE, _UP, SIDE, _UP, 3).mean(axis=(1, 3))  # box filter down
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), label


def make_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images; image i depends only on (seed, i)."""
    images = np.empty((count, SIDE, SIDE, 3), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    for i in range(count):
        images[i], labels[i] = make_image(np.random.default_rng([seed, i]))
    return images, labels


def write(data_dir: str | Path, train: int, test: int, seed: int = 0) -> Path:
    """Generate and write the batches unless the same set is already there; returns the
    ``cifar-10-batches-py`` folder."""
    folder = Path(data_dir).expanduser() / cifar.BASE_FOLDER
    stamp = folder / "SYNTHETIC"
    want = f"train={train} test={test} seed={seed}\n"
    if stamp.is_file() and stamp.read_text() == want:
        return folder
    x, y = make_images(train + test, seed)
    cifar.write_batches(data_dir, (x[:train], y[:train]), (x[train:], y[train:]))
    stamp.write_text(want)
    return folder
