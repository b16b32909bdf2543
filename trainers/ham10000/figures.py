"""The comparison's figures, one PNG each, drawn from the finished architectures' records."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trainers.ham10000 import evaluate as ev
from trainers.ham10000.data import CLASSES


def _figure(rows: int, cols: int, w: float = 4.0, h: float = 3.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * cols, h * rows), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)


def training_curves(path: Path, archs: Sequence[str], history: list[dict[str, Any]]) -> None:
    keys = [("train_loss", "training loss"), ("val_loss", "validation NLL"),
            ("val_acc", "validation accuracy"), ("val_balanced_acc", "balanced accuracy")]
    fig, axes = _figure(1, len(keys))
    for ax, (key, title) in zip(axes[0], keys):
        for a in archs:
            pts = [(r["arch_epoch"], r[key]) for r in history
                   if r.get("arch") == a and r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=a)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    _save(fig, path)


def reliability(path: Path, archs: Sequence[str], finished: dict[str, Any]) -> None:
    fig, axes = _figure(2, len(archs), 3.4, 3.2)
    width = 1.0 / ev.ECE_BINS
    centres = (np.arange(ev.ECE_BINS) + 0.5) * width
    for j, a in enumerate(archs):
        d = finished[a]
        for i, (t, name, key) in enumerate(((1.0, "before", "ece_before"),
                                            (d["result"]["temperature"], "after", "ece_after"))):
            bins = ev.reliability_bins(ev.probabilities(d["logits"], t), d["labels"])
            ax = axes[i][j]
            acc = np.array(bins["accuracy"])
            used = np.array(bins["proportion"]) > 0
            ax.bar(centres[used], acc[used], width=width, edgecolor="k", alpha=0.7,
                   label="accuracy")
            ax.plot([0, 1], [0, 1], "k--", lw=1)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title(f"{a} {name} (T={t:.2f})\nECE {d['result'][key]:.3f}", fontsize=9)
            ax.set_xlabel("confidence")
    _save(fig, path)


def roc(path: Path, archs: Sequence[str], finished: dict[str, Any]) -> None:
    fig, axes = _figure(1, len(archs), 3.8, 3.6)
    for ax, a in zip(axes[0], archs):
        d = finished[a]
        curves = ev.roc_curves(ev.probabilities(d["logits"], d["result"]["temperature"]),
                               d["labels"])
        for c, (fpr, tpr) in zip(CLASSES, curves):
            auc = d["result"]["roc_auc"].get(c)
            if auc is not None:
                ax.plot(fpr, tpr, lw=1.2, label=f"{c} {auc:.2f}")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.axvline(1 - ev.MIN_SPECIFICITY, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{a}: macro AUC {d['result']['roc_auc_macro'] or float('nan'):.3f}")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def confusion(path: Path, archs: Sequence[str], finished: dict[str, Any]) -> None:
    fig, axes = _figure(1, len(archs), 3.8, 3.6)
    for ax, a in zip(axes[0], archs):
        cm = np.array(finished[a]["result"]["confusion_matrix"])
        ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(CLASSES)), CLASSES, fontsize=7, rotation=45)
        ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(a)
    _save(fig, path)


def gradcam(path: Path, archs: Sequence[str], finished: dict[str, Any],
            images: list[tuple[str, np.ndarray]]) -> None:
    """Rows: the images, then one row of maps per architecture (the same images for all)."""
    if not images:
        return
    fig, axes = _figure(1 + len(archs), len(images), 1.8, 1.9)
    for j, (title, img) in enumerate(images):
        axes[0][j].imshow(img)
        axes[0][j].set_title(title, fontsize=6)
        for i, a in enumerate(archs, start=1):
            axes[i][j].imshow(img)
            axes[i][j].imshow(finished[a]["cams"][j].numpy(), cmap="jet", alpha=0.45,
                              vmin=0, vmax=255)
            if j == 0:
                axes[i][j].set_ylabel(a, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)


def table(path: Path, archs: Sequence[str], finished: dict[str, Any]) -> None:
    from trainers.ham10000.report import TABLE_KEYS, table_rows

    fig, axes = _figure(1, 1, 11.0, 0.6 + 0.35 * len(archs))
    ax = axes[0][0]
    ax.axis("off")
    t = ax.table(cellText=table_rows(finished, archs),
                 colLabels=["architecture"] + [label for _, label in TABLE_KEYS], loc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1, 1.3)
    _save(fig, path)


def draw_all(out: Path, archs: Sequence[str], finished: dict[str, Any],
             history: list[dict[str, Any]], cam_images: list[tuple[str, np.ndarray]]) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    training_curves(out / "training_curves.png", archs, history)
    reliability(out / "reliability.png", archs, finished)
    roc(out / "roc_curves.png", archs, finished)
    confusion(out / "confusion_matrices.png", archs, finished)
    gradcam(out / "gradcam.png", archs, finished, cam_images)
    table(out / "comparison_table.png", archs, finished)
