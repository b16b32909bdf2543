"""``launch plot``: one picture of a job from its store folder alone, so it works after every
machine is gone.

What it reads (all written as the job went): ``metrics.jsonl`` (the trainer), ``gpu.jsonl`` and
``logs/attempt-N.json`` (the agent: samples, and the step each attempt resumed from), and
``logs/attempt-N.end.json`` (the supervisor: how each attempt ended, its price). What it draws:
the trainer's metrics over steps, coloured by attempt, each boundary marked with how the attempt
ended and the work recomputed after the resume shaded; the GPUs' utilisation, temperature and
memory over time; and the cost so far. ``gather`` is the data, ``--json`` prints it; matplotlib
is imported only to draw.
"""

from __future__ import annotations

import json
import re
from typing import Any

from launcher import contract

SKIP_KEYS = {"step", "epoch", "seq", "time", "ts", "wall", "total_steps", "total_epochs", "attempt", "lr"}
PREFERRED = ("loss", "train_loss", "val_loss", "val_acc", "accuracy", "acc", "psnr")


def how_it_ended(state: str | None, reason: str | None) -> str:
    """A short label: preempted, killed, outbid, session ended, stalled, succeeded, failed..."""
    state, reason = (state or "").upper(), (reason or "").lower()
    if not state:
        return "running"
    if state == "STALLED":
        return "stalled"
    if state == "PREEMPTED":
        if "outbid" in reason:
            return "outbid"
        if "session" in reason or "deadline" in reason:
            return "session ended"
        if "kill" in reason or "lost" in reason or "vanished" in reason:
            return "killed"
        return "preempted"
    return state.lower().replace("_", " ")


