"""Does adaptive sparse training save real time? ``--ast on`` against ``--ast off``, same data.

Runs the ImageNet trainer on one synthetic data set (written once, PNG files in the ImageNet
layout, read by the trainer's real loader): the full-batch baseline, then AST with the baseline's
results.json, alternating for ``--rounds`` rounds so that a change in the machine's load hits both.
Prints images/s, training seconds per epoch (evaluation and checkpoint writes excluded) and their
ratio, as the mean over all epochs and as the best epoch of each (the least disturbed on a shared
machine), in wall time and in training-thread CPU time, and the val accuracy of both. On a GPU it
also prints the plain-PyTorch ResNet-50 AMP training throughput of the device, for scale.

Then the distributed harness (``--nproc N``, default 2; 0 skips it): the baseline under
``torchrun --nproc_per_node N`` against one process, back to back, the same global batch (each
process takes batch/N) and one thread per process on a CPU (one GPU per process on GPUs).
Images/s: the samples of every rank over rank 0's training time; the ratio is the speed-up.

    python bench/imagenet_ast.py                  # CPU-sized defaults (a few minutes)
    python bench/imagenet_ast.py --epochs 5 --target 0.3 --keep /tmp/ast-bench

A benchmark, not a test: it prints numbers and exits 0 unless a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args() -> argparse.Namespace:
    import torch

    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = " (default: %(default)s)"
    p.add_argument("--arch", default="resnet50" if cuda else "resnet18", help="model" + d)
    p.add_argument("--size", type=int, default=160 if cuda else 64, help="image side" + d)
    p.add_argument("--batch-size", type=int, default=256 if cuda else 128, help="batch" + d)
    p.add_argument("--classes", type=int, default=10, help="synthetic classes" + d)
    p.add_argument("--per-class", type=int, default=512 if cuda else 160,
                   help="training images per class" + d)
    p.add_argument("--epochs", type=int, default=2, help="epochs per run" + d)
    p.add_argument("--rounds", type=int, default=2,
                   help="baseline + AST pairs, run alternately" + d)
    p.add_argument("--target", type=float, default=0.2, help="AST target activation rate" + d)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate" + d)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1) if cuda else 1,
                   help="loader workers" + d)
    p.add_argument("--threads", type=int, default=None if cuda else 1,
                   help="torch CPU threads; 1 on a CPU keeps a shared machine's timings "
                        "steady" + d)
    p.add_argument("--nproc", type=int, default=min(2, torch.cuda.device_count()) if cuda else 2,
                   help="processes for the distributed line (0: skip it)" + d)
    p.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    return p.parse_args()


def run_trainer(args: argparse.Namespace, work: Path, mode: str, round_: int, nproc: int = 0) -> dict:
    """One run of the trainer; ``nproc`` > 0: under torchrun with that many processes, the batch
    split between them."""
    out = work / (f"{mode}-{round_}" if not nproc else f"dist-{nproc}-{round_}")
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
                if nproc else [sys.executable])
    batch = args.batch_size // max(nproc, 1)
    cmd = [*launcher, "-m", "trainers.imagenet", "--synthetic", "--data-dir",
           str(work / "data"), "--synthetic-classes", str(args.classes), "--synthetic-train",
           str(args.per_class), "--synthetic-val", str(max(8, args.per_class // 8)),
           "--synthetic-size", str(args.size), "--arch", args.arch, "--epochs",
           str(args.epochs), "--batch-size", str(batch), "--lr", str(args.lr),
           "--min-crop-scale", "0.35", "--workers", str(args.workers), "--ast", mode,
           "--ast-target", str(args.target), "--ckpt-every", "0", "--log-every", "1000",
           "--checkpoint-dir", str(out / "ckpt"), "--output-dir", str(out / "outputs")]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if mode == "on" and not nproc:
        cmd += ["--baseline-results", str(work / f"off-{round_}" / "outputs" / "results.json")]
    else:
        cmd += ["--no-plot"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env = {k: v for k, v in env.items() if not k.startswith("LAUNCH_")}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"the --ast {mode} run{f' on {nproc} processes' if nproc else ''} failed "
                 f"({res.returncode}):\n{res.stderr[-3000:]}")
    results = json.loads((out / "outputs" / "results.json").read_text())
    results["process_s"] = time.perf_counter() - t0
    return results


def plain_resnet50_amp(batch: int = 256, steps: int = 30, warmup: int = 10) -> float:
    """Images/s of a bare ResNet-50 training loop (fp16 autocast, channels-last, SGD) on
    random tensors already on the GPU: the device's ceiling, with no data loading at all."""
    import torch
    import torch.nn.functional as F
    from torchvision.models import resnet50

    torch.backends.cudnn.benchmark = True
    model = resnet50().cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def report(args: argparse.Namespace, runs: dict[str, list[dict]]) -> None:
    off, on = runs["off"][0], runs["on"][0]
    epochs = {m: [h for r in runs[m] for h in r["history"]] for m in runs}

    def mean(m, key):
        return sum(h[key] for h in epochs[m]) / len(epochs[m])

    def best(m, key):
        return min(h[key] for h in epochs[m])

    print(f"AST benchmark: {args.arch}, {args.size}px, batch {args.batch_size}, "
          f"{off['train_samples']} train / {off['val_samples']} val images, {args.epochs} epochs "
          f"x {args.rounds} rounds per mode, device {off['device']}, threads "
          f"{args.threads or 'default'}, target {args.target}")
    print(f"{'':9}{'s/epoch':>9}{'best':>8}{'cpu s/ep':>10}{'images/s':>10}{'activation':>12}"
          f"{'val top-1':>11}{'val top-5':>11}")
    for m, r in (("off", off), ("on", on)):
        seen = sum(h["samples_seen"] for h in epochs[m])
        rate = sum(h["samples_trained"] for h in epochs[m]) / seen
        speed = seen / sum(h["train_time"] for h in epochs[m])
        print(f"ast {m:5}{mean(m, 'train_time'):9.2f}{best(m, 'train_time'):8.2f}"
              f"{mean(m, 'train_cpu_time'):10.2f}{speed:10.1f}{rate:12.3f}{r['val_top1']:11.3f}"
              f"{r['val_top5']:11.3f}")
    print("epoch by epoch (on/off, wall): " + "; ".join(
        ", ".join(f"{h['time_ratio']:.3f}" for h in r["history"] if "time_ratio" in h)
        for r in runs["on"]))
    for what, key in (("wall", "train_time"), ("CPU", "train_cpu_time")):
        print(f"time per epoch ratio, ast on / ast off ({what}): "
              f"mean {mean('on', key) / mean('off', key):.3f}, "
              f"best epochs {best('on', key) / best('off', key):.3f}")
    same = all(r["val_top1"] == on["val_top1"] for r in runs["on"]) and all(
        r["val_top1"] == off["val_top1"] for r in runs["off"])
    at_equal_time = on["baseline"]["val_top1_equal_train_time"]
    print(f"val top-1 at equal epochs: ast on {on['val_top1']:.3f}, ast off {off['val_top1']:.3f}"
          f" ({'identical in every round' if same else 'rounds differ'}); the baseline at equal "
          f"training time: " + (f"{at_equal_time:.3f}" if at_equal_time is not None else
                                "none (all of ast on took less than the baseline's first epoch)"))


