"""What the ImageNet trainer reports: per-epoch timing, the comparison with a baseline run, the
dashboard's panels.

"Savings" are measured, never inferred from the activation rate: ``train_time`` is the wall time
of an epoch's training steps (data waits included, evaluation and checkpoint snapshots excluded),
and the ratio divides it by the same epoch of a full-batch (``--ast off``) run's results.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PANELS = [
    ("accuracy", ["val_top1", "val_top5", "train_acc", "baseline_val_top1"]),
    ("skipped fraction", ["skipped_fraction"]),
    ("activation rate", ["activation_rate", "activation_target"]),
    ("threshold", ["thr"]),
    ("seconds per epoch (training)", ["train_time", "baseline_train_time"]),
    ("progress: wall time (s)", ["wall_time", "baseline_wall_time"]),
]


@dataclass
class EpochClock:
    """Samples and seconds of the current epoch's training steps; saved in the checkpoint so an
    interrupted epoch's numbers add up over its attempts. ``cpu_seconds`` is the CPU time of the
    training thread over the same steps: with ``--threads 1`` on a CPU that is the compute itself,
    without the loader workers, the background checkpoint writer, or whatever else a shared
    machine runs (all of which the wall clock mixes in)."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    seen: int = 0
    trained: int = 0
    _t: tuple[float, float] = (0.0, 0.0)

    def start(self) -> None:
        self._t = (time.perf_counter(), time.thread_time())

    def lap(self, seen: int, trained: int) -> None:
        """Count the step that just ended (from the last ``start``/``lap``)."""
        now = (time.perf_counter(), time.thread_time())
        self.seconds += now[0] - self._t[0]
        self.cpu_seconds += now[1] - self._t[1]
        self._t = now
        self.seen += seen
        self.trained += trained

    def reset(self) -> None:
        self.seconds, self.cpu_seconds, self.seen, self.trained = 0.0, 0.0, 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "seen": self.seen,
                "trained": self.trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds, self.cpu_seconds = state["seconds"], state["cpu_seconds"]
        self.seen, self.trained = state["seen"], state["trained"]


def load_baseline(path: str | Path | None) -> list[dict[str, Any]] | None:
    """The per-epoch history of a baseline run's results.json (None without a path)."""
    if not path:
        return None
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the baseline results {path}: {e}") from e
    history = results.get("history")
    if not history or "train_time" not in history[0]:
        raise ValueError(f"{path} has no per-epoch train_time (is it an imagenet results.json?)")
    return history


def baseline_row(baseline: list[dict[str, Any]] | None, epoch: int) -> dict[str, Any]:
    """The baseline's comparable numbers at the same (1-based) epoch, prefixed ``baseline_``."""
    if not baseline or epoch > len(baseline):
        return {}
    row = baseline[epoch - 1]
    return {f"baseline_{k}": row[k] for k in ("train_time", "train_cpu_time", "val_top1",
                                              "wall_time") if k in row}


def time_ratios(history: list[dict[str, Any]], current: dict[str, Any],
                baseline: list[dict[str, Any]] | None) -> dict[str, float]:
    """This epoch's and the cumulative training-time ratio against the baseline (same epochs),
    in wall time and, where both runs recorded it, in CPU time."""
    epoch = len(history) + 1
    if not baseline or epoch > len(baseline):
        return {}
    out = {}
    for key, name in (("train_time", "time_ratio"), ("train_cpu_time", "cpu_time_ratio")):
        if key not in current or any(key not in r for r in history + baseline[:epoch]):
            continue
        ours = [r[key] for r in history] + [current[key]]
        theirs = [r[key] for r in baseline[:epoch]]
        if theirs[-1] > 0 and sum(theirs) > 0:
            out[name] = round(ours[-1] / theirs[-1], 4)
            out[f"cum_{name}"] = round(sum(ours) / sum(theirs), 4)
    return out


def summary(history: list[dict[str, Any]], baseline: list[dict[str, Any]] | None,
            controller_state: dict[str, Any] | None) -> dict[str, Any]:
    """The results.json fields beyond the harness's: final accuracy, activation, the comparison
    with the baseline at equal epochs and at equal training time."""
    if not history:
        return {}
    last = history[-1]
    seen = sum(r.get("samples_seen", 0) for r in history)
    trained = sum(r.get("samples_trained", 0) for r in history)
    train_time = sum(r["train_time"] for r in history)
    out: dict[str, Any] = {
        "val_top1": last.get("val_top1"), "val_top5": last.get("val_top5"),
        "activation_rate": trained / seen if seen else None,
        "skipped_fraction": 1 - trained / seen if seen else None,
        "train_time": round(train_time, 3),
        "train_cpu_time": round(sum(r.get("train_cpu_time", 0.0) for r in history), 3),
        "images_per_s": round(seen / train_time, 2) if train_time else None,
        "controller": controller_state,
    }
    if baseline:
        n = min(len(history), len(baseline))
        base_time = sum(r["train_time"] for r in baseline[:n])
        # Equal wall time: the baseline's accuracy after as much training time as ours took.
        cum, at_equal_time = 0.0, None
        for r in baseline:
            cum += r["train_time"]
            if cum > train_time * (1 + 1e-9):
                break
            at_equal_time = r.get("val_top1")
        out["baseline"] = {
            "epochs_compared": n,
            "time_ratio": round(sum(r["train_time"] for r in history[:n]) / base_time, 4),
            "cpu_time_ratio": _ratio(history[:n], baseline[:n], "train_cpu_time"),
            "val_top1_equal_epochs": baseline[n - 1].get("val_top1"),
            "val_top1_equal_train_time": at_equal_time,
        }
    return out


def _ratio(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], key: str) -> float | None:
    if any(key not in r for r in ours + theirs) or not sum(r[key] for r in theirs):
        return None
    return round(sum(r[key] for r in ours) / sum(r[key] for r in theirs), 4)
