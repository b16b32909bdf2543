"""A small chest X-ray look-alike whose images decide their reports, in the real CSV layout.

Each study is a scene: which of the six lung regions (right/left x upper/middle/lower zone) hold
an opacity and how large each is, a pleural effusion (side, size), devices (a pacemaker, an
endotracheal tube), the heart's size and degenerative changes of the spine. The frontal view
draws all of it (the patient's right on the image's left, as radiographs are read); most studies
also get a lateral view, which shows heights and the effusion but not sides. The report is a
fixed function of the scene, written by a small grammar, so a model can learn to read it and the
scores mean something. Cases come in IU X-ray-like proportions: about 40% normal, 30% one region,
20% several, 10% complex (effusion or device).

Layout: ``reports.csv`` (study_id, image_path with views joined by ``;``, findings, impression,
split) and PNG images under ``images/``; ``synthetic.json`` marks a complete set.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MARKER = "synthetic.json"
REPORTS = "reports.csv"
SIDES = ("right", "left")
ZONES = ("upper", "middle", "lower")
PROPORTIONS = {"normal": 0.40, "single": 0.30, "multi": 0.20, "complex": 0.10}
LATERAL_SHARE = 0.75


def sample_scene(rng: np.random.Generator, kind: str) -> dict[str, Any]:
    """One study's content for a case of ``kind`` (normal, single, multi, complex)."""
    n_opacities = {"normal": 0, "single": 1, "multi": int(rng.integers(2, 4)),
                   "complex": int(rng.integers(0, 3))}[kind]
    regions = rng.choice(len(SIDES) * len(ZONES), size=n_opacities, replace=False)
    scene = {"opacities": sorted((int(r) // 3, int(r) % 3, str(rng.choice(["small", "large"])))
                                 for r in regions),
             "effusion": None, "pacemaker": False, "tube": False,
             "big_heart": bool(rng.random() < 0.3), "spine": bool(rng.random() < 0.25)}
    if kind == "complex":
        what = rng.choice(["effusion", "pacemaker", "tube", "effusion+pacemaker"])
        if "effusion" in what:
            scene["effusion"] = (int(rng.integers(2)), str(rng.choice(["small", "moderate"])))
        scene["pacemaker"] = "pacemaker" in what
        scene["tube"] = what == "tube"
    return scene


def write_report(scene: dict[str, Any]) -> tuple[str, str]:
    """``(findings, impression)`` of a scene, by the grammar."""
    s = []
    s.append("The heart is at the upper limits of normal size." if scene["big_heart"]
             else "The heart size is normal.")
    if scene["pacemaker"]:
        s.append("A left-sided cardiac pacemaker is present.")
    if scene["tube"]:
        s.append("An endotracheal tube is in place.")
    for side, zone, size in scene["opacities"]:
        s.append(f"There is a {size} opacity in the {SIDES[side]} {ZONES[zone]} lung zone.")
    if not scene["opacities"]:
        s.append("The lungs are clear.")
    if scene["effusion"] is not None:
        side, size = scene["effusion"]
        s.append(f"There is a {size} {SIDES[side]} pleural effusion.")
        s.append("There is no pneumothorax.")
    else:
        s.append("There is no pleural effusion or pneumothorax.")
    if scene["spine"]:
        s.append("Degenerative changes of the thoracic spine.")
    n = len(scene["opacities"])
    if scene["effusion"] is not None or scene["pacemaker"] or scene["tube"]:
        impression = "Findings as described above."
    elif n:
        impression = "Focal opacity." if n == 1 else "Multifocal opacities."
    else:
        impression = "No acute cardiopulmonary abnormality."
    return " ".join(s), impression


def _blob(yy, xx, cy, cx, sigma):
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))


