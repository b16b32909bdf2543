"""The figures: training curves with the curriculum's stage boundaries, and validation images
with their reference and generated reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trainers.xr2text.data import load_image


def _figure(rows: int, cols: int, w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * cols, h * rows), dpi=90)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def stage_bounds(history: Sequence[dict[str, Any]]) -> list[tuple[float, str]]:
    """``(x, stage)`` where each stage starts, on the epoch axis (a stage's first epoch is
    plotted at its number; the boundary sits half an epoch before it)."""
    out, last = [], None
    for row in history:
        if row.get("stage") != last:
            out.append((row["epoch"] - 0.5, row.get("stage")))
            last = row.get("stage")
    return out


def curves(path: Path, history: Sequence[dict[str, Any]]) -> None:
    panels = [("loss", [("train_loss", "train"), ("val_loss", "validation")]),
              ("BLEU-4", [("val_bleu4", "validation")]),
              ("ROUGE-L", [("val_rouge_l", "validation")])]
    fig, axes = _figure(1, len(panels), 4.2, 3.3)
    bounds = stage_bounds(history)
    for ax, (title, keys) in zip(axes[0], panels):
        for key, label in keys:
            pts = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
        for x, stage in bounds:
            ax.axvline(x, color="grey", lw=0.8, ls="--")
            ax.text(x + 0.05, 1.0, stage, transform=ax.get_xaxis_transform(), fontsize=7,
                    va="top", color="grey")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def examples(path: Path, items: Sequence[tuple[Any, str, str]], size: int) -> None:
    """One row per study: its views, then the reference and the generated report."""
    from trainers.xr2text.report import wrap

    if not items:
        return
    views = max(len(s.images) for s, _, _ in items)
    fig, axes = _figure(len(items), views + 1, 2.6, 2.6)
    for row, (study, ref, gen) in zip(axes, items):
        for j in range(views):
            ax = row[j]
            ax.axis("off")
            if j < len(study.images):
                ax.imshow(np.asarray(load_image(study.images[j], size)))
                ax.set_title(study.study_id if j == 0 else "", fontsize=8)
        ax = row[views]
        ax.axis("off")
        ax.text(0, 1, f"reference:\n{wrap(ref)}\n\ngenerated:\n{wrap(gen)}", fontsize=6.5,
                va="top", family="monospace", transform=ax.transAxes)
    row_w = 2.6 * views + 5.2
    fig.set_size_inches(row_w, 2.6 * len(items))
    fig.tight_layout()
    fig.savefig(path)
