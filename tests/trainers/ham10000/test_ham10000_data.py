"""Data: the synthetic set is the real layout, the split never shares a lesion and keeps every
class on both sides, and bad data is a one-line error naming the file and the row or column."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter

import pytest
from PIL import Image

from trainers.common import run_main
from trainers.ham10000.data import (CLASSES, IMAGE_DIRS, METADATA, Record, lesion_split,
                                    read_metadata)
from trainers.ham10000.synthetic import MARKER, write_synthetic
from trainers.ham10000.train import main

COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("ham") / "data", lesions=60, width=32)


def test_synthetic_set_has_the_real_layout_imbalance_and_lesions(synthetic):
    with open(synthetic / METADATA, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    per_part = [len(list((synthetic / d).glob("*.jpg"))) for d in IMAGE_DIRS[:2]]
    assert all(per_part) and sum(per_part) == len(rows)
    counts = Counter(r["dx"] for r in rows)
    assert set(counts) == set(CLASSES)
    assert counts.most_common(1)[0][0] == "nv" and counts["nv"] > 0.4 * len(rows)
    images_per_lesion = Counter(r["lesion_id"] for r in rows)
    assert max(images_per_lesion.values()) > 1 and len(images_per_lesion) < len(rows)
    stamp = (synthetic / MARKER).stat().st_mtime_ns
    write_synthetic(synthetic, lesions=60, width=32)
    assert (synthetic / MARKER).stat().st_mtime_ns == stamp  # reused, not rewritten
    records = read_metadata(synthetic)
    assert len(records) == len(rows) and records[0].path.is_file()


def skewed_records(tmp_path, seed=0):
    """Many lesions of a few images each, and rare classes of exactly two lesions (the case a
    plain stratified group split leaves out of one side)."""
    import random

    rng = random.Random(seed)
    lesions = {"nv": 40, "mel": 9, "bkl": 7, "bcc": 3, "akiec": 2, "vasc": 2, "df": 2}
    records, n = [], 0
    for dx, k in lesions.items():
        for j in range(k):
            for _ in range(rng.randint(1, 4)):
                records.append(Record(f"ISIC_{n:07d}", f"HAM_{dx}_{j}", dx, tmp_path / "x.jpg"))
                n += 1
    return records


@pytest.mark.parametrize("seed", [0, 1, 2, 42])
def test_no_lesion_in_both_splits_and_every_class_with_two_lesions_in_both(synthetic, tmp_path,
                                                                        seed):
    for records in (read_metadata(synthetic), skewed_records(tmp_path, seed)):
        split = lesion_split(records, 0.2, seed)
        train = {r.lesion_id for r, s in zip(records, split) if s == "train"}
        val = {r.lesion_id for r, s in zip(records, split) if s == "val"}
        assert not train & val
        for dx in CLASSES:
            lesions = {r.lesion_id for r in records if r.dx == dx}
            if len(lesions) >= 2:
                assert lesions & train and lesions & val, (dx, seed)
        assert 0.1 < len(val) / len(train | val) < 0.35
        assert lesion_split(records, 0.2, seed) == split  # seeded


def test_split_is_written_to_split_csv(tmp_path, restore_torch_determinism):
    out = tmp_path / "out"
    main(["--synthetic", "--synthetic-lesions", "30", "--data-dir", str(tmp_path / "data"),
          "--archs", "resnet18", "--epochs", "1", "--image-size", "32", "--workers", "0",
          "--threads", "1", "--no-plot", "--batch-size", "16", "--cam-images", "1",
          "--output-dir", str(out), "--checkpoint-dir", str(tmp_path / "ckpt")])
    with open(out / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image_id", "lesion_id", "dx", "split"]
    sides = {}
    for r in rows:
        sides.setdefault(r["lesion_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert {r["split"] for r in rows} == {"train", "val"}


# --- bad data -----------------------------------------------------------------------------------

def small_tree(root, rows=None):
    """Three lesions' worth of real JPEGs in part 1 and the metadata CSV."""
    part = root / IMAGE_DIRS[0]
    part.mkdir(parents=True)
    rows = rows if rows is not None else [
        ["HAM_1", "ISIC_1", "nv", "histo", "40.0", "male", "back"],
        ["HAM_2", "ISIC_2", "mel", "histo", "50.0", "female", "face"],
        ["HAM_3", "ISIC_3", "bkl", "histo", "60.0", "male", "trunk"]]
    for r in rows:
        Image.new("RGB", (16, 12), (200, 120, 100)).save(part / f"{r[1]}.jpg")
    with open(root / METADATA, "w", newline="") as f:
        csv.writer(f).writerows([COLUMNS] + rows)
    return root


def bad_missing_image(root):
    (root / IMAGE_DIRS[0] / "ISIC_2.jpg").unlink()
    return [METADATA, "row 3", "ISIC_2.jpg"]


def bad_missing_column(root):
    text = (root / METADATA).read_text().replace("lesion_id", "lesion", 1)
    (root / METADATA).write_text(text)
    return [METADATA, "'lesion_id'"]


def bad_unknown_dx(root):
    (root / METADATA).write_text((root / METADATA).read_text().replace(",bkl,", ",melanoma,"))
    return [METADATA, "row 4", "'melanoma'"]


def bad_empty_csv(root):
    (root / METADATA).write_text("")
    return [METADATA, "empty"]


def bad_unreadable_jpeg(root):
    (root / IMAGE_DIRS[0] / "ISIC_3.jpg").write_bytes(b"not a jpeg at all")
    return ["ISIC_3.jpg", "unreadable", "row 4"]


@pytest.mark.parametrize("breaker", [bad_missing_image, bad_missing_column, bad_unknown_dx,
                                     bad_empty_csv, bad_unreadable_jpeg])
def test_bad_data_is_one_line_naming_the_file(tmp_path, capsys, breaker, restore_torch_determinism):
    root = small_tree(tmp_path / "data")
    expected = breaker(root)
    code = run_main(main, ["--data-dir", str(root), "--archs", "resnet18", "--epochs", "1",
                           "--output-dir", str(tmp_path / "out"),
                           "--checkpoint-dir", str(tmp_path / "ckpt")], name="ham10000")
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("ham10000: error: ")
    for part in expected:
        assert part in err, (part, err)


def test_bad_data_exit_code_from_the_command_line(tmp_path, child_env):
    root = small_tree(tmp_path / "data")
    bad_unknown_dx(root)
    r = subprocess.run([sys.executable, "-m", "trainers.ham10000", "--data-dir", str(root),
                        "--output-dir", str(tmp_path / "out"),
                        "--checkpoint-dir", str(tmp_path / "ckpt")],
                       capture_output=True, text=True, env=child_env(), timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "row 4" in r.stderr, r.stderr