def _jsonl(store, key: str) -> list[dict[str, Any]]:
    if not store.exists(key):
        return []
    out = []
    for line in store.get_bytes(key).decode(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _attempt_records(store) -> dict[int, dict[str, Any]]:
    logs = store.child(contract.LOGS_PREFIX)
    found: dict[int, dict[str, Any]] = {}
    for info in logs.list(""):
        m = re.fullmatch(r"attempt-(\d+)\.(json|end\.json)", info.key.rsplit("/", 1)[-1])
        if not m:
            continue
        try:
            doc = json.loads(logs.get_bytes(m.group(0)))
        except ValueError:
            continue
        rec = found.setdefault(int(m.group(1)), {"number": int(m.group(1))})
        rec["start" if m.group(2) == "json" else "end"] = doc
    return found


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metric_keys(lines: list[dict[str, Any]]) -> list[str]:
    """Numeric metrics in the lines, the usual ones first."""
    seen: dict[str, int] = {}
    for rec in lines:
        for k, v in rec.items():
            if k not in SKIP_KEYS and _numeric(v):
                seen[k] = seen.get(k, 0) + 1
    return sorted(seen, key=lambda k: (PREFERRED.index(k) if k in PREFERRED else len(PREFERRED), -seen[k], k))


def panels(keys: list[str], most: int = 3) -> list[list[str]]:
    """Metrics grouped by what they measure (``loss``, ``train_loss``, ``val_loss`` share one
    panel), the usual ones first, at most ``most`` panels."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.rsplit("_", 1)[-1], []).append(k)
    return list(groups.values())[:most]


def series(lines: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """``(step, value)`` of one metric, one per step, the last written winning (a resumed run
    that does not cut the file writes the recomputed steps again)."""
    latest: dict[float, float] = {}
    for rec in lines:
        if _numeric(rec.get("step")) and _numeric(rec.get(key)):
            latest[float(rec["step"])] = float(rec[key])
    return sorted(latest.items())


def by_step(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last line written for each step."""
    latest: dict[float, dict[str, Any]] = {}
    for rec in lines:
        if _numeric(rec.get("step")):
            latest[float(rec["step"])] = rec
    return [latest[s] for s in sorted(latest)]


def gather(store) -> dict[str, Any]:
    """Everything the picture shows, as data."""
    lines = _jsonl(store, contract.METRICS_NAME)
    samples = _jsonl(store, contract.SAMPLES_NAME)
    records = _attempt_records(store)
    attempts = []
    numbers = sorted(records)
    for i, n in enumerate(numbers):
        start, end = records[n].get("start") or {}, records[n].get("end") or {}
        nxt = records[numbers[i + 1]].get("start") or {} if i + 1 < len(numbers) else {}
        own = [s for s in samples if s.get("attempt") == n]
        reached = max((x for x in (end.get("last_step"), nxt.get("metrics_top_step")) if x is not None),
                      default=None)
        resumed_next = nxt.get("resumed_step") if nxt else None
        if resumed_next is not None:  # a checkpoint written at the notice is past the last read
            reached = max(float(resumed_next), float(reached if reached is not None else 0))
        recomputed = None
        if reached is not None and nxt:
            recomputed = max(0.0, float(reached) - float(resumed_next or 0))
        attempts.append({
            "number": n, "host": end.get("host") or start.get("host", ""),
            "state": end.get("state"), "ended_as": how_it_ended(end.get("state"), end.get("reason")),
            "reason": end.get("reason", ""), "resumed_step": start.get("resumed_step"),
            "reached_step": reached, "recomputed_steps": recomputed,
            "started": end.get("run_started") or start.get("started") or end.get("started"),
            "ended": end.get("ended"), "cost": float(end.get("cost") or 0.0),
            "price_per_hour": float(end.get("price_per_hour") or 0.0), "samples": len(own),
        })
    steps = by_step(lines)
    return {"attempts": attempts, "metrics": metric_keys(lines), "metric_lines": len(lines),
            "steps": len(steps), "last": steps[-1] if steps else None, "samples": len(samples),
            "gpus": sorted({g.get("name", "?") for s in samples for g in s.get("gpus") or []}),
            "recomputed_steps": sum(a["recomputed_steps"] or 0 for a in attempts),
            "cost": round(sum(a["cost"] for a in attempts), 6), "done": store.exists(contract.DONE_NAME)}


def _attempt_of_step(step: float, attempts: list[dict[str, Any]]) -> int:
    """The attempt that wrote ``step`` last: the latest one that resumed below it."""
    n = attempts[0]["number"] if attempts else 1
    for a in attempts:
        if (a["resumed_step"] or 0) < step:
            n = a["number"]
    return n


def draw(store, data: dict[str, Any], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = _jsonl(store, contract.METRICS_NAME)
    samples = _jsonl(store, contract.SAMPLES_NAME)
    attempts = data["attempts"]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {a["number"]: colours[i % len(colours)] for i, a in enumerate(attempts)}
    groups = panels(data["metrics"] or [])
    fig, axes = plt.subplots(len(groups) + 1 if groups else 2, 1, squeeze=False,
                             figsize=(10, 3.0 * (len(groups) + 1) + 0.6))
    axes = axes[:, 0]
    marks = ("o-", "s--", "^:")
    for ax, keys in zip(axes, groups):
        for key, mark in zip(keys, marks):
            pts = series(lines, key)
            for a in attempts or [{"number": 1}]:
                own = [p for p in pts if _attempt_of_step(p[0], attempts) == a["number"]]
                if own:
                    ax.plot(*zip(*own), mark, ms=3, lw=1, color=colour.get(a["number"]),
                            label=f"{key}, attempt {a['number']}" if len(keys) > 1 else f"attempt {a['number']}")
        for i, a in enumerate(attempts[:-1]):
            nxt = attempts[i + 1]
            at = nxt["resumed_step"] or 0
            ax.axvline(at, color="k", ls="--", lw=0.8)
            if a["reached_step"] is not None and a["reached_step"] > at:
                ax.axvspan(at, a["reached_step"], color="red", alpha=0.12, lw=0)
            ax.annotate(f"{a['ended_as']}", (at, 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=8)
        ax.set_ylabel(" / ".join(keys))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", ncol=len(keys))
    if groups:
        axes[len(groups) - 1].set_xlabel("step (shaded: recomputed after a resume)")
    ax = axes[-1]
    t0 = min((s["ts"] for s in samples), default=0.0)
    gpu_series = [("util", "GPU util %"), ("temp_c", "GPU °C"), ("mem_pct", "GPU memory %")]
    drew = False
    for key, label in gpu_series:
        pts = []
        for s in samples:
            for g in s.get("gpus") or []:
                v = 100.0 * g["mem_used_mb"] / g["mem_total_mb"] if key == "mem_pct" and g.get("mem_total_mb") else g.get(key)
                if v is not None:
                    pts.append(((s["ts"] - t0) / 60.0, v))
        if pts:
            ax.plot(*zip(*pts), ".", ms=2, label=label)
            drew = True
    if not drew:  # no GPU: the run's CPU instead
        pts = [((s["ts"] - t0) / 60.0, s["cpu_percent"]) for s in samples if s.get("cpu_percent") is not None]
        if pts:
            ax.plot(*zip(*pts), ".", ms=2, label="CPU % of the run (no GPU)")
    for a in attempts:
        if a["ended"] and t0:
            ax.axvline((a["ended"] - t0) / 60.0, color=colour[a["number"]], ls="--", lw=0.8)
    ax.set_xlabel("minutes since the first sample (dashed: an attempt ended)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="best")
    ends = ", ".join(f"{a['number']}: {a['ended_as']}" for a in attempts)
    fig.suptitle(f"{title}\nattempts {ends} · {data['recomputed_steps']:g} steps recomputed · "
                 f"cost ${data['cost']:.2f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
