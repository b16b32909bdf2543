"""HAM10000 as published: the metadata CSV, the images, a lesion-grouped split, and a loader
whose order and augmentation resume exactly.

Layout under ``--data-dir``: ``HAM10000_metadata.csv`` (lesion_id, image_id, dx, dx_type, age,
sex, localization) and ``<image_id>.jpg`` in ``HAM10000_images_part_1/``,
``HAM10000_images_part_2/`` (either or both), or directly in the folder.

The split is by lesion: HAM10000 holds several images of most lesions, and an image split puts
the same lesion on both sides (inflating validation accuracy). Every problem with the data is a
``DataError`` whose one-line message names the file, and the row or column.
"""

from __future__ import annotations

import csv
import random
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from trainers.common import ResumableSampler
from trainers.common import loading
from trainers.common.loading import IMAGENET_MEAN, IMAGENET_STD

METADATA = "HAM10000_metadata.csv"
IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2", ".")
# Melanoma first: it is the class whose sensitivity the field reports first.
CLASSES = ("mel", "nv", "bkl", "bcc", "akiec", "vasc", "df")
CLASS_NAMES = {"mel": "melanoma", "nv": "melanocytic nevus", "bkl": "benign keratosis",
               "bcc": "basal cell carcinoma", "akiec": "actinic keratosis / Bowen's",
               "vasc": "vascular lesion", "df": "dermatofibroma"}
REQUIRED = ("lesion_id", "image_id", "dx")
SPLIT_NAME = "split.csv"


class DataError(ValueError):
    """The data set is not usable as it is; the message is one line naming the file."""


@dataclass(frozen=True)
class Record:
    image_id: str
    lesion_id: str
    dx: str
    path: Path

    @property
    def label(self) -> int:
        return CLASSES.index(self.dx)


def _image_index(root: Path) -> dict[str, Path]:
    """``image_id -> path`` of every ``*.jpg`` in the image folders (part 1 wins over part 2)."""
    found: dict[str, Path] = {}
    for sub in IMAGE_DIRS:
        folder = root / sub
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file():
                    found.setdefault(p.stem, p)
    return found


def read_metadata(root: Path) -> list[Record]:
    """The records of ``root/HAM10000_metadata.csv``, each with its image file, checked: the
    needed columns, a known dx, an image file that exists and opens as an image."""
    root = Path(root)
    csv_path = root / METADATA
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: not found (expected the HAM10000 metadata CSV in {root})")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames
        if not columns:
            raise DataError(f"{csv_path}: empty file (no header row)")
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise DataError(f"{csv_path}: no column {missing[0]!r} (columns: {', '.join(columns)})")
        rows = list(reader)
    if not rows:
        raise DataError(f"{csv_path}: no data rows under the header")
    images = _image_index(root)
    records, seen = [], set()
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{csv_path} row {line}"
        values = {c: (row.get(c) or "").strip() for c in REQUIRED}
        for c in REQUIRED:
            if not values[c]:
                raise DataError(f"{where}: empty {c!r}")
        if values["dx"] not in CLASSES:
            raise DataError(f"{where}: unknown dx {values['dx']!r} (expected one of "
                            f"{', '.join(CLASSES)})")
        if values["image_id"] in seen:
            raise DataError(f"{where}: image_id {values['image_id']!r} listed twice")
        seen.add(values["image_id"])
        path = images.get(values["image_id"])
        if path is None:
            raise DataError(f"{where}: no image file {values['image_id']}.jpg in "
                            f"{' or '.join(str(root / d) for d in IMAGE_DIRS)}")
        check_image(path, where)
        records.append(Record(values["image_id"], values["lesion_id"], values["dx"], path))
    return records


def check_image(path: Path, where: str = "") -> None:
    """Raise ``DataError`` unless ``path`` opens as an image (reads the header only: cheap)."""
    try:
        with Image.open(path) as img:
            img.size  # noqa: B018 - parsing the header is the check
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})"
                        + (f" [{where}]" if where else "")) from None


# --- the split --------------------------------------------------------------------------------

