"""Deadline policies replayed on real spot traces: cost against on demand only, and deadlines met.

Each trace is replayed from its first tick through the policy function that the supervisor calls
(``launcher.deadline.choose``), for Uniform Progress, greedy, always spot and always on demand:

    python bench/deadline.py                        # the shared traces, 48 h job, 72 h deadline, 6 min
    python bench/deadline.py --trace ../shared/traces --job-hours 48 --deadline-hours 72 --changeover-min 6
    python bench/deadline.py --trace a.json b.json --job-hours 10 --deadline-hours 20 --json

Traces: the JSON files of https://github.com/skypilot-org/spot-traces (collected for "Can't Be
Late", Wu et al., NSDI 2024), ``{"metadata": {"gap_seconds": G}, "data": [n, ...]}``, one point
every G seconds. As in the paper's simulator, 1 means the spot instance was preempted (none to be
had) at that tick and 0 that it was there (``--ones-mean available`` reads them the other way).
A folder means every .json under it. Without --trace: $LAUNCH_TRACES, else shared/traces in or beside the repository. The
traces are not copied into this repository (theirs states no licence).

The model at each tick: a spot machine that the trace takes away is lost (the work in the store
is kept); every machine started costs one changeover of paid time without progress; spot costs
--spot-ratio of the on-demand price; nothing billing while waiting. Past the end of a trace there
is no spot, and a policy that would wait runs on demand instead. The cost ratio is the policy's cost over that of on demand only on the same trace;
"in sum" is the sum of costs over the sum of on-demand costs. A benchmark: it prints numbers and
exits 0 unless the input is bad.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launcher.deadline import Mode, Situation, choose  # noqa: E402

ORDER = ["uniform_progress", "greedy", "always_spot", "always_on_demand"]
SHORT = {"uniform_progress": "uniform progress", "greedy": "greedy", "always_spot": "always spot",
         "always_on_demand": "on demand only"}


class BadInput(Exception):
    pass


@dataclass(frozen=True)
class Trace:
    name: str
    gap: float
    spot: list[bool]


@dataclass(frozen=True)
class Result:
    cost: float  # in hours of on-demand price
    finish: float  # seconds from submission
    met: bool


def load_trace(path: Path, name: str, ones_mean: str = "preempted") -> Trace:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: not a readable JSON trace ({e.__class__.__name__}: {e})") from None
    gap = (doc.get("metadata") or {}).get("gap_seconds") if isinstance(doc, dict) else None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(gap, (int, float)) or gap <= 0:
        raise BadInput(f"{path}: metadata.gap_seconds must be a positive number, got {gap!r}")
    if not isinstance(data, list) or not data or not all(isinstance(x, (int, float)) for x in data):
        raise BadInput(f"{path}: data must be a non-empty list of numbers")
    return Trace(name, float(gap), [(x > 0) == (ones_mean == "available") for x in data])


def find_traces(given: list[str], ones_mean: str = "preempted") -> list[Trace]:
    if not given:
        env = os.environ.get("LAUNCH_TRACES")
        found = [str(d) for d in ([Path(env)] if env else [REPO / "shared" / "traces",
                                                            REPO.parent / "shared" / "traces"])
                 if d.is_dir()]
        if not found:
            raise BadInput("no traces: pass --trace FILE_OR_FOLDER (e.g. a clone of "
                           "https://github.com/skypilot-org/spot-traces) or set LAUNCH_TRACES")
        given = found[:1]
    traces = []
    for g in given:
        p = Path(g)
        if p.is_dir():
            files = sorted(p.rglob("*.json"))
            if not files:
                raise BadInput(f"{p}: no .json traces in this folder")
            traces += [load_trace(f, f"{f.parent.name}/{f.stem}", ones_mean) for f in files]
        elif p.is_file():
            traces.append(load_trace(p, p.stem, ones_mean))
        else:
            raise BadInput(f"--trace {g}: no such file or folder")
    return traces


def simulate(trace: Trace, policy: str, *, work: float, deadline: float, changeover: float,
             spot_ratio: float) -> Result:
    """Replay ``trace`` from its first tick under ``policy`` until the work is done."""
    price = {Mode.SPOT: spot_ratio, Mode.ON_DEMAND: 1.0, Mode.NONE: 0.0}
    t = done = cost = setup_left = 0.0
    current, tick = Mode.NONE, 0
    while done < work:
        spot = tick < len(trace.spot) and trace.spot[tick]
        if current is Mode.SPOT and not spot:
            current = Mode.NONE  # preempted
        mode = choose(policy, Situation(t, deadline, done, work, changeover, spot, current)).mode
        if mode is Mode.SPOT and not spot:
            mode = Mode.NONE
        if mode is Mode.NONE and tick >= len(trace.spot):
            mode = Mode.ON_DEMAND  # past the end of the trace a waiting policy would wait forever
        if mode is not current and mode is not Mode.NONE:
            setup_left = changeover
        current = mode
        span = trace.gap
        if current is not Mode.NONE:
            setup = min(setup_left, span)
            setup_left -= setup
            progress = min(span - setup, work - done)
            done += progress
            span = setup + progress if done >= work else span
            cost += price[current] * span / 3600.0
        t += span
        tick += 1
    return Result(cost, t, t <= deadline + 1e-6)


def run(traces: list[Trace], *, job_hours: float, deadline_hours: float, changeover_min: float,
        spot_ratio: float) -> list[dict]:
    rows = []
    for tr in traces:
        res = {p: simulate(tr, p, work=job_hours * 3600, deadline=deadline_hours * 3600,
                           changeover=changeover_min * 60, spot_ratio=spot_ratio) for p in ORDER}
        base = res["always_on_demand"].cost
        for p in ORDER:
            rows.append({"trace": tr.name, "policy": p, "cost_ratio": round(res[p].cost / base, 4),
                         "met": res[p].met, "cost_od_hours": round(res[p].cost, 3),
                         "finish_hours": round(res[p].finish / 3600, 2)})
    return rows


def summary(rows: list[dict]) -> dict[str, dict]:
    base = sum(r["cost_od_hours"] for r in rows if r["policy"] == "always_on_demand")
    out = {}
    for p in ORDER:
        mine = [r for r in rows if r["policy"] == p]
        out[p] = {"cost_ratio": sum(r["cost_od_hours"] for r in mine) / base,
                  "met": sum(r["met"] for r in mine), "of": len(mine)}
    return out


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"job {args.job_hours:g} h, deadline {args.deadline_hours:g} h, changeover "
          f"{args.changeover_min:g} min, spot at {args.spot_ratio:g} x on demand; "
          "cost relative to on demand only, * = deadline missed")
    names = sorted({r["trace"] for r in rows}, key=[r["trace"] for r in rows].index)
    width = max(len(n) for n in names + ["in sum"])
    print(f"{'trace':<{width}}  " + "  ".join(f"{SHORT[p]:>16}" for p in ORDER))
    for n in names:
        cells = [next(r for r in rows if r["trace"] == n and r["policy"] == p) for p in ORDER]
        print(f"{n:<{width}}  " + "  ".join(
            f"{c['cost_ratio']:>15.3f}{' ' if c['met'] else '*'}" for c in cells))
    s = summary(rows)
    print(f"{'in sum':<{width}}  " + "  ".join(f"{s[p]['cost_ratio']:>16.3f}" for p in ORDER))
    print(f"{'deadlines met':<{width}}  " + "  ".join(
        f"{str(s[p]['met']) + '/' + str(s[p]['of']):>16}" for p in ORDER))
    up, greedy = s["uniform_progress"], s["greedy"]
    goals = [("Uniform Progress meets every deadline", up["met"] == up["of"]),
             ("Uniform Progress costs less than greedy in sum", up["cost_ratio"] < greedy["cost_ratio"]),
             (f"Uniform Progress is at least 40% cheaper than on demand only "
              f"({1 - up['cost_ratio']:.0%} cheaper)", up["cost_ratio"] <= 0.6)]
    print("\ngoals: " + "; ".join(f"{g}: {'met' if ok else 'NOT MET'}" for g, ok in goals))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = " (default: %(default)s)"
    p.add_argument("--trace", nargs="+", default=[], metavar="FILE",
                   help="trace files or folders of them (default: $LAUNCH_TRACES, else shared/traces in or beside the repo)")
    p.add_argument("--job-hours", type=float, default=48.0, help="hours of work the job needs" + d)
    p.add_argument("--deadline-hours", type=float, default=72.0, help="hours from submission to the deadline" + d)
    p.add_argument("--changeover-min", type=float, default=6.0,
                   help="minutes lost each time a machine is started" + d)
    p.add_argument("--spot-ratio", type=float, default=0.3, help="spot price as a share of on demand" + d)
    p.add_argument("--ones-mean", choices=["preempted", "available"], default="preempted",
                   help="what a 1 in a trace says about spot at that tick" + d)
    p.add_argument("--json", action="store_true",
                   help="one JSON object per trace and policy: trace, policy, cost_ratio, met")
    args = p.parse_args(argv)
    for key in ("job_hours", "deadline_hours", "spot_ratio"):
        if getattr(args, key) <= 0:
            p.error(f"--{key.replace('_', '-')} must be positive, got {getattr(args, key):g}")
    if args.changeover_min < 0:
        p.error(f"--changeover-min must be 0 or more, got {args.changeover_min:g}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        traces = find_traces(args.trace, args.ones_mean)
    except BadInput as e:
        print(f"bench/deadline.py: {e}", file=sys.stderr)
        return 1
    rows = run(traces, job_hours=args.job_hours, deadline_hours=args.deadline_hours,
               changeover_min=args.changeover_min, spot_ratio=args.spot_ratio)
    if args.json:
        for r in rows:
            print(json.dumps({k: r[k] for k in ("trace", "policy", "cost_ratio", "met")}))
    else:
        print_table(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
