"""A small HAM10000 look-alike, written in exactly the real layout.

``HAM10000_metadata.csv`` with all seven columns and JPEG images split over
``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/``, so ``--synthetic`` runs through the
loader, the checks and the lesion split that read the real data set.

Each class is a blob of its own colour and texture on a skin-toned background; a lesion is one
draw of that blob (size, place, tint), and each of its 1-4 images is the lesion again with a
little shift and noise, as dermoscopy images of one lesion are. Class sizes follow the real
proportions (nv about two thirds) with a floor of lesions per class, so the split has every class
on both sides.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from trainers.ham10000.data import CLASSES, IMAGE_DIRS, METADATA

MARKER = "synthetic.json"
# Images per class in the real HAM10000 (10015 in all).
REAL_COUNTS = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142,
               "df": 115}
MIN_LESIONS = 4
SITES = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face")


def lesions_per_class(total: int) -> dict[str, int]:
    """Lesion counts in the real proportions, at least ``MIN_LESIONS`` each."""
    n = sum(REAL_COUNTS.values())
    return {c: max(MIN_LESIONS, round(total * REAL_COUNTS[c] / n)) for c in CLASSES}


def _render(k: int, lesion: dict, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy = lesion["cy"] * h + rng.normal(0, 0.03) * h
    cx = lesion["cx"] * w + rng.normal(0, 0.03) * w
    r = lesion["r"] * min(w, h)
    d = np.sqrt(((yy - cy) / (r * lesion["aspect"])) ** 2 + ((xx - cx) / r) ** 2)
    mask = np.clip(1.5 - d, 0, 1)[..., None]  # soft edge
    hue = np.array(lesion["colour"], dtype=np.float32)
    # Class texture: stripes of a class-specific frequency and angle inside the blob.
    angle = k * np.pi / len(CLASSES)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (0.25 + 0.12 * k))
    blob = hue * (0.75 + 0.25 * stripes[..., None])
    skin = np.array(lesion["skin"], dtype=np.float32)
    img = skin * (1 - mask) + blob * mask
    img = img + rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_synthetic(root: Path, *, lesions: int = 60, width: int = 64, seed: int = 0) -> Path:
    """Write the data set under ``root`` unless the same one is there (``synthetic.json``
    records the parameters). Built in a temporary folder and moved into place: a run killed while
    writing leaves nothing a later run takes for complete. Returns ``root``."""
    root = Path(root)
    params = {"lesions": lesions, "width": width, "seed": seed}
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == params:
        return root
    rng = np.random.default_rng(seed)
    w, h = width, max(8, width * 3 // 4)  # the real images are 600x450
    base = {c: rng.uniform(40, 200, 3) for c in CLASSES}
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    parts = [tmp / d for d in IMAGE_DIRS[:2]]
    for p in parts:
        p.mkdir(parents=True)
    rows, n = [], 0
    for k, c in enumerate(CLASSES):
        for _ in range(lesions_per_class(lesions)[c]):
            lesion_id = f"HAM_{len({r[0] for r in rows}):07d}"
            lesion = {"cy": rng.uniform(0.35, 0.65), "cx": rng.uniform(0.35, 0.65),
                      "r": rng.uniform(0.18, 0.3), "aspect": rng.uniform(0.7, 1.3),
                      "colour": np.clip(base[c] + rng.normal(0, 12, 3), 0, 255),
                      "skin": rng.uniform(170, 230, 3) * np.array([1.0, 0.85, 0.75])}
            for _ in range(int(rng.integers(1, 5))):
                image_id = f"ISIC_{n:07d}"
                img = _render(k, lesion, rng, w, h)
                Image.fromarray(img).save(parts[n % 2] / f"{image_id}.jpg", quality=92)
                rows.append((lesion_id, image_id, c, "histo", f"{rng.integers(20, 85)}.0",
                             ("male", "female")[int(rng.integers(2))],
                             SITES[int(rng.integers(len(SITES)))]))
                n += 1
    with open(tmp / METADATA, "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
        wr.writerows(rows)
    (tmp / MARKER).write_text(json.dumps(params) + "\n")
    marker.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    for name in (*IMAGE_DIRS[:2], METADATA):
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp / name, target)
    os.replace(tmp / MARKER, marker)  # last: the data set is complete once this exists
    shutil.rmtree(tmp, ignore_errors=True)
    return root
