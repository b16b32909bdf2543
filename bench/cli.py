"""How fast does the CLI answer? ``launch --help`` and ``launch status`` with 100 jobs in the state,
against ``sky --help`` and ``sky status``, on the same machine in one run.

Each command runs ``--repeat`` times, the four commands taking turns so that a change in the
machine's load hits all of them; the median wall time of each is printed, with the ratio
SkyPilot / launch. ``sky status`` talks to SkyPilot's local API server: its first call starts that
server (printed apart, as "cold"), the repeats find it running. Everything runs under a temporary
HOME and LAUNCH_HOME, so neither tool's real state is read or changed; the API server started
here is stopped at the end.

Goals (issue #20): launch >= 15x faster than SkyPilot on both commands, ``launch --help`` <= 0.3 s.

    python bench/cli.py
    python bench/cli.py --repeat 9 --json

A benchmark, not a test: it prints numbers and exits 0 unless a command fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_RATIO = 15.0
GOAL_HELP_S = 0.3


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="runs of each command (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=100, help="jobs in launch's state (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args()


def tool(name: str) -> str:
    """The console script next to this Python (the project's venv), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        sys.exit(f"bench/cli.py: `{name}` is not installed (make install puts both in .venv)")
    return found


def fill_state(home: Path, n: int) -> None:
    """``n`` finished jobs with an attempt each, as `launch up` leaves them."""
    env = {**os.environ, "LAUNCH_HOME": str(home)}
    code = f"""
from launcher import state as st
s = st.State()
ends = [st.SUCCEEDED, st.FAILED, st.CANCELLED]
for i in range({n}):
    job = s.create_job(name=f"bench-{{i}}", task_path=None, task_yaml="run: echo", infra="local",
                       store_uri="file:///tmp/launch-bench-store", options={{}})
    s.add_attempt(job.id, host="localhost")
    s.set_attempt(job.id, 1, state=ends[i % 3])
    s.transition(job.id, ends[i % 3], "bench")
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=REPO)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench/cli.py: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> int:
    args = parse_args()
    launch, sky = tool("launch"), tool("sky")
    work = Path(tempfile.mkdtemp(prefix="launch-bench-cli-"))
    env = {**os.environ, "HOME": str(work / "home"), "LAUNCH_HOME": str(work / "launch-home"),
           "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LAUNCH_STORE"):
        env.pop(var, None)
    (work / "home").mkdir()
    fill_state(work / "launch-home", args.jobs)
    commands = {
        "launch --help": [launch, "--help"],
        "launch status": [launch, "status"],
        "sky --help": [sky, "--help"],
        "sky status": [sky, "status"],
    }
    try:
        cold = timed(commands["sky status"], env)  # starts SkyPilot's API server
        times: dict[str, list[float]] = {k: [] for k in commands}
        for i in range(args.repeat):
            for name, cmd in commands.items():
                times[name].append(timed(cmd, env))
            if not args.json:
                print(f"  round {i + 1}/{args.repeat} done", file=sys.stderr)
    finally:
        subprocess.run([sky, "api", "stop"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for what in ("--help", "status"):
        ours, theirs = med[f"launch {what}"], med[f"sky {what}"]
        ratio = theirs / ours
        goals = [ratio >= GOAL_RATIO] + ([ours <= GOAL_HELP_S] if what == "--help" else [])
        rows.append({"command": what, "launch_s": round(ours, 4), "sky_s": round(theirs, 4),
                     "ratio": round(ratio, 1), "goal": f">= {GOAL_RATIO:g}x" +
                     (f", launch <= {GOAL_HELP_S} s" if what == "--help" else ""), "met": all(goals)})
    result = {"bench": "cli", "repeat": args.repeat, "jobs_in_state": args.jobs,
              "sky_status_cold_s": round(cold, 3), "rows": rows}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"CLI start-up, median of {args.repeat} runs ({args.jobs} jobs in launch's state)")
    print(f"{'command':<10} {'launch s':>9} {'sky s':>8} {'sky/launch':>11}  goal")
    for r in rows:
        print(f"{r['command']:<10} {r['launch_s']:>9.3f} {r['sky_s']:>8.3f} {r['ratio']:>10.1f}x  "
              f"{r['goal']}: {'met' if r['met'] else 'NOT MET'}")
    print(f"(sky status, first call, starting its API server: {cold:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