def render_frontal(scene: dict[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 0.55 + 0.1 * yy + rng.normal(0, 0.01)
    lung_x = (0.31, 0.69)  # the patient's right lung is on the image's left
    top, height, half_w = 0.2, 0.6, 0.15
    for cx in lung_x:
        inside = ((xx - cx) / half_w) ** 2 + ((yy - 0.5) / (height / 2)) ** 2 < 1
        img = np.where(inside, img - 0.33, img)
    img += 0.25 * np.exp(-((xx - 0.5) / 0.03) ** 2)  # spine
    heart_w = 0.17 if scene["big_heart"] else 0.09
    img += 0.45 * np.clip(1 - (((xx - 0.54) / heart_w) ** 2 + ((yy - 0.66) / 0.11) ** 2), 0, 1)
    if scene["spine"]:
        for y in np.arange(0.25, 0.85, 0.12):
            img += 0.5 * _blob(yy, xx, y + rng.normal(0, 0.01), 0.5, 0.02)
    for side, zone, size_ in scene["opacities"]:
        cy = top + (zone + 0.5) * height / 3 + rng.normal(0, 0.02)
        cx = lung_x[side] + rng.normal(0, 0.025)
        img += 0.6 * _blob(yy, xx, cy, cx, 0.03 if size_ == "small" else 0.06)
    if scene["effusion"] is not None:
        side, size_ = scene["effusion"]
        level = 0.8 - (0.12 if size_ == "small" else 0.24)
        cx = lung_x[side]
        mask = (yy > level + 0.03 * ((xx - cx) / half_w) ** 2) & (np.abs(xx - cx) < half_w) & \
               (yy < 0.8)
        img = np.where(mask, img + 0.3, img)
    if scene["pacemaker"]:  # over the patient's left upper chest
        img = np.where((np.abs(xx - 0.82) < 0.05) & (np.abs(yy - 0.17) < 0.035), 0.95, img)
    if scene["tube"]:
        img = np.where((np.abs(xx - 0.5) < 0.012) & (yy > 0.02) & (yy < 0.33), 0.95, img)
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def render_lateral(scene: dict[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 0.55 + 0.1 * yy + rng.normal(0, 0.01)
    inside = ((xx - 0.5) / 0.3) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
    img = np.where(inside, img - 0.3, img)
    img += 0.25 * np.clip(1 - (((xx - 0.35) / 0.12) ** 2 + ((yy - 0.65) / 0.12) ** 2), 0, 1)
    for _side, zone, size_ in scene["opacities"]:
        cy = 0.2 + (zone + 0.5) * 0.2 + rng.normal(0, 0.02)
        img += 0.35 * _blob(yy, xx, cy, 0.55 + rng.normal(0, 0.05), 0.025 if size_ == "small"
                            else 0.05)
    if scene["effusion"] is not None:
        level = 0.8 - (0.1 if scene["effusion"][1] == "small" else 0.2)
        img = np.where((yy > level) & (yy < 0.8) & (xx > 0.55) & (xx < 0.8), img + 0.3, img)
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def case_kinds(studies: int, rng: np.random.Generator) -> list[str]:
    """``studies`` case kinds in PROPORTIONS (rounded; every kind at least once), shuffled."""
    counts = {k: max(1, round(studies * p)) for k, p in PROPORTIONS.items()}
    counts["normal"] += studies - sum(counts.values())
    kinds = [k for k, n in counts.items() for _ in range(n)]
    rng.shuffle(kinds)
    return kinds


def write_synthetic(root: Path, *, studies: int = 400, size: int = 64, val_fraction: float = 0.2,
                    seed: int = 0) -> Path:
    """Write the data set under ``root`` unless the same one is there (``synthetic.json``
    records the parameters). Built in a temporary folder and moved into place, so a run killed
    while writing leaves nothing a later run takes for complete. Returns ``root``."""
    root = Path(root)
    params = {"studies": studies, "size": size, "val_fraction": val_fraction, "seed": seed}
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == params:
        return root
    rng = np.random.default_rng(seed)
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    rows = []
    kinds = case_kinds(studies, rng)
    n_val = max(1, round(studies * val_fraction))
    for i, kind in enumerate(kinds):
        scene = sample_scene(rng, kind)
        study = f"CXR{i:05d}"
        paths = [f"images/{study}_frontal.png"]
        Image.fromarray(render_frontal(scene, size, rng)).save(tmp / paths[0])
        if rng.random() < LATERAL_SHARE:
            paths.append(f"images/{study}_lateral.png")
            Image.fromarray(render_lateral(scene, size, rng)).save(tmp / paths[1])
        findings, impression = write_report(scene)
        rows.append([study, ";".join(paths), findings, impression,
                     "val" if i < n_val else "train"])
    with open(tmp / REPORTS, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["study_id", "image_path", "findings", "impression", "split"])
        w.writerows(rows)
    marker.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("images", REPORTS):
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp / name, target)
    (tmp / MARKER).write_text(json.dumps(params) + "\n")
    os.replace(tmp / MARKER, marker)  # last: the data set is complete once this exists
    shutil.rmtree(tmp, ignore_errors=True)
    return root
