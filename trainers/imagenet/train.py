"""ImageNet with adaptive sparse training (AST): only the samples worth learning from get a
backward pass, and a PI controller keeps their share at the target. Resumable to the bit.

Run ``python -m trainers.imagenet --help``. ``--synthetic`` writes a small data set in the same
layout and trains on it through the same code (CPU-sized, seconds); ``--ast off`` is the
full-batch baseline, whose results.json a later AST run can be compared with
(``--baseline-results``). Under ``launch`` the checkpoint and output folders come from the
environment (``launcher.contract``).

One optimizer step = ``--accum-steps`` micro-batches of ``--batch-size`` images; each micro-batch
is scored and selected on its own (selection.py, step.py). Checkpoints fall between steps, so no
half-accumulated gradient ever needs saving.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from trainers.common import (Harness, HarnessError, ResumableSampler, add_harness_args, distributed,
                             enable_determinism, seed_everything)
from trainers.imagenet import report
from trainers.common.loading import EpochBatches, epoch_plan, eval_batches, make_loader
from trainers.imagenet.data import SeededImageFolder, TrainTransform, ValTransform, check_layout
from trainers.common.amp import autocast_for, optimizer_step, resolve_amp
from trainers.imagenet.model import build_model
from trainers.imagenet.selection import ControllerConfig, PIController
from trainers.imagenet.step import MicroStats, micro_step
from trainers.imagenet.synthetic import write_synthetic

NAME = "imagenet"
DEFAULT_DATA = "data/imagenet"
DEFAULT_SYNTHETIC_DATA = "data/imagenet-synthetic"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trainers.imagenet", allow_abbrev=False,
        description="Train a torchvision model on ImageNet (ImageFolder layout) with adaptive "
                    "sparse training, resumable exactly after preemption.")
    _data_args(p.add_argument_group("data"))
    _model_args(p.add_argument_group("model and optimisation"))
    _ast_args(p.add_argument_group("adaptive sparse training"))
    add_harness_args(p, ckpt_every=500, log_every=50)
    args = p.parse_args(argv)
    if min(args.epochs, args.batch_size, args.accum_steps) < 1:
        p.error("--epochs, --batch-size and --accum-steps must be >= 1")
    if args.batch_size < 2:
        p.error("--batch-size must be >= 2 (batch norm)")
    return args


_D = " (default: %(default)s)"  # appended to a flag's help


def _data_args(g) -> None:
    g.add_argument("--data-dir", metavar="DIR",
                   help=f"root with train/<wnid>/ and val/<wnid>/ (default: {DEFAULT_DATA}, or "
                        f"{DEFAULT_SYNTHETIC_DATA} with --synthetic)")
    g.add_argument("--synthetic", action="store_true",
                   help="write a small class-structured data set to --data-dir (PNG files in "
                        "the same layout) and train on it")
    g.add_argument("--synthetic-classes", type=int, default=10, help="synthetic classes" + _D)
    g.add_argument("--synthetic-train", type=int, default=64,
                   help="synthetic training images per class" + _D)
    g.add_argument("--synthetic-val", type=int, default=16,
                   help="synthetic val images per class" + _D)
    g.add_argument("--synthetic-size", type=int, default=32,
                   help="side of the synthetic images in pixels" + _D)
    g.add_argument("--image-size", type=int,
                   help="training crop side (default: 224, or the synthetic size)")
    g.add_argument("--min-crop-scale", type=float, default=0.08,
                   help="smallest area fraction of RandomResizedCrop" + _D)
    g.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1),
                   help="data loader worker processes per loader (0: load in the main "
                        "process)" + _D)


def _model_args(g) -> None:
    g.add_argument("--arch", default="resnet50", help="torchvision model name" + _D)
    g.add_argument("--pretrained", action="store_true",
                   help="start from torchvision's ImageNet weights (downloads them)")
    g.add_argument("--epochs", type=int, default=90, help="epochs to train" + _D)
    g.add_argument("--batch-size", type=int, default=256,
                   help="images per micro-batch: scored together, the unit of selection" + _D)
    g.add_argument("--accum-steps", type=int, default=1,
                   help="micro-batches accumulated into one optimizer step" + _D)
    g.add_argument("--eval-batch-size", type=int, help="validation batch (default: 2x batch)")
    g.add_argument("--lr", type=float, default=0.1, help="peak learning rate (cosine decay)" + _D)
    g.add_argument("--warmup-epochs", type=float, default=0.0,
                   help="linear warm-up before the cosine decay" + _D)
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum" + _D)
    g.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay" + _D)
    g.add_argument("--clip", type=float, default=1.0, help="gradient norm clip" + _D)
    g.add_argument("--amp", choices=["auto", "fp16", "bf16", "off"], default="auto",
                   help="mixed precision: auto = fp16 with a GradScaler on CUDA, off on CPU" + _D)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N" + _D)
    g.add_argument("--threads", type=int,
                   help="CPU threads for torch (default: torch's choice; on a shared CPU, 1 "
                        "avoids threads spinning against each other)")
    g.add_argument("--deterministic", choices=["auto", "on", "off"], default="auto",
                   help="deterministic kernels (exact resume); auto = on for CPU, off on CUDA "
                        "where cuDNN autotuning is faster" + _D)
    g.add_argument("--seed", type=int, default=0, help="seed of init, order and augmentation" + _D)


def _ast_args(g) -> None:
    g.add_argument("--ast", choices=["on", "off"], default="on",
                   help="off = the full-batch baseline" + _D)
    c = ControllerConfig()
    g.add_argument("--ast-target", type=float, default=c.target,
                   help="target activation rate (share of samples trained on)" + _D)
    g.add_argument("--ast-kp", type=float, default=c.kp, help="proportional gain" + _D)
    g.add_argument("--ast-ki", type=float, default=c.ki, help="integral gain" + _D)
    g.add_argument("--ast-ema", type=float, default=c.ema,
                   help="weight of the newest batch in the rate's moving average" + _D)
    g.add_argument("--ast-thr-min", type=float, default=c.thr_min, help="threshold floor" + _D)
    g.add_argument("--ast-thr-max", type=float, default=c.thr_max, help="threshold cap" + _D)
    g.add_argument("--ast-thr-init", type=float,
                   help="initial threshold (default: the first batch's score quantile that "
                        "gives the target rate)")
    g.add_argument("--ast-round", type=int,
                   help="round each selection up to a multiple of this (fewer batch shapes for "
                        "cuDNN; default: 8 on CUDA, 1 on CPU)")
    g.add_argument("--baseline-results", metavar="PATH",
                   help="results.json of an --ast off run: report time ratios against it")


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on the machine or on other flags."""
    args.device = distributed.init(args.device)  # under torchrun: the process group, this rank's GPU
    args.amp = resolve_amp(args.amp, args.device)
    if args.deterministic == "auto":
        args.deterministic = "on" if args.device.type == "cpu" else "off"
    if args.ast_round is None:
        args.ast_round = 8 if args.device.type == "cuda" else 1
    if args.image_size is None:
        args.image_size = args.synthetic_size if args.synthetic else 224
    args.eval_batch_size = args.eval_batch_size or 2 * args.batch_size
    args.data_dir = Path(args.data_dir or (DEFAULT_SYNTHETIC_DATA if args.synthetic
                                           else DEFAULT_DATA))
    return args