def lesion_split(records: Sequence[Record], val_fraction: float, seed: int) -> list[str]:
    """``"train"`` or ``"val"`` per record: stratified by dx, grouped by lesion_id, seeded.

    scikit-learn's ``StratifiedGroupKFold`` (``round(1/val_fraction)`` folds, the first is val)
    does the stratified grouping. It cannot promise every class on both sides, so afterwards a
    class with at least two lesions that one side lacks gets the smallest lesion of that class
    from the other side. A lesion's class is its most frequent dx.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    folds = max(2, round(1 / val_fraction))
    labels = [r.label for r in records]
    groups = [r.lesion_id for r in records]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    try:
        with warnings.catch_warnings():  # "least populated class has fewer members than
            warnings.simplefilter("ignore", UserWarning)  # folds": handled below
            _, val_idx = next(splitter.split(records, labels, groups))
    except ValueError as e:  # fewer lesions than folds
        raise DataError(f"cannot split {len(set(groups))} lesions into {folds} folds: {e}") from e
    val_lesions = {groups[i] for i in val_idx}
    lesion_images: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        lesion_images[r.lesion_id].append(i)
    lesion_class = {les: Counter(labels[i] for i in idx).most_common(1)[0][0]
                    for les, idx in lesion_images.items()}
    for c in range(len(CLASSES)):
        lesions = sorted((len(lesion_images[les]), les) for les, k in lesion_class.items()
                         if k == c)
        if len(lesions) < 2:
            continue
        in_val = [x for x in lesions if x[1] in val_lesions]
        in_train = [x for x in lesions if x[1] not in val_lesions]
        if not in_val:
            val_lesions.add(in_train[0][1])
        elif not in_train:
            val_lesions.discard(in_val[0][1])
    return ["val" if r.lesion_id in val_lesions else "train" for r in records]


def write_split(path: Path, records: Sequence[Record], split: Sequence[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image_id", "lesion_id", "dx", "split"])
        for r, s in zip(records, split):
            w.writerow([r.image_id, r.lesion_id, r.dx, s])


# --- images and augmentation ------------------------------------------------------------------

def load_rgb(path: Path, size: int) -> Image.Image:
    """The image decoded at (about) the size it will be used at: JPEG ``draft`` mode decodes a
    600x450 image at 1/2, 1/4 or 1/8 scale directly, far cheaper for small training sizes."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))
            return img.convert("RGB").resize((size, size), Image.BILINEAR)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


def _normalize(img: Image.Image) -> torch.Tensor:
    return TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)


class TrainTransform:
    """Flips, a rotation and a colour jitter drawn from a per-sample seed (dermoscopy has no
    up or left, so every orientation is a real one)."""

    def __init__(self, rotation: float = 180.0, jitter: float = 0.2, hue: float = 0.05):
        self.rotation, self.jitter, self.hue = rotation, jitter, hue

    def __call__(self, img: Image.Image, seed: int) -> torch.Tensor:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            img = TF.hflip(img)
        if rng.random() < 0.5:
            img = TF.vflip(img)
        angle = rng.uniform(-self.rotation, self.rotation)
        img = TF.rotate(img, angle, InterpolationMode.BILINEAR)
        j = self.jitter
        img = TF.adjust_brightness(img, rng.uniform(1 - j, 1 + j))
        img = TF.adjust_contrast(img, rng.uniform(1 - j, 1 + j))
        img = TF.adjust_saturation(img, rng.uniform(1 - j, 1 + j))
        img = TF.adjust_hue(img, rng.uniform(-self.hue, self.hue))
        return _normalize(img)


def val_transform(img: Image.Image, seed: int = 0) -> torch.Tensor:
    return _normalize(img)


class LesionImages(Dataset):
    """Records as ``(image, label)``; items are asked for as ``(index, augmentation seed)``."""

    def __init__(self, records: Sequence[Record], size: int, transform):
        self.records, self.size, self.transform = list(records), size, transform
        self.targets = [r.label for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int] | int) -> tuple[torch.Tensor, int]:
        index, seed = item if isinstance(item, tuple) else (item, 0)
        r = self.records[index]
        return self.transform(load_rgb(r.path, self.size), seed), r.label


class ArchSampler(ResumableSampler):
    """The order of an epoch depends on the epoch *within* the architecture, so every
    architecture sees the same batches, augmented the same way (a fair comparison).

    With ``weights`` (one per sample) an epoch is ``num_samples`` draws with replacement in
    proportion to them: class-balanced sampling, still a pure function of (seed, epoch).
    """

    def __init__(self, num_samples: int, seed: int, epochs_per_arch: int,
                 weights: torch.Tensor | None = None):
        super().__init__(num_samples, seed)
        self.epochs_per_arch, self.weights = int(epochs_per_arch), weights

    @property
    def local_epoch(self) -> int:
        return self.epoch % self.epochs_per_arch

    def order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + self.local_epoch)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.num_samples, replacement=True,
                                     generator=g)
        return torch.randperm(self.num_samples, generator=g)


class EpochBatches(loading.EpochBatches):
    """The shared batch sampler (under torchrun, this rank's share of each step), augmented by
    the epoch *within* the architecture, as the order is."""

    sampler: ArchSampler

    def augmentation_epoch(self) -> int:
        return self.sampler.local_epoch


def class_counts(records: Sequence[Record]) -> list[int]:
    counts = Counter(r.label for r in records)
    return [counts.get(c, 0) for c in range(len(CLASSES))]


def balance_weights(records: Sequence[Record]) -> torch.Tensor:
    """Per-sample weights ``1 / count(class)``: every class drawn equally often."""
    counts = class_counts(records)
    return torch.tensor([1.0 / counts[r.label] for r in records], dtype=torch.float64)


def loss_weights(records: Sequence[Record]) -> torch.Tensor:
    """Per-class cross-entropy weights ``N / (K * count)`` (1 for a balanced set; a class absent
    from training gets 0)."""
    counts = class_counts(records)
    present = sum(1 for c in counts if c)
    n = sum(counts)
    return torch.tensor([n / (present * c) if c else 0.0 for c in counts])
