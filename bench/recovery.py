"""How fast is a lost machine noticed and training running again, and how much work is redone?
The quickstart trainer, its machine killed at the same step: an SSH host of a two-host pool under
``launch``, and the Slurm allocation of a SkyPilot managed job (``launch up --infra slurm/...``,
SkyPilot's own recovery) on the one-node Slurm cluster the integration tests start.

For each it prints the time from the kill to the loss being noticed (``launch``: the attempt's end
in the state; SkyPilot: its managed job leaving RUNNING, polled through its API), the time until
the trainer logs a training step again (the trainer's own timestamps in ``metrics.jsonl``), and the
steps trained twice (the last step before the kill minus the step it resumed from), then the
ratios. Measured earlier on this kind of machine: SkyPilot noticed after 12-40 s and trained again
after 114-213 s. Goals for ours: noticed in <= 10 s, training again in <= 40 s on a warm pool,
from the last checkpoint (at most one checkpoint interval recomputed).

Both halves use the test suite's own set-ups (tests/integration/ssh/conftest.py for the sshd
hosts and tests/integration/test_skypilot_slurm.py for Slurm + SkyPilot; SeaweedFS for our store,
a shared file:// store for SkyPilot's mount-less Slurm nodes). The SkyPilot half needs root, Slurm
and munge (scripts/install-system-deps.sh) and takes about ten minutes; ``--skip-skypilot`` runs
ours alone.

    python bench/recovery.py
    python bench/recovery.py --skip-skypilot --json

A benchmark, not a test: it prints numbers and exits 0 unless a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_DETECT_S = 10.0
GOAL_AGAIN_S = 40.0
CKPT_EVERY = 25  # the quickstart's checkpoint interval (steps)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = " (default: %(default)s)"
    p.add_argument("--kill-at", type=int, default=60, help="kill once this step is trained" + d)
    p.add_argument("--epochs", type=int, default=4, help="quickstart epochs (40 steps each)" + d)
    p.add_argument("--skip-skypilot", action="store_true", help="measure ours only")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args()


def say(args, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


def metrics(path: Path) -> list[dict]:
    """The trainer's metrics lines (``kind`` train/eval, ``step``, ``time``, ``attempt``)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return out


def wait(what: str, fn, timeout: float, every: float = 0.2):
    from launcher.testing import wait_for

    return wait_for(fn, timeout=timeout, what=what, every=every)


RESUMED = re.compile(r"resumed from \S+ \(step (\d+)")


def watch_resume(what: str, old: Path, new: Path, log: Path, killed: float, timeout: float) -> dict:
    """Follow the run after the kill until it trains again: ``before`` (the last step the old
    run trained, kept even when a resume truncates a shared metrics file), ``resumed`` (the
    checkpoint step it resumed from, from the trainer's log) and ``again`` (the trainer's
    timestamp of the first step after it)."""
    before, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = max([before] + [m.get("step", 0) for m in metrics(old) if m.get("kind") == "train"])
        try:
            found = RESUMED.findall(log.read_text(errors="replace"))
        except OSError:
            found = []
        if found:
            step = int(found[-1])
            again = [m for m in metrics(new) if m.get("kind") == "train" and m.get("step") == step + 1
                     and m.get("time", 0) > killed]
            if again:
                return {"before": before, "resumed": step, "again": again[0]["time"]}
        time.sleep(0.2)
    raise RuntimeError(f"bench/recovery.py: timed out after {timeout:.0f} s waiting for {what}")


def run_args(epochs: int) -> str:
    return (f"--epochs {epochs} --seed 0 --num-samples 3200 --log-every 1 --ckpt-every {CKPT_EVERY}")


# --- ours: an SSH pool -----------------------------------------------------------------------------
def ours(args, work: Path) -> dict:
    import pytest

    from launcher import state as st
    from launcher.testing import load_by_path

    from bench.transfer import start_seaweedfs

    ssh = load_by_path(REPO / "tests" / "integration" / "ssh" / "conftest.py", "launch_bench_ssh_conftest")
    work.mkdir(parents=True)
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    mp = pytest.MonkeyPatch()
    endpoint, access, secret, stop_store = start_seaweedfs(work / "seaweedfs")
    lab = ssh.Lab(work / "lab", key, mp)
    lab.dir.mkdir()
    job = None
    try:
        for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret,
                     "AWS_DEFAULT_REGION": "us-east-1", "LAUNCH_HOME": str(work / "launch-home")}.items():
            mp.setenv(k, v)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        a, b = lab.add_host("host-a"), lab.add_host("host-b")
        lab.write_pool("duo", ["host-a", "host-b"])
        task = work / "qs.yaml"
        task.write_text(f"name: qs\nworkdir: {REPO}\nrun: python -m trainers.quickstart {run_args(args.epochs)}\n")
        say(args, "ours: launch up on the pool ...")
        subprocess.run([ssh.LAUNCH, "up", str(task), "--infra", "ssh/duo", "--store", "s3://bench/runs", "-d"],
                       check=True, capture_output=True)
        job = st.State().jobs()[-1]
        out_a = a.root / "attempts" / job.run_id / "attempt-1" / "outputs" / "metrics.jsonl"
        wait(f"step {args.kill_at} on host-a",
             lambda: any(m.get("step", 0) >= args.kill_at for m in metrics(out_a)), 600)
        killed = time.time()
        a.kill()
        say(args, "ours: host-a killed")
        first = wait("attempt 1 to end", lambda: (x := st.State().attempts(job.id)) and x[0].ended and x[0], 120)
        att_b = b.root / "attempts" / job.run_id / "attempt-2"
        r = watch_resume("attempt 2's first step", out_a, att_b / "outputs" / "metrics.jsonl",
                         att_b / "run.log", killed, 300)
        return {"detect_s": round(first.ended - killed, 1), "again_s": round(r["again"] - killed, 1),
                "killed_after_step": r["before"], "resumed_from_step": r["resumed"],
                "recomputed_steps": r["before"] - r["resumed"], "how": first.reason}
    finally:
        if job is not None:
            subprocess.run([ssh.LAUNCH, "down", str(job.id)], capture_output=True, timeout=300)
        lab.close()
        mp.undo()
        stop_store()


