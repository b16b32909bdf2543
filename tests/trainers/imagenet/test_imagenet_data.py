"""Data: the Kaggle layout helper, the synthetic writer, and an order + augmentation that resume
exactly whatever the number of workers."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image

from trainers.common import ResumableSampler
from trainers.imagenet import prepare_kaggle as pk
from trainers.imagenet.data import (EpochBatches, SeededImageFolder, TrainTransform, ValTransform,
                                    check_layout, epoch_plan, make_loader)
from trainers.imagenet.synthetic import MARKER, write_synthetic

WNIDS = ["n01440764", "n01443537", "n01484850"]


def kaggle_tree(root, val_labels):
    """A miniature Kaggle download: train/<wnid>/, a flat val/, LOC_val_solution.csv."""
    train = root / pk.TRAIN_SUBDIR
    for w in WNIDS:
        (train / w).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (12, 10), (i * 50, 0, 0)).save(train / w / f"{w}_{i}.JPEG")
    val = root / pk.VAL_SUBDIR
    val.mkdir(parents=True)
    with open(root / pk.VAL_CSV, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        for i, wnid in enumerate(val_labels):
            name = f"ILSVRC2012_val_{i + 1:08d}"
            Image.new("RGB", (12, 10)).save(val / f"{name}.JPEG")
            w.writerow([name, f"{wnid} 1 2 10 9 {wnid} 0 0 5 5"])


def test_kaggle_layout_becomes_image_folders(tmp_path):
    kaggle_tree(tmp_path / "kaggle", ["n01443537", "n01440764", "n01443537"])
    dest = tmp_path / "imagenet"
    assert pk.main([str(tmp_path / "kaggle"), str(dest)]) == 0
    train_dir, val_dir = check_layout(dest)
    assert sorted(p.name for p in (val_dir / "n01443537").iterdir()) == [
        "ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"]
    assert [p.name for p in (val_dir / "n01484850").iterdir()] == []  # empty, but present
    train = SeededImageFolder(train_dir, ValTransform(8))
    val = SeededImageFolder(val_dir, ValTransform(8), classes=train.classes)
    assert train.classes == WNIDS and len(train) == 6
    assert sorted(val.targets) == [0, 1, 1]
    assert val[0][0].shape == (3, 8, 8)
    # Again: nothing to do, nothing broken.
    assert pk.prepare_kaggle(tmp_path / "kaggle", dest) == {
        "classes": 3, "val_images": 3, "placed": 0, "skipped": 3}


def test_kaggle_helper_refuses_unlabelled_val_images(tmp_path):
    kaggle_tree(tmp_path / "kaggle", ["n01443537"])
    Image.new("RGB", (4, 4)).save(tmp_path / "kaggle" / pk.VAL_SUBDIR / "stray.JPEG")
    with pytest.raises(ValueError, match="1 val images have no label.*stray.JPEG"):
        pk.prepare_kaggle(tmp_path / "kaggle", tmp_path / "out")
    assert pk.main([str(tmp_path / "kaggle"), str(tmp_path / "out")]) == 1


def test_kaggle_layout_is_recognised_in_the_error(tmp_path):
    kaggle_tree(tmp_path, ["n01443537"])
    with pytest.raises(FileNotFoundError, match="prepare_kaggle"):
        check_layout(tmp_path)


def test_synthetic_writes_the_imagenet_layout_once(tmp_path):
    root = write_synthetic(tmp_path / "syn", num_classes=3, train_per_class=4, val_per_class=2,
                           size=8)
    train_dir, val_dir = check_layout(root)
    assert sorted(p.name for p in train_dir.iterdir()) == ["n00000000", "n00000001", "n00000002"]
    assert len(list(val_dir.rglob("*.png"))) == 6 and len(list(train_dir.rglob("*.png"))) == 12
    stamp = (root / MARKER).stat().st_mtime_ns
    write_synthetic(root, num_classes=3, train_per_class=4, val_per_class=2, size=8)
    assert (root / MARKER).stat().st_mtime_ns == stamp  # reused, not rewritten
    assert json.loads((root / MARKER).read_text())["num_classes"] == 3


def test_epoch_plan_never_ends_on_a_single_sample():
    assert epoch_plan(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert epoch_plan(9, 4) == [(0, 4), (4, 9)]


def test_batches_resume_from_the_sampler_position_and_leave_it_alone():
    sampler = ResumableSampler(10, seed=3)
    sampler.set_epoch(2)
    full = list(EpochBatches(sampler, 4, seed=7))
    assert sampler.position == 0
    sampler.position = 4
    assert list(EpochBatches(sampler, 4, seed=7)) == full[1:]
    sampler.position = 5
    with pytest.raises(ValueError, match="not at a batch boundary"):
        list(EpochBatches(sampler, 4, seed=7))


def test_augmentation_does_not_depend_on_workers_or_on_a_resume(tmp_path):
    root = write_synthetic(tmp_path / "syn", num_classes=2, train_per_class=5, val_per_class=1,
                           size=16)
    dataset = SeededImageFolder(root / "train", TrainTransform(12, min_scale=0.2))

    def epoch(workers, start=0):
        sampler = ResumableSampler(len(dataset), seed=0)
        sampler.set_epoch(1, start)
        loader = make_loader(dataset, EpochBatches(sampler, 4, seed=0), workers, False)
        torch.manual_seed(123 + workers)  # the global RNG must not matter
        return torch.cat([x for x, _ in loader])

    in_process = epoch(0)
    assert torch.equal(in_process, epoch(1))
    assert torch.equal(in_process[4:], epoch(0, start=4))
    assert not torch.equal(in_process[:4], in_process[4:8])
