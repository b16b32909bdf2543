"""What does saving cost the training? Step time of a ResNet-50 training loop with a checkpoint every
few seconds: the harness's asynchronous saves, a synchronous ``torch.save`` plus upload in the
training thread, and no saves, measured in one run on this machine.

The state is ResNet-50's (25.6 M parameters, SGD with momentum: about 200 MB). Each mode trains
``--steps`` steps, the modes taking turns for ``--rounds`` rounds. The stall of one save is the
extra time of a run with saves over the same steps without, divided by its saves; the stall at
one save a minute is that over 60 s of training (the goal: <= 2 %). The store is a real S3 server
(SeaweedFS, as the integration tests start it): in the async mode an uploader thread does what the
agent does on a machine (it polls for committed folders and uploads them, manifest last), and the
time from a save's start to its manifest in the store is printed.

    python bench/checkpoint.py                    # CPU-sized defaults (a few minutes)
    python bench/checkpoint.py --steps 40 --save-every 5 --json

A benchmark, not a test: it prints numbers and exits 0 unless a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_SHARE = 0.02  # stall at one save a minute


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = " (default: %(default)s)"
    p.add_argument("--steps", type=int, default=16, help="training steps per run" + d)
    p.add_argument("--save-every", type=int, default=4, help="steps between saves" + d)
    p.add_argument("--batch-size", type=int, default=2, help="images per step" + d)
    p.add_argument("--size", type=int, default=64, help="image side" + d)
    p.add_argument("--rounds", type=int, default=2, help="runs of each mode, taking turns" + d)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads" + d)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args()


class Uploader(threading.Thread):
    """The agent's job on a machine: upload each committed local checkpoint, manifest last."""

    def __init__(self, root: Path, store, interval: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.store, self.interval = root, store, interval
        self.committed: dict[int, float] = {}  # step -> when its manifest was in the store
        self.stop = threading.Event()

    def run(self) -> None:
        from launcher import contract
        from launcher.checkpoints import upload_checkpoint

        while not self.stop.is_set():
            for step, path in contract.local_checkpoints(self.root):
                if step not in self.committed and contract.verify_checkpoint(path, check_hash=False):
                    upload_checkpoint(self.store, path)
                    self.committed[step] = time.perf_counter()
            self.stop.wait(self.interval)


def train(mode: str, args, work: Path, store_uri: str) -> dict:
    import torch
    import torchvision

    from launcher.checkpoints import upload_checkpoint
    from launcher.store import open_store
    from trainers.common.checkpoint import CheckpointWriter, write_checkpoint
    from trainers.common.state import to_host

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch_size, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.batch_size,))
    root = work / mode
    shutil.rmtree(root, ignore_errors=True)
    store = open_store(f"{store_uri}/{mode}-{time.monotonic_ns()}")
    writer = CheckpointWriter(root, keep_last=2)
    uploader = Uploader(root, store) if mode == "async" else None
    if uploader:
        uploader.start()
    meta = dict(epoch=0.0, metrics=None, fingerprint="bench", best=None, reason="periodic")
    started: dict[int, float] = {}
    commit_s: list[float] = []  # seconds from a save's start to its manifest in the store
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if mode != "none" and step % args.save_every == 0:
            started[step] = time.perf_counter()
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}
            if mode == "async":
                writer.save(to_host(state), step=step, **meta)
            else:  # what a training script without a harness does: save, then upload, then go on
                upload_checkpoint(store, write_checkpoint(root, state, step=step, **meta))
                commit_s.append(time.perf_counter() - started[step])
    elapsed = time.perf_counter() - t0
    writer.wait()
    if uploader:
        deadline = time.perf_counter() + 120
        while set(started) - set(uploader.committed) and time.perf_counter() < deadline:
            time.sleep(0.1)
        uploader.stop.set()
        uploader.join()
        commit_s = [uploader.committed[s] - started[s] for s in started if s in uploader.committed]
    shutil.rmtree(root, ignore_errors=True)
    return {"mode": mode, "seconds": elapsed, "saves": len(started), "commit_s": commit_s}


def main() -> int:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="launch-bench-ckpt-"))
    from bench.transfer import start_seaweedfs

    endpoint, key, secret, stop = start_seaweedfs(work / "seaweedfs")
    try:
        import boto3

        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key,
                           "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1"})
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        runs: dict[str, list[dict]] = {"none": [], "async": [], "sync": []}
        train("none", args, work, "s3://bench/warm-up")  # first-touch costs out of the way
        for r in range(args.rounds):
            for mode in runs:
                res = train(mode, args, work, "s3://bench/runs")
                runs[mode].append(res)
                if not args.json:
                    print(f"  round {r + 1}: {mode:<5} {res['seconds']:.1f} s for {args.steps} steps",
                          file=sys.stderr, flush=True)
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)

    best = {m: min(r["seconds"] for r in rs) for m, rs in runs.items()}
    step_s = best["none"] / args.steps
    saves = runs["async"][0]["saves"]
    rows = []
    for mode in ("async", "sync"):
        stall = max(0.0, best[mode] - best["none"]) / saves
        commits = [c for r in runs[mode] for c in r["commit_s"]]
        rows.append({"mode": mode, "step_s": round(best[mode] / args.steps, 4),
                     "stall_per_save_s": round(stall, 3), "stall_share_at_1_per_min": round(stall / 60.0, 4),
                     "save_to_committed_s": round(statistics.median(commits), 2) if commits else None,
                     "met": stall / 60.0 <= GOAL_SHARE})
    result = {"bench": "checkpoint", "steps": args.steps, "save_every": args.save_every,
              "rounds": args.rounds, "step_s_no_saves": round(step_s, 4), "rows": rows}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"ResNet-50 state, a save every {args.save_every} steps, best of {args.rounds} round(s); "
          f"step time without saves: {step_s:.3f} s")
    print(f"{'mode':<6} {'step s':>7} {'stall/save s':>13} {'stall at 1 save/min':>20} "
          f"{'save->in store s':>17}  goal (<= {GOAL_SHARE:.0%})")
    for r in rows:
        commit = f"{r['save_to_committed_s']:.2f}" if r["save_to_committed_s"] is not None else "-"
        print(f"{r['mode']:<6} {r['step_s']:>7.3f} {r['stall_per_save_s']:>13.3f} "
              f"{r['stall_share_at_1_per_min']:>19.2%} {commit:>17}  {'met' if r['met'] else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
