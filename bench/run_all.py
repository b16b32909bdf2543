"""Run every benchmark in bench/ one after another and write their tables to bench/RESULTS.md, with
the date and the machine (``make bench``). Each benchmark prints ratios measured in its own run;
a goal it does not meet says so in its table.

    python bench/run_all.py                       # all of them
    python bench/run_all.py cli transfer          # some of them
    python bench/run_all.py --out /tmp/RESULTS.md

A benchmark that fails is listed with its error and the others still run; the exit code is 1 then.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

# name -> (script, arguments that keep it within a few minutes on 2 cores, what it measures)
BENCHES = {
    "cli": ("cli.py", [], "CLI start-up against SkyPilot's"),
    "recovery": ("recovery.py", [], "a lost machine: launch's SSH pool against a SkyPilot managed job on Slurm"),
    "transfer": ("transfer.py", [], "store throughput against boto3, the aws CLI and the ceiling"),
    "checkpoint": ("checkpoint.py", [], "checkpoint stall, async against synchronous saves"),
    "deadline": ("deadline.py", [], "spot/on-demand policies against a deadline on real traces"),
    "imagenet_ast": ("imagenet_ast.py", ["--rounds", "1"], "adaptive sparse training against full batches"),
    "denoise": ("denoise.py", [], "graph-diffusion denoiser against non-local means"),
    "dbn": ("dbn.py", [], "RBM-epochs per second"),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines()
                      if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = ""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            gpu = ", GPU: " + "; ".join(out.stdout.split("\n")).strip("; ")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}{gpu}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHES)}")
    p.add_argument("--out", type=Path, default=BENCH / "RESULTS.md", help="the table (default: %(default)s)")
    args = p.parse_args()
    names = args.names or [n for n in BENCHES if (BENCH / BENCHES[n][0]).exists()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    sections, failed = [], []
    for name in names:
        script, extra, what = BENCHES[name]
        print(f"== {name}: {what}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(BENCH / script), *extra], cwd=REPO,
                              capture_output=True, text=True)
        took = time.monotonic() - t0
        print(proc.stdout, end="", flush=True)
        if proc.returncode != 0:
            failed.append(name)
            body = f"FAILED (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
            print(body, file=sys.stderr)
        else:
            body = proc.stdout.rstrip()
        cmd = " ".join(["python", f"bench/{script}", *extra])
        sections.append(f"## {name}: {what}\n\n`{cmd}` ({took:.0f} s)\n\n```\n{body}\n```\n")
    header = (f"# Benchmarks\n\nWritten by `make bench` (bench/run_all.py) on "
              f"{time.strftime('%Y-%m-%d %H:%M %Z')}.\n\nMachine: {machine()}.\n\n"
              "Every figure that compares is a ratio measured within one run on this machine; "
              "absolute times on shared machines are noisy. A goal that is not met says NOT MET.\n\n")
    args.out.write_text(header + "\n".join(sections))
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
