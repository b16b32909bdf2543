"""How far a job is, and how much is left, from the last line of its metrics.jsonl.

Provider-neutral: a backend with sessions of a fixed length (a notebook) puts
``{"session": {"usable_s": ...}}`` in its attempt handles, and the estimate then says how many
more sessions the job needs.
"""

from __future__ import annotations

import math
from typing import Any


def fraction_done(progress: dict[str, Any], total_steps: float | None = None,
                  total_epochs: float | None = None) -> float | None:
    """Share of the training done (0..1) from the last metrics line (``step``/``epoch``) against
    the total (``total_steps``/``total_epochs`` in the line win over the arguments); None when
    unknown."""
    total_steps = progress.get("total_steps", total_steps)
    total_epochs = progress.get("total_epochs", total_epochs)
    if total_steps and "step" in progress:
        return min(1.0, float(progress["step"]) / float(total_steps))
    if total_epochs and "epoch" in progress:
        return min(1.0, float(progress["epoch"]) / float(total_epochs))
    return None


def estimate_left(progress: dict[str, Any], *, run_seconds: float, usable_s: float,
                  total_steps: float | None = None, total_epochs: float | None = None) -> dict[str, Any] | None:
    """Sessions and hours still needed, from the last metrics line (``step``/``epoch``) against
    the total (``total_steps``/``total_epochs`` in the line win over the arguments), the running
    time so far and the usable seconds of one session. None when the fraction done is unknown."""
    done = fraction_done(progress, total_steps, total_epochs)
    if done is None or done <= 0 or run_seconds <= 0 or usable_s <= 0:
        return None
    left_s = run_seconds * (1.0 - done) / done
    return {"fraction_done": round(done, 4), "hours_left": round(left_s / 3600.0, 2),
            "sessions_left": math.ceil(left_s / usable_s) if left_s > 0 else 0}
