"""How ``launch status`` shows what the supervisor watched: one line for the last GPU sample,
the throughput, and the live table of ``launch status -w`` (rich, imported only there)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def gpu_line(sample: dict[str, Any] | None, now: float | None = None) -> str:
    """``GPU0 A100 97% 30.0/80.0 GiB 71°C 301W; ... (12s ago)`` or ``-``."""
    if not sample:
        return "-"
    parts = []
    for g in sample.get("gpus") or []:
        bits = [f"GPU{g.get('index')}", str(g.get("name", "?")).replace("NVIDIA ", "")]
        if g.get("util") is not None:
            bits.append(f"{g['util']}%")
        if g.get("mem_total_mb"):
            bits.append(f"{g.get('mem_used_mb', 0) / 1024:.1f}/{g['mem_total_mb'] / 1024:.1f} GiB")
        if g.get("temp_c") is not None:
            bits.append(f"{g['temp_c']}°C")
        if g.get("power_w") is not None:
            bits.append(f"{g['power_w']:.0f}W")
        parts.append(" ".join(bits))
    if not parts:
        parts.append("no GPU")
    if sample.get("cpu_percent") is not None:
        parts.append(f"CPU {sample['cpu_percent']:.0f}%")
    if sample.get("rss_mb") is not None:
        parts.append(f"RSS {sample['rss_mb'] / 1024:.1f} GiB")
    age = (now or time.time()) - float(sample.get("ts") or 0)
    return "; ".join(parts) + f" ({age:.0f}s ago)"


def rate(watch: dict[str, Any]) -> str:
    r = (watch or {}).get("steps_per_s")
    return "-" if r is None else (f"{r:.2f} steps/s" if r < 10 else f"{r:.0f} steps/s")


def _table(docs: list[dict[str, Any]], progress: Callable[[dict], str]):
    from rich.table import Table

    t = Table(title=f"launch status  {time.strftime('%H:%M:%S')}", title_justify="left")
    for col in ("ID", "NAME", "INFRA", "STATE", "ATT", "PROGRESS", "RATE", "GPU", "COST", "ALERTS"):
        t.add_column(col, overflow="fold")
    for d in docs:
        w = d.get("watch") or {}
        style = {"SUCCEEDED": "green", "FAILED": "red", "RECOVERING": "yellow"}.get(d["state"], "")
        t.add_row(str(d["id"]), d["name"], d["infra"], f"[{style}]{d['state']}[/]" if style else d["state"],
                  str(len(d["attempts"])), progress(d["progress"]), rate(w),
                  gpu_line(w.get("gpu")) if not d["ended"] else "-", f"${d['cost']:.2f}",
                  ", ".join(w.get("alerts") or []) or "-")
    return t


def live(load: Callable[[], list[dict[str, Any]]], progress: Callable[[dict], str], every: float = 2.0) -> None:
    """Redraw the table every ``every`` seconds until every job shown has ended."""
    from rich.console import Console
    from rich.live import Live

    docs = load()
    with Live(_table(docs, progress), console=Console(stderr=False), refresh_per_second=4) as view:
        while not all(d["ended"] for d in docs):
            time.sleep(every)
            docs = load()
            view.update(_table(docs, progress))