def fingerprinted_config(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    """Everything that changes the numbers (so a resume under other values is refused); where
    files go, how often to save, workers and the baseline to compare with are left out."""
    keys = ["arch", "pretrained", "epochs", "batch_size", "accum_steps", "lr", "warmup_epochs",
            "momentum", "weight_decay", "clip", "amp", "seed", "image_size", "min_crop_scale",
            "ast", "synthetic"]
    if args.ast == "on":
        keys += ["ast_target", "ast_kp", "ast_ki", "ast_ema", "ast_thr_min", "ast_thr_max",
                 "ast_thr_init", "ast_round"]
    if args.synthetic:
        keys += ["synthetic_classes", "synthetic_train", "synthetic_val", "synthetic_size"]
    return {k: getattr(args, k) for k in keys} | {"num_classes": num_classes}


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


@torch.no_grad()
def evaluate(model, loader, device, autocast) -> dict[str, float]:
    """Top-1, top-5 and loss on the val split (val transform, eval-mode batch norm). Under
    torchrun each rank evaluates its share (``eval_batches``) with rank 0's batch-norm statistics,
    and the sums are added over the ranks."""
    distributed.sync_buffers(model)
    model.eval()
    n = top1 = top5 = 0
    loss_sum = 0.0
    for x, y in loader:
        x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with autocast():
            logits = model(x)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += int((best[:, 0] == y).sum())
        top5 += int((best == y[:, None]).any(1).sum())
        n += len(y)
    model.train()
    n, top1, top5, loss_sum = distributed.all_sum([n, top1, top5, loss_sum])
    return {"val_top1": top1 / n, "val_top5": top5 / n, "val_loss": loss_sum / n}


def load_data(args: argparse.Namespace):
    if args.synthetic and distributed.world().local_rank == 0:  # one writer per machine
        write_synthetic(args.data_dir, num_classes=args.synthetic_classes,
                        train_per_class=args.synthetic_train, val_per_class=args.synthetic_val,
                        size=args.synthetic_size, seed=args.seed)
    distributed.barrier()
    try:
        train_dir, val_dir = check_layout(args.data_dir)
        train_set = SeededImageFolder(train_dir, TrainTransform(args.image_size,
                                                                args.min_crop_scale))
        val_set = SeededImageFolder(val_dir, ValTransform(args.image_size),
                                    classes=train_set.classes)
    except (OSError, ValueError) as e:
        raise HarnessError(str(e)) from e
    if len(val_set) == 0:
        raise HarnessError(f"{val_dir} holds no images")
    return train_set, val_set


class Trainer:
    """The model and everything that steps it; one ``step`` is one optimizer step."""

    def __init__(self, args: argparse.Namespace, num_classes: int, steps_per_epoch: int,
                 sampler: ResumableSampler):
        self.args, self.sampler = args, sampler
        self.model = build_model(args.arch, num_classes, args.pretrained).to(
            args.device, memory_format=torch.channels_last)
        self.net = self.model  # what trains: DistributedDataParallel(model) under torchrun
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=args.lr,
                                         momentum=args.momentum, weight_decay=args.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_with_warmup(
            args.epochs * steps_per_epoch, round(args.warmup_epochs * steps_per_epoch)))
        self.scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None
        self.autocast = autocast_for(args.amp, args.device)
        self.controller = None
        if args.ast == "on":
            self.controller = PIController(ControllerConfig(
                target=args.ast_target, kp=args.ast_kp, ki=args.ast_ki, ema=args.ast_ema,
                thr_min=args.ast_thr_min, thr_max=args.ast_thr_max, thr_init=args.ast_thr_init))
        self.clock = report.EpochClock()

    def extra_state(self) -> dict[str, Any]:
        """The trainer's part of the checkpoint: the controller and the epoch's clock."""
        return {"clock": self.clock.state_dict(),
                "controller": self.controller.state_dict() if self.controller else None}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        self.clock.load_state_dict(extra["clock"])
        if self.controller is not None:
            self.controller.load_state_dict(extra["controller"])

    def start_epoch(self) -> None:
        self.clock.reset()
        if self.controller is not None:
            self.controller.start_epoch()

    def step(self, group) -> dict[str, float]:
        """One optimizer step over the micro-batches in ``group``: accumulate, clip, step.
        Returns the step's scalars for the log (loss and accuracy over every sample seen)."""
        args, opt = self.args, self.optimizer
        opt.zero_grad(set_to_none=True)
        st = MicroStats()
        for x, y in group:
            x = x.to(args.device, non_blocking=True, memory_format=torch.channels_last)
            y = y.to(args.device, non_blocking=True)
            st.add(micro_step(self.net, x, y, controller=self.controller,
                              autocast=self.autocast, scaler=self.scaler,
                              loss_weight=1.0 / len(group), round_to=args.ast_round))
            self.sampler.advance(len(y))  # consumed (workers have read further ahead); on every rank
        optimizer_step(opt, self.model.parameters(), self.scaler, args.clip)
        self.scheduler.step()
        if args.device.type == "cuda":
            torch.cuda.synchronize()  # the clock measures finished work
        self.clock.lap(st.seen, st.selected)
        scalars = {"loss": st.loss_sum / st.seen, "acc": st.correct / st.seen,
                   "activation": st.selected / st.seen}
        if self.controller is not None:
            scalars["thr"] = st.thr
        return scalars | {"n": st.seen}

    def epoch_metrics(self, eval_seconds: float) -> dict[str, Any]:
        c = self.clock
        seen, trained = (int(v) for v in distributed.all_sum([c.seen, c.trained]))  # every rank's
        rate = trained / seen if seen else float("nan")
        out = {"activation_rate": round(rate, 5), "skipped_fraction": round(1 - rate, 5),
               "samples_seen": seen, "samples_trained": trained,
               "train_time": round(c.seconds, 3), "train_cpu_time": round(c.cpu_seconds, 3),
               "eval_time": round(eval_seconds, 3),
               "images_per_s": round(seen / c.seconds, 2) if c.seconds else None}
        if self.controller is not None:
            out |= {"thr": self.controller.thr, "activation_target": self.args.ast_target}
        return out


