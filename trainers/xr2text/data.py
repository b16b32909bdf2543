"""Studies from a CSV of reports and a folder of images (IU X-ray / MIMIC-CXR style), the
curriculum's stages, and a sampler whose stage follows the epoch.

``reports.csv`` under ``--data-dir``: ``study_id`` (or ``id``), ``image_path`` (one path, or a
study's views joined by ``;``, relative to the data folder), ``findings``, ``impression``, and
optionally ``split`` (train / val / test; without it a seeded share of studies is validation).
Rows whose chosen report is empty are left out (IU X-ray has many); every other problem is a
``DataError`` whose one line names the file and row.
"""

from __future__ import annotations

import csv
import random
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from trainers.common import ResumableSampler
from trainers.common.loading import IMAGENET_MEAN, IMAGENET_STD
from trainers.xr2text.text import CATEGORIES, PAD, Tokenizer, report_category

REPORTS = "reports.csv"
ID_COLUMNS = ("study_id", "id")
FIELDS = ("findings", "impression", "both")
SPLITS = ("train", "val", "test")
STAGES = ("normal", "single", "multi", "all")
CROP_MARGIN = 1.07  # train crops ``size`` out of ``size * 1.07`` (R2Gen: 224 out of 256)


class DataError(ValueError):
    """The data set is not usable as it is; the message is one line naming the file."""


@dataclass(frozen=True)
class Study:
    study_id: str
    images: tuple[Path, ...]
    report: str
    split: str

    @property
    def category(self) -> str:
        return report_category(self.report)


def _report(row: dict[str, str], field: str) -> str:
    if field == "both":
        return " ".join(t for t in ((row.get("findings") or "").strip(),
                                    (row.get("impression") or "").strip()) if t)
    return (row.get(field) or "").strip()


