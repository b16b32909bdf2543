"""The comparison's files, all redrawn from the checkpoint's record of finished architectures
(so an attempt that starts after an architecture finished still writes its files):

- ``val_predictions_<arch>.csv``: image_id, label, then each class's uncalibrated and calibrated
  probability (every figure and number can be recomputed from these);
- ``comparison_results.json``: per architecture every metric, the temperature, parameter count,
  training time and epochs;
- figures: ``training_curves.png``, ``reliability.png`` (before/after), ``roc_curves.png``,
  ``confusion_matrices.png``, ``gradcam.png``, ``comparison_table.png``.

matplotlib's object API with the Agg canvas only (no display, no global backend change).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trainers.common.metrics import write_atomic
from trainers.ham10000 import evaluate as ev
from trainers.ham10000.data import CLASSES, load_rgb

COMPARISON_NAME = "comparison_results.json"
PANELS = [
    ("validation accuracy", ["val_acc", "val_balanced_acc", "val_macro_f1"]),
    ("loss", ["train_loss", "val_loss"]),
    ("validation macro AUC", ["val_auc_macro"]),
]
TABLE_KEYS = [("accuracy", "acc"), ("balanced_accuracy", "bal. acc"), ("macro_f1", "macro-F1"),
              ("roc_auc_macro", "macro AUC"), ("mel_sens95", "mel sens@95%spec"),
              ("ece_before", "ECE"), ("ece_after", "ECE (T)"), ("temperature", "T"),
              ("params", "params (M)"), ("train_time", "train s")]


def predictions_name(arch: str) -> str:
    return f"val_predictions_{arch}.csv"


def one_line(result: dict[str, Any]) -> str:
    mel = result["sensitivity_at_95_specificity"].get("mel")
    return (f"acc {result['accuracy']:.4f} balanced {result['balanced_accuracy']:.4f} macro-F1 "
            f"{result['macro_f1']:.4f} AUC {_fmt(result['roc_auc_macro'])} mel sens@95%spec "
            f"{_fmt(mel)} ECE {result['ece_before']:.4f} -> {result['ece_after']:.4f} "
            f"(T {result['temperature']:.3f})")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def write_predictions(path: Path, records, done: dict[str, Any]) -> None:
    """One row per validation image; probabilities written with float32's full precision."""
    t = done["result"]["temperature"]
    before, after = ev.probabilities(done["logits"]), ev.probabilities(done["logits"], t)
    header = (["image_id", "label"] + [f"prob_{c}" for c in CLASSES]
              + [f"calibrated_prob_{c}" for c in CLASSES])
    lines = [",".join(header)]
    for r, label, p, q in zip(records, done["labels"].tolist(), before.tolist(), after.tolist()):
        lines.append(",".join([r.image_id, CLASSES[label], *(f"{v:.9g}" for v in p + q)]))
    write_atomic(path, "\n".join(lines) + "\n")


def read_predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``(image_ids, labels, probs, calibrated_probs)`` of a ``val_predictions_*.csv``."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    labels = np.array([CLASSES.index(r["label"]) for r in rows])
    probs = np.array([[float(r[f"prob_{c}"]) for c in CLASSES] for r in rows])
    cal = np.array([[float(r[f"calibrated_prob_{c}"]) for c in CLASSES] for r in rows])
    return [r["image_id"] for r in rows], labels, probs, cal


def comparison(finished: dict[str, Any], archs: Sequence[str]) -> dict[str, Any]:
    return {"classes": list(CLASSES),
            "architectures": {a: finished[a]["result"] for a in archs if a in finished}}


class Outputs:
    """Writes every file of the comparison for the architectures finished so far."""

    def __init__(self, out_dir: Path, archs: Sequence[str], val_records, cam_idx: list[int],
                 image_size: int, plot: bool = True):
        self.out, self.archs, self.records = Path(out_dir), list(archs), list(val_records)
        self.cam_idx, self.size, self.plot = cam_idx, image_size, plot

    def write(self, finished: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
        done = [a for a in self.archs if a in finished]
        for a in done:
            write_predictions(self.out / predictions_name(a), self.records, finished[a])
        result = comparison(finished, self.archs)
        write_atomic(self.out / COMPARISON_NAME, json.dumps(result, indent=1) + "\n")
        if self.plot and done:
            from trainers.ham10000 import figures

            figures.draw_all(self.out, done, finished, history, self._cam_images())
        return result

    def _cam_images(self) -> list[tuple[str, np.ndarray]]:
        return [(f"{self.records[i].image_id} ({self.records[i].dx})",
                 np.asarray(load_rgb(self.records[i].path, self.size)))
                for i in self.cam_idx]


def table_rows(finished: dict[str, Any], archs: Sequence[str]) -> list[list[str]]:
    rows = []
    for a in archs:
        r = dict(finished[a]["result"])
        r["mel_sens95"] = r["sensitivity_at_95_specificity"].get("mel")
        r["params"] = r["params"] / 1e6
        rows.append([a] + [_fmt(r.get(k)) if k not in ("params", "train_time")
                           else f"{r[k]:.1f}" for k, _ in TABLE_KEYS])
    return rows
