"""Reorganise the Kaggle ImageNet layout into the ``ImageFolder`` layout the trainer reads.

The Kaggle download ("ImageNet Object Localization Challenge") looks like::

    <src>/LOC_val_solution.csv                 ImageId,PredictionString ("n01751748 77 2 ...")
    <src>/ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG
    <src>/ILSVRC/Data/CLS-LOC/val/*.JPEG       flat: the labels are only in the CSV

and the trainer wants ``<dest>/train/<wnid>/`` and ``<dest>/val/<wnid>/``. By default nothing is
copied: ``train`` becomes one symlink and each val image a symlink into its class folder, so a
read-only bucket mount works as the source. Running it again is safe (what exists is kept).

    python -m trainers.imagenet.prepare_kaggle /data/kaggle /tmp/imagenet
    python -m trainers.imagenet.prepare_kaggle SRC DEST --val-csv my_labels.csv --mode copy
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

TRAIN_SUBDIR = Path("ILSVRC/Data/CLS-LOC/train")
VAL_SUBDIR = Path("ILSVRC/Data/CLS-LOC/val")
VAL_CSV = "LOC_val_solution.csv"
MODES = ("symlink", "copy", "move")
# Column names accepted for the image and for its label (Kaggle's first, then common ones).
IMAGE_COLUMNS = ("ImageId", "image_id", "image", "filename", "file", "id")
LABEL_COLUMNS = ("PredictionString", "label", "wnid", "class", "synset")


def read_val_labels(csv_path: Path) -> dict[str, str]:
    """``{image stem: wnid}`` from a CSV with a header. Kaggle's ``PredictionString`` holds
    ``wnid x1 y1 x2 y2`` boxes; the first token is the label (every box names the same class)."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        image_col = next((c for c in IMAGE_COLUMNS if c in fields), None)
        label_col = next((c for c in LABEL_COLUMNS if c in fields), None)
        if image_col is None or label_col is None:
            raise ValueError(f"{csv_path}: expected an image column ({', '.join(IMAGE_COLUMNS)}) "
                             f"and a label column ({', '.join(LABEL_COLUMNS)}), found {fields}")
        labels = {}
        for row in reader:
            tokens = (row[label_col] or "").split()
            if not tokens:
                raise ValueError(f"{csv_path} line {reader.line_num}: no label for "
                                 f"{row[image_col]!r}")
            labels[Path(row[image_col]).stem] = tokens[0]
    return labels


def _place(src: Path, dest: Path, mode: str) -> bool:
    """Put ``src`` at ``dest``; False when ``dest`` is already there."""
    if dest.exists() or dest.is_symlink():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        os.symlink(src.resolve(), dest, target_is_directory=src.is_dir())
    elif mode == "copy":
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)
    else:
        shutil.move(str(src), str(dest))
    return True


def prepare_kaggle(src: Path, dest: Path, *, mode: str = "symlink", train_dir: Path | None = None,
                   val_dir: Path | None = None, val_csv: Path | None = None) -> dict[str, int]:
    """Build ``dest/train`` and ``dest/val/<wnid>/`` from the Kaggle layout under ``src``.

    Every val image must have a label and every label must be a training class; the error names
    the first offenders. Val gets a (possibly empty) folder for every training class, so the
    class indices of train and val agree. Returns counts: classes, val images placed, skipped.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    src, dest = Path(src), Path(dest)
    train_dir = Path(train_dir) if train_dir else src / TRAIN_SUBDIR
    val_dir = Path(val_dir) if val_dir else src / VAL_SUBDIR
    val_csv = Path(val_csv) if val_csv else src / VAL_CSV
    for what, p in (("train folder", train_dir), ("val folder", val_dir)):
        if not p.is_dir():
            raise FileNotFoundError(f"no {what} at {p}")
    if not val_csv.is_file():
        raise FileNotFoundError(f"no val labels CSV at {val_csv}")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{train_dir} has no class folders")
    labels = read_val_labels(val_csv)
    images = sorted(p for p in val_dir.iterdir() if p.is_file())
    unlabelled = [p.name for p in images if p.stem not in labels]
    if unlabelled:
        raise ValueError(f"{len(unlabelled)} val images have no label in {val_csv} "
                         f"(e.g. {unlabelled[:3]})")
    known = set(classes)
    strangers = sorted({labels[p.stem] for p in images} - known)
    if strangers:
        raise ValueError(f"val labels that are not training classes: {strangers[:5]}")

    dest.mkdir(parents=True, exist_ok=True)
    _place(train_dir, dest / "train", mode)
    placed = 0
    for c in classes:
        (dest / "val" / c).mkdir(parents=True, exist_ok=True)
    for p in images:
        placed += _place(p, dest / "val" / labels[p.stem] / p.name, mode)
    return {"classes": len(classes), "val_images": len(images), "placed": placed,
            "skipped": len(images) - placed}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainers.imagenet.prepare_kaggle",
                                description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("src", type=Path, help="the Kaggle download's root")
    p.add_argument("dest", type=Path, help="where to build train/ and val/<wnid>/")
    p.add_argument("--mode", choices=MODES, default="symlink",
                   help="symlink (nothing copied; the source may be read-only), copy, or move "
                        "(default: %(default)s)")
    p.add_argument("--train-dir", type=Path, help=f"default: SRC/{TRAIN_SUBDIR}")
    p.add_argument("--val-dir", type=Path, help=f"the flat val folder (default: SRC/{VAL_SUBDIR})")
    p.add_argument("--val-csv", type=Path,
                   help=f"labels of the val images (default: SRC/{VAL_CSV})")
    args = p.parse_args(argv)
    try:
        counts = prepare_kaggle(args.src, args.dest, mode=args.mode, train_dir=args.train_dir,
                                val_dir=args.val_dir, val_csv=args.val_csv)
    except (OSError, ValueError) as e:
        print(f"prepare_kaggle: error: {e}", file=sys.stderr)
        return 1
    print(f"{args.dest}: {counts['classes']} classes, {counts['val_images']} val images "
          f"({counts['placed']} placed, {counts['skipped']} already there). Train with:\n"
          f"  python -m trainers.imagenet --data-dir {args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
