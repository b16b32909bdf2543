"""Alerts: a pure function of the machine samples and the training progress, like the recovery
decision. No clock, no I/O: the caller passes ``now`` and what it has read, so every case is a
few lines of data in the tests.

    hot       a GPU's temperature over ``temp_c`` (85 °C) in the latest sample
    memory    a GPU's memory over ``mem_percent`` (95 %) in the latest sample
    idle      a GPU at 0 % utilisation for ``idle_s`` (5 min) while the run goes
    stalled   no new training step for the stall time: the run is hung (a deadlocked data
              loader, a stuck collective, a frozen mount); the supervisor relaunches it

The stall time is ``stall_after`` when given (0 turns the check off), else a generous multiple of
the observed step time (``stall_factor`` x) and twice the longest quiet gap already seen in the
job (an evaluation, a checkpoint of a big model), never less than ``stall_min`` (10 min). Without a
given time the check starts once the attempt has made two steps, so a long first setup or data
download is never taken for a hang.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Thresholds:
    temp_c: float = 85.0
    mem_percent: float = 95.0
    idle_s: float = 300.0
    stall_after: float | None = None  # seconds; None: from the step time; 0: off
    stall_factor: float = 20.0
    stall_min: float = 600.0
    fresh_s: float = 120.0  # a sample older than this says nothing about the GPUs now


@dataclass(frozen=True)
class Alert:
    kind: str  # hot | memory | idle | stalled
    message: str
    gpu: int | None = None

    @property
    def key(self) -> str:
        """Identifies the condition, so a caller raises it once until it clears."""
        return self.kind if self.gpu is None else f"{self.kind}:{self.gpu}"


def step_time(steps: list[tuple[float, float]]) -> float | None:
    """Seconds per step from ``(seen_at, step)`` observations of one attempt (oldest first),
    between the times each new step was first seen. Counted from the first progress on once
    there are two, so a long start (setup, a data download) does not inflate it; None until the
    attempt has made progress."""
    firsts: list[tuple[float, float]] = []
    for t, s in steps:
        if not firsts or s > firsts[-1][1]:
            firsts.append((t, s))
    if len(firsts) < 2:
        return None
    (t0, s0), (t1, s1) = (firsts[1] if len(firsts) > 2 else firsts[0]), firsts[-1]
    return max(0.0, t1 - t0) / (s1 - s0)


def last_change(steps: list[tuple[float, float]]) -> tuple[float, float] | None:
    """The first observation of the highest step seen: when the run last made progress."""
    best = None
    for t, s in steps:
        if best is None or s > best[1]:
            best = (t, s)
    return best


def longest_gap(steps: list[tuple[float, float]]) -> float:
    """The longest time between two observations that each brought a new step."""
    firsts: list[float] = []
    for t, s in steps:
        if not firsts or s > top:
            firsts.append(t)
            top = s
    return max((b - a for a, b in zip(firsts, firsts[1:])), default=0.0)


def stall_limit(steps: list[tuple[float, float]], th: Thresholds, gap: float = 0.0) -> float | None:
    """The stall time for this attempt now, or None while there is none (off, or not enough
    progress yet to know the step time). ``gap``: the longest quiet gap seen so far in the job."""
    if th.stall_after == 0:
        return None
    if th.stall_after:
        return float(th.stall_after)
    per_step = step_time(steps)
    if per_step is None:
        return None
    return max(th.stall_min, th.stall_factor * per_step, 2.0 * max(gap, longest_gap(steps)))


def _gpu_alerts(latest: dict[str, Any], th: Thresholds) -> list[Alert]:
    out = []
    for g in latest.get("gpus") or []:
        i = g.get("index")
        name = f"GPU {i} ({g.get('name', '?')})"
        if g.get("temp_c") is not None and g["temp_c"] > th.temp_c:
            out.append(Alert("hot", f"{name} at {g['temp_c']} °C (over {th.temp_c:g} °C)", i))
        used, total = g.get("mem_used_mb"), g.get("mem_total_mb")
        if used is not None and total:
            pct = 100.0 * used / total
            if pct > th.mem_percent:
                out.append(Alert("memory", f"{name} memory {pct:.1f}% full "
                                 f"({used:.0f}/{total:.0f} MiB, over {th.mem_percent:g}%)", i))
    return out


def _idle_alerts(samples: list[dict[str, Any]], now: float, run_started: float, th: Thresholds) -> list[Alert]:
    """A GPU whose samples read 0 % without a break for the last ``idle_s`` seconds (counted
    from the first sample of that streak), while the run has been going at least that long."""
    if now - run_started < th.idle_s:
        return []
    zero_since: dict[int, float] = {}
    busy: set[int] = set()
    for s in reversed(samples):  # newest first: walk back until each GPU was busy
        for g in s.get("gpus") or []:
            i, util = g.get("index"), g.get("util")
            if util is None or i in busy:
                continue
            if util > 0:
                busy.add(i)
            else:
                zero_since[i] = s["ts"]
    return [Alert("idle", f"GPU {i} at 0% utilisation for {(now - since) / 60:.0f} min while the "
                  "run goes (crashed, or waiting on data?)", i)
            for i, since in sorted(zero_since.items()) if now - since >= th.idle_s]


def evaluate(samples: Iterable[dict[str, Any]], steps: list[tuple[float, float]], *, now: float,
             run_started: float, th: Thresholds = Thresholds(), gap: float = 0.0) -> list[Alert]:
    """The alerts that hold at ``now`` for the running attempt.

    ``samples``: the attempt's machine samples (``gpu.jsonl`` records), oldest first.
    ``steps``: ``(seen_at, step)`` observations of the training progress in this attempt.
    ``run_started``: when the attempt's run started. ``gap``: the longest quiet gap between two
    new steps seen in earlier attempts of the job."""
    samples = sorted((s for s in samples if "ts" in s), key=lambda s: s["ts"])
    out: list[Alert] = []
    if samples and now - samples[-1]["ts"] <= th.fresh_s:
        out += _gpu_alerts(samples[-1], th)
        out += _idle_alerts(samples, now, run_started, th)
    limit = stall_limit(steps, th, gap)
    if limit is not None:
        changed = last_change(steps)
        since = changed[0] if changed is not None else run_started
        quiet = now - max(since, run_started)
        if quiet >= limit:
            at = f" at step {changed[1]:g}" if changed is not None else " before its first step"
            out.append(Alert("stalled", f"no training progress for {quiet:.0f} s{at} "
                             f"(stall time {limit:.0f} s): the run looks hung"))
    return out


def changes(current: list[Alert], active: set[str]) -> tuple[list[Alert], set[str]]:
    """Which of ``current`` are new against the keys ``active`` before, and the keys active now:
    an alert is raised once, and again only after it cleared."""
    keys = {a.key for a in current}
    return [a for a in current if a.key not in active], keys
