"""CIFAR-10 as torchvision reads it (``cifar-10-batches-py/``), for the trainers that use it.

The batches are loaded by torchvision's own ``CIFAR10`` class. Before that, every file is
checked here so that a missing or corrupt one is a one-line error naming it (torchvision would
say only "Dataset not found or corrupted"). The md5 check of torchvision is not used: it would
refuse the generated batches of ``--synthetic``, and a file that unpickles into the right arrays
is what training needs. ``write_batches`` writes images in exactly this format, so generated
data goes through the same loader as the real download.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from trainers.common.errors import HarnessError

BASE_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
SIDE = 32
ROW = 3 * SIDE * SIDE


class DataError(HarnessError):
    """The data folder is not a CIFAR-10 python folder, or one of its files is unreadable."""


def batches_folder(data_dir: str | Path) -> Path:
    """``data_dir`` may be the folder holding ``cifar-10-batches-py/`` (torchvision's root) or
    that folder itself."""
    d = Path(data_dir).expanduser()
    return d if d.name == BASE_FOLDER or (d / TEST_FILE).exists() else d / BASE_FOLDER


def _read(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: missing (expected the CIFAR-10 python batches: "
                        f"{', '.join(TRAIN_FILES)}, {TEST_FILE}, {META_FILE})")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated, not a pickle, ...
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({type(e).__name__}: {e})") from e


def check_folder(data_dir: str | Path) -> Path:
    """Every batch and the meta file unpickle into the expected arrays; returns the folder."""
    folder = batches_folder(data_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: no CIFAR-10 folder here (download the python version of "
                        f"CIFAR-10 into {folder.parent}, or pass --synthetic)")
    for name in [*TRAIN_FILES, TEST_FILE]:
        entry = _read(folder / name)
        data = entry.get("data") if isinstance(entry, dict) else None
        labels = entry.get("labels", entry.get("fine_labels")) if isinstance(entry, dict) else None
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != ROW:
            raise DataError(f"{folder / name}: 'data' is not an N x {ROW} array")
        if labels is None or len(labels) != len(data):
            raise DataError(f"{folder / name}: 'labels' do not match the {len(data)} images")
    meta = _read(folder / META_FILE)
    if not isinstance(meta, dict) or "label_names" not in meta:
        raise DataError(f"{folder / META_FILE}: no 'label_names'")
    return folder


def load(data_dir: str | Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 32 x 32 x 3 uint8, labels N int64) of the train or test split, read by
    torchvision's ``CIFAR10``."""
    from torchvision.datasets import CIFAR10

    folder = check_folder(data_dir)

    class Checked(CIFAR10):
        def _check_integrity(self) -> bool:  # done above, without md5 (see the module doc)
            return True

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    ds = Checked(str(folder.parent), train=train, download=False)
    return np.ascontiguousarray(ds.data), np.asarray(ds.targets, dtype=np.int64)


def write_batches(data_dir: str | Path, train: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray], label_names=CLASSES) -> Path:
    """Write (images N x 32 x 32 x 3 uint8, labels) as CIFAR-10 python batches: the training
    images spread over the five ``data_batch_*`` files, the rest in ``test_batch``."""
    folder = Path(data_dir).expanduser() / BASE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, images: np.ndarray, labels: np.ndarray) -> None:
        images = np.asarray(images, dtype=np.uint8)
        if images.ndim != 4 or images.shape[1:] != (SIDE, SIDE, 3):
            raise ValueError(f"images must be N x {SIDE} x {SIDE} x 3, got {images.shape}")
        entry = {"batch_label": name, "labels": [int(v) for v in labels],
                 "data": images.transpose(0, 3, 1, 2).reshape(len(images), ROW),
                 "filenames": [f"{name}_{i:05d}.png" for i in range(len(images))]}
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        tmp.replace(folder / name)

    x, y = train
    for i, part in enumerate(np.array_split(np.arange(len(x)), len(TRAIN_FILES))):
        dump(TRAIN_FILES[i], x[part], y[part])
    dump(TEST_FILE, *test)
    with open(folder / META_FILE, "wb") as f:
        pickle.dump({"label_names": list(label_names), "num_cases_per_batch": len(x) // 5,
                     "num_vis": ROW}, f, protocol=2)
    return folder