def report_distributed(args: argparse.Namespace, one: dict, many: dict) -> None:
    def speed(r: dict) -> float:  # samples_seen counts every rank's
        h = r["history"]
        return sum(e["samples_seen"] for e in h) / sum(e["train_time"] for e in h)

    s1, sn = speed(one), speed(many)
    print(f"distributed harness, ast off, global batch {args.batch_size}: 1 process "
          f"{s1:.1f} images/s, {args.nproc} processes (torchrun, {one['device']}) {sn:.1f} images/s: "
          f"{sn / s1:.2f}x (ideal {args.nproc}x); val top-1 {one['val_top1']:.3f} vs {many['val_top1']:.3f}")


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="ast-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for r in range(args.rounds):
            for mode in ("off", "on"):
                runs[mode].append(run_trainer(args, work, mode, r))
        report(args, runs)
        if args.nproc > 1:
            one = run_trainer(args, work, "off", 99, nproc=0)
            report_distributed(args, one, run_trainer(args, work, "off", 0, nproc=args.nproc))
        if args.keep:
            print(f"dashboard: {work / 'on-0' / 'outputs' / 'dashboard.png'}")
    import torch

    if torch.cuda.is_available():
        print(f"plain PyTorch ResNet-50 AMP training, batch 256, 224px, data on the GPU: "
              f"{plain_resnet50_amp():.0f} images/s ({torch.cuda.get_device_name()})")


if __name__ == "__main__":
    main()