def main(argv: Sequence[str] | None = None) -> dict:
    args = resolve(parse_args(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic == "on":
        enable_determinism(args.seed)
        if args.device.type == "cuda":
            # ResNet's adaptive average pool has no deterministic CUDA backward; raising on it
            # would make the flag unusable there, so on CUDA it is deterministic where torch can.
            torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        seed_everything(args.seed)
        torch.backends.cudnn.benchmark = True
    train_set, val_set = load_data(args)
    num_classes = len(train_set.classes)
    try:
        baseline = report.load_baseline(args.baseline_results)
    except ValueError as e:
        raise HarnessError(str(e)) from e
    pin = args.device.type == "cuda"
    sampler = ResumableSampler(len(train_set), seed=args.seed)
    train_loader = make_loader(train_set, EpochBatches(sampler, args.batch_size, args.seed),
                               args.workers, pin)
    val_loader = make_loader(val_set, eval_batches(len(val_set), args.eval_batch_size),
                             args.workers, pin)  # this rank's share
    steps_per_epoch = math.ceil(len(epoch_plan(sampler.epoch_size, args.batch_size, sampler.world_size))
                                / args.accum_steps)
    t = Trainer(args, num_classes, steps_per_epoch, sampler)

    with Harness.from_args(args, name=NAME, config=fingerprinted_config(args, num_classes),
                           total_epochs=args.epochs, steps_per_epoch=steps_per_epoch,
                           best=("val_top1", "max")) as h:
        h.track(model=t.model, optimizer=t.optimizer, scheduler=t.scheduler, scaler=t.scaler,
                sampler=sampler)
        if h.resume():
            t.load_extra_state(h.extra)
        t.net = distributed.parallel(t.model)  # DDP on several processes
        h.say(f"{args.arch} on {args.device} ({args.amp} AMP, deterministic "
              f"{args.deterministic}), {len(train_set)} train / {len(val_set)} val images in "
              f"{num_classes} classes, AST {args.ast}"
              + (f" (target {args.ast_target})" if t.controller else ""))
        for _epoch in h.epochs():
            if h.batch_in_epoch == 0:
                t.start_epoch()
            t.model.train()
            micro_batches = iter(train_loader)  # the rest of the epoch, from sampler.position
            t.clock.start()
            while group := list(itertools.islice(micro_batches, args.accum_steps)):
                scalars = t.step(group)
                h.extra = t.extra_state()  # before step_done, which may checkpoint
                h.step_done(**scalars)
                t.clock.start()  # a checkpoint snapshot in step_done is not training time
            t0 = time.perf_counter()
            metrics = evaluate(t.model, val_loader, args.device, t.autocast)
            metrics |= t.epoch_metrics(time.perf_counter() - t0)
            metrics |= report.baseline_row(baseline, h.epoch + 1)
            metrics |= report.time_ratios(h.history, metrics, baseline)
            h.extra = t.extra_state()
            h.epoch_done(metrics)
        results = report.summary(h.history, baseline, t.extra_state()["controller"])
        results |= {"device": str(args.device), "num_classes": num_classes,
                    "train_samples": len(train_set), "val_samples": len(val_set)}
        return h.finish(results, panels=report.PANELS)