def read_studies(csv_path: Path, root: Path, field: str, val_fraction: float,
                 seed: int) -> tuple[list[Study], int]:
    """The usable studies of ``csv_path`` (images checked: they exist and open) and how many
    rows were left out for an empty report."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: not found (expected a CSV of reports in {root})")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = list(reader)
    if not columns:
        raise DataError(f"{csv_path}: empty file (no header row)")
    id_col = next((c for c in ID_COLUMNS if c in columns), None)
    needed = ["findings", "impression"] if field == "both" else [field]
    missing = [c for c in ["image_path", *needed] if c not in columns] + ([] if id_col else
                                                                           ["study_id"])
    if missing:
        raise DataError(f"{csv_path}: no column {missing[0]!r} (columns: {', '.join(columns)})")
    if not rows:
        raise DataError(f"{csv_path}: no data rows under the header")
    if not any(_report(r, field) for r in rows):
        raise DataError(f"{csv_path}: the {field!r} report is empty in every one of its "
                        f"{len(rows)} rows (another --report-field?)")
    studies, skipped, seen = [], 0, set()
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{csv_path} row {line}"
        sid = (row.get(id_col) or "").strip()
        if not sid:
            raise DataError(f"{where}: empty {id_col!r}")
        if sid in seen:
            raise DataError(f"{where}: {id_col} {sid!r} listed twice")
        seen.add(sid)
        split = (row.get("split") or "").strip().lower()
        if "split" in columns and split not in SPLITS:
            raise DataError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
        report = _report(row, field)
        if not report:
            skipped += 1
            continue
        paths = [p.strip() for p in (row.get("image_path") or "").split(";") if p.strip()]
        if not paths:
            raise DataError(f"{where}: empty 'image_path'")
        images = []
        for p in paths:
            path = root / p
            if not path.is_file():
                raise DataError(f"{where}: image {p!r} not found under {root}")
            check_image(path, where)
            images.append(path)
        studies.append(Study(sid, tuple(images), report, split))
    if "split" not in columns:
        studies = _seeded_split(studies, val_fraction, seed)
    return studies, skipped


def _seeded_split(studies: list[Study], val_fraction: float, seed: int) -> list[Study]:
    ids = sorted(s.study_id for s in studies)
    random.Random(seed).shuffle(ids)
    val = set(ids[:max(1, round(len(ids) * val_fraction))]) if len(ids) > 1 else set()
    return [Study(s.study_id, s.images, s.report, "val" if s.study_id in val else "train")
            for s in studies]


def check_image(path: Path, where: str) -> None:
    """Raise ``DataError`` unless ``path`` opens as an image (the header only: cheap)."""
    try:
        with Image.open(path) as img:
            img.size  # noqa: B018 - parsing the header is the check
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}) [{where}]") from None


def load_split(studies: Sequence[Study], csv_path: Path) -> tuple[list[Study], list[Study]]:
    train = [s for s in studies if s.split == "train"]
    val = [s for s in studies if s.split == "val"]
    if not train:
        raise DataError(f"{csv_path}: no training reports ({len(studies)} studies with a "
                        f"report, none in the train split)")
    if not val:
        raise DataError(f"{csv_path}: no validation reports ({len(train)} training studies, "
                        f"none in the val split)")
    return train, val


# --- images and tokens ------------------------------------------------------------------------

def load_image(path: Path, size: int) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.draft("L", (size, size))
            return img.convert("RGB").resize((size, size), Image.BILINEAR)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__})") from None


class StudyImages(Dataset):
    """Studies as ``(images [views, 3, size, size], token ids [max_len + 2])``; a study with fewer
    views than ``views`` repeats its first, one with more keeps the first ``views``. Items are
    asked for as ``(index, augmentation seed)``; seed 0 (validation) is a centre crop."""

    def __init__(self, studies: Sequence[Study], tokenizer: Tokenizer, *, size: int, views: int,
                 max_len: int, augment: bool):
        self.studies, self.tokenizer = list(studies), tokenizer
        self.size, self.views, self.max_len, self.augment = size, views, max_len, augment
        self.ids = [tokenizer.encode(s.report, max_len) for s in self.studies]

    def __len__(self) -> int:
        return len(self.studies)

    def reference(self, index: int) -> str:
        """The report as it is scored: cleaned, cut at ``max_len``, rare words as ``<unk>``."""
        return self.tokenizer.decode(self.ids[index])

    def _view(self, path: Path, rng: random.Random | None) -> torch.Tensor:
        big = round(self.size * CROP_MARGIN)
        img = load_image(path, big)
        if rng is None:
            top = left = (big - self.size) // 2
        else:
            top, left = rng.randint(0, big - self.size), rng.randint(0, big - self.size)
        img = TF.crop(img, top, left, self.size, self.size)
        return TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)

    def __getitem__(self, item: tuple[int, int] | int) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item if isinstance(item, tuple) else (item, 0)
        study = self.studies[index]
        rng = random.Random(seed) if self.augment and seed else None
        paths = list(study.images[:self.views])
        paths += [paths[0]] * (self.views - len(paths))
        images = torch.stack([self._view(p, rng) for p in paths])
        ids = torch.full((self.max_len + 2,), PAD, dtype=torch.long)
        ids[:len(self.ids[index])] = torch.tensor(self.ids[index])
        return images, ids


def most_common_report(dataset: StudyImages) -> str:
    """The training report that occurs most often, as scored (the baseline's one output); on a
    tie the one met first."""
    texts = [dataset.reference(i) for i in range(len(dataset))]
    return Counter(texts).most_common(1)[0][0]


# --- the curriculum ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    name: str
    start: int  # first epoch (0-based)
    end: int  # one past the last epoch
    indices: tuple[int, ...]  # training studies this stage trains on


def stage_members(categories: Sequence[str]) -> dict[str, list[int]]:
    """Each stage's training studies, filtered afresh from the whole training set: the normal
    cases, then the single-region ones, then the multi-region ones, then every study."""
    members = {name: [i for i, c in enumerate(categories) if c == name] for name in STAGES[:3]}
    members["all"] = list(range(len(categories)))
    return members


def default_stage_ends(epochs: int) -> list[int]:
    """Normal, single-region and multi-region stages end at 20%, 40% and 60% of the epochs."""
    return [round(epochs * f) for f in (0.2, 0.4, 0.6)]


def schedule(epochs: int, ends: Sequence[int], members: dict[str, list[int]],
             warn=warnings.warn) -> list[Stage]:
    """The stages in order, each with its epochs. A stage without epochs is left out; a stage
    that would have no studies is skipped with a warning and its epochs go to the next stage, so
    no epoch ever trains on nothing."""
    bounds = [0, *ends, epochs]
    stages, carry = [], None
    for k, name in enumerate(STAGES):
        start, end = bounds[k], bounds[k + 1]
        if carry is not None:
            start, carry = carry, None
        if end <= start:
            continue
        if not members[name]:
            warn(f"curriculum stage {name!r} has no training studies: skipped (its epochs "
                 f"{start + 1}-{end} go to the next stage)")
            carry = start
            continue
        stages.append(Stage(name, start, end, tuple(members[name])))
    return stages


class CurriculumSampler(ResumableSampler):
    """The order of an epoch is a permutation of that epoch's stage members, drawn from
    ``(seed, epoch)``; ``set_epoch`` moves to the stage the epoch belongs to, so the stage is
    part of the state a checkpoint holds and a resume restores."""

    def __init__(self, stages: Sequence[Stage], seed: int):
        self.stages = list(stages)
        super().__init__(len(self.stages[0].indices), seed)
        self.set_epoch(0)

    def stage_at(self, epoch: int) -> Stage:
        for stage in self.stages:
            if stage.start <= epoch < stage.end:
                return stage
        return self.stages[-1]  # past the end: the run is over

    @property
    def stage(self) -> Stage:
        return self.stage_at(self.epoch)

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        self.num_samples = len(self.stage_at(epoch).indices)
        super().set_epoch(epoch, position)

    def order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.num_samples, generator=g)
        return torch.tensor(self.stage.indices, dtype=torch.long)[perm]

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"stage": self.stage.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stage = self.stage_at(state["epoch"])
        if state.get("stage") != stage.name or state["num_samples"] != len(stage.indices):
            raise ValueError(f"checkpoint is in stage {state.get('stage')!r} of "
                             f"{state['num_samples']} studies at epoch {state['epoch']}; this "
                             f"data gives stage {stage.name!r} of {len(stage.indices)}")
        self.seed, self.shuffle = int(state["seed"]), bool(state["shuffle"])
        self.set_epoch(state["epoch"], state["position"])


def category_counts(studies: Sequence[Study]) -> dict[str, int]:
    counts = Counter(s.category for s in studies)
    return {c: counts.get(c, 0) for c in CATEGORIES}