# --- SkyPilot: a managed job on Slurm ------------------------------------------------------------
def skypilot(args, work: Path) -> dict:
    from launcher.testing import load_by_path

    sl = load_by_path(REPO / "tests" / "integration" / "test_skypilot_slurm.py", "launch_bench_slurm")
    work.mkdir(parents=True)
    sl._need()
    sl.clear_stale_pyenv_lock()
    python310, uv = sl._python310(), sl._uv(work / "uvdl")
    saved = sl.RootHome()
    lab = sl.SlurmLab(work / "slurm")
    job = None
    try:
        say(args, "skypilot: starting Slurm and SkyPilot's API server ...")
        lab.start(python310, uv)
        task = lab.root / "qsb.yaml"
        task.write_text(f"name: qsb\nresources:\n  cpus: 1+\n  job_recovery:\n    max_restarts_on_errors: 0\n"
                        f"workdir: {REPO}\nrun: |\n  {sys.executable} -m trainers.quickstart {run_args(args.epochs)}\n")
        say(args, "skypilot: launch up of a managed job ...")
        up = lab.launch("up", str(task), "--infra", f"slurm/{sl.CLUSTER}", "-d", timeout=300)
        if up.returncode != 0:
            raise RuntimeError(f"launch up on Slurm failed: {up.stderr[-2000:]}")
        job = up.stderr.split("Job ", 1)[1].split()[0]
        prefix = Path(sl.job_doc(lab, job)["store"][len("file://"):])
        wait(f"step {args.kill_at} in the store",
             lambda: any(m.get("step", 0) >= args.kill_at for m in metrics(prefix / "metrics.jsonl")), 900, 1.0)
        (slurm_job,) = lab.run(["squeue", "-h", "-o", "%i"]).stdout.split()
        killed = time.time()
        lab.run(["scancel", slurm_job])
        say(args, f"skypilot: allocation {slurm_job} cancelled")
        wait("SkyPilot to notice", lambda: sl.managed_jobs(lab, task, "status") not in ([], ["RUNNING"]), 600, 0)
        noticed = time.time()
        # One attempt for us, one metrics file and one log in the shared store for both runs.
        shared = prefix / "metrics.jsonl"
        r = watch_resume("the first step after the kill", shared, shared, prefix / "logs" / "attempt-1.log",
                         killed, 900)
        return {"detect_s": round(noticed - killed, 1), "again_s": round(r["again"] - killed, 1),
                "killed_after_step": r["before"], "resumed_from_step": r["resumed"],
                "recomputed_steps": r["before"] - r["resumed"], "how": "managed job recovered by SkyPilot"}
    finally:
        if job is not None:
            lab.launch("down", job, timeout=300)
        try:
            lab.stop()
        finally:
            saved.restore()


def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="launch-bench-recovery-"))
    results = {}
    try:
        results["launch (ssh pool)"] = ours(args, work / "ours")
        if not args.skip_skypilot:
            results["skypilot (managed, slurm)"] = skypilot(args, work / "sky")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mine = results["launch (ssh pool)"]
    goals = {"detect": mine["detect_s"] <= GOAL_DETECT_S, "again": mine["again_s"] <= GOAL_AGAIN_S,
             "recomputed": mine["recomputed_steps"] <= CKPT_EVERY}
    theirs = results.get("skypilot (managed, slurm)")
    ratios = ({"detect": round(theirs["detect_s"] / max(mine["detect_s"], 0.1), 1),
               "again": round(theirs["again_s"] / max(mine["again_s"], 0.1), 1)} if theirs else {})
    doc = {"bench": "recovery", "kill_at": args.kill_at, "checkpoint_every": CKPT_EVERY, "results": results,
           "ratios_skypilot_over_launch": ratios, "goals_met": goals}
    if args.json:
        print(json.dumps(doc))
        return 0
    print(f"Quickstart killed with its machine after step ~{args.kill_at} (a checkpoint every {CKPT_EVERY} steps)")
    print(f"{'':<27} {'noticed s':>9} {'training again s':>17} {'steps redone':>13}")
    for name, r in results.items():
        print(f"{name:<27} {r['detect_s']:>9.1f} {r['again_s']:>17.1f} {r['recomputed_steps']:>13}")
    if ratios:
        print(f"{'skypilot / launch':<27} {ratios['detect']:>8.1f}x {ratios['again']:>16.1f}x")
    print(f"goals for launch: noticed <= {GOAL_DETECT_S:.0f} s: {'met' if goals['detect'] else 'NOT MET'}; "
          f"training again <= {GOAL_AGAIN_S:.0f} s: {'met' if goals['again'] else 'NOT MET'}; "
          f"<= one interval redone: {'met' if goals['recomputed'] else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
