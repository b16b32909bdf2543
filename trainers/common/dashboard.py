"""A dashboard PNG drawn from the per-epoch history.

matplotlib is imported here, lazily, and only its object API with the Agg canvas is used: no
display is needed, and no global pyplot backend is changed for the process that calls it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

# A panel is (title, [history keys]); each key is one line against the epoch.
Panel = tuple[str, Sequence[str]]


def plot_dashboard(history: Sequence[dict[str, Any]], panels: Sequence[Panel], path: Path,
                   title: str = "", x_key: str = "epoch", columns: int = 3) -> Path:
    """Draw ``panels`` from ``history`` (rows as in history.csv) into the PNG at ``path``.

    Keys a row lacks are skipped for that row, so a panel may mix metrics logged at different
    times. Returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(len(panels), 1)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for i, (panel_title, keys) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for key in keys:
            pts = [(r[x_key], r[key]) for r in history if r.get(key) is not None and x_key in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", markersize=3, label=key)
        ax.set_title(panel_title)
        ax.set_xlabel(x_key)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
