"""bench/deadline.py end to end on a small trace in the spot-traces format (1 = preempted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GAP = 300  # seconds per point


def write_trace(path: Path, pattern: list[tuple[int, float]]) -> Path:
    """``pattern``: (value, hours) runs; value 1 = no spot at those ticks."""
    data = [v for v, hours in pattern for _ in range(int(hours * 3600 / GAP))]
    path.write_text(json.dumps({"metadata": {"gap_seconds": GAP}, "data": data}))
    return path


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / "deadline.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_a_long_spot_outage_makes_always_spot_late_and_uniform_progress_not(tmp_path):
    # spot for 4 h, none for 8 h, then spot again: a 10 h job due in 15 h
    trace = write_trace(tmp_path / "outage.json", [(0, 4), (1, 8), (0, 20)])
    calm = write_trace(tmp_path / "calm.json", [(0, 30)])
    out = bench("--trace", str(trace), str(calm), "--job-hours", "10", "--deadline-hours", "15",
                "--changeover-min", "6", "--json")
    assert out.returncode == 0, out.stderr
    rows = {(r["trace"], r["policy"]): r for r in map(json.loads, out.stdout.splitlines())}
    assert len(rows) == 8 and all(set(r) == {"trace", "policy", "cost_ratio", "met"} for r in rows.values())
    assert rows["outage", "always_on_demand"] == {"trace": "outage", "policy": "always_on_demand",
                                                  "cost_ratio": 1.0, "met": True}
    assert not rows["outage", "always_spot"]["met"]  # waits out the 8 h and finishes at about 18 h
    for policy in ("uniform_progress", "greedy"):
        assert rows["outage", policy]["met"]
        assert rows["outage", policy]["cost_ratio"] < 1.0
    # spot all along: every spot policy pays the spot price, 0.3 (one changeover each)
    for policy in ("uniform_progress", "greedy", "always_spot"):
        assert abs(rows["calm", policy]["cost_ratio"] - 0.3) < 1e-3 and rows["calm", policy]["met"]


def test_the_table_has_a_sum(tmp_path):
    trace = write_trace(tmp_path / "t.json", [(0, 2), (1, 3), (0, 10)])
    out = bench("--trace", str(tmp_path), "--job-hours", "4", "--deadline-hours", "8",
                "--changeover-min", "6", "--spot-ratio", "0.5")
    assert out.returncode == 0, out.stderr
    assert trace.stem in out.stdout
    lines = out.stdout.splitlines()
    assert lines[-4].startswith("in sum") and lines[-3].split()[-4:] == ["1/1"] * 4
    assert lines[-1].startswith("goals: Uniform Progress meets every deadline: met;")


def test_a_bad_trace_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metadata": {"gap_seconds": 0}, "data": [0, 1]}))
    out = bench("--trace", str(bad), "--job-hours", "4", "--deadline-hours", "8", "--changeover-min", "6")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [f"bench/deadline.py: {bad}: metadata.gap_seconds "
                                               "must be a positive number, got 0"]
