"""HAM10000: ResNet-50, EfficientNet-B3, DenseNet-121 and ViT-B/16 trained in turn on one
lesion-grouped split, each calibrated, measured and explained on validation. Resumable to the
bit at any step of any architecture.

Run ``python -m trainers.ham10000 --help``. ``--synthetic`` writes a small data set in the real
layout and trains on it through the same code (CPU-sized, seconds per architecture).

One harness run covers every architecture: harness epoch ``e`` is epoch ``e % epochs`` of
architecture ``e // epochs``. When an architecture's last epoch has been evaluated, its analysis
(temperature, metrics, predictions, Grad-CAM maps) and its final weights go into the trainer's
checkpoint state, the next architecture is built, and only then is the epoch's checkpoint taken;
so a checkpoint always holds the architecture it names, and a resume builds that one first.

Under ``torchrun --nproc_per_node N`` each rank trains on its shard of every step (DDP, the
batch size is per process), rank 0 writes checkpoints and outputs. Each rank evaluates its share
of the validation split with rank 0's batch-norm statistics; the logits are gathered in order on
every rank, so every rank holds the same analysis.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from trainers.common import (Harness, HarnessError, add_harness_args, distributed,
                             enable_determinism, seed_everything)
from trainers.common.amp import autocast_for, resolve_amp
from trainers.common.checkpoint import peek_extra
from trainers.common.loading import epoch_plan, eval_batches, make_loader
from trainers.ham10000 import evaluate as ev
from trainers.ham10000 import report
from trainers.ham10000.data import (CLASSES, SPLIT_NAME, ArchSampler, DataError, EpochBatches,
                                    LesionImages, TrainTransform, balance_weights, lesion_split,
                                    loss_weights, read_metadata, val_transform,
                                    write_split)
from trainers.ham10000.model import ARCHS, build_model, param_count
from trainers.ham10000.synthetic import write_synthetic

NAME = "ham10000"
DEFAULT_DATA = "data/ham10000"
DEFAULT_SYNTHETIC_DATA = "data/ham10000-synthetic"
_D = " (default: %(default)s)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trainers.ham10000", allow_abbrev=False,
        description="Train and compare four torchvision architectures on HAM10000 (lesion-"
                    "grouped split, temperature scaling, Grad-CAM), resumable exactly.")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", metavar="DIR",
                   help=f"folder with HAM10000_metadata.csv and the image folders (default: "
                        f"{DEFAULT_DATA}, or {DEFAULT_SYNTHETIC_DATA} with --synthetic)")
    g.add_argument("--synthetic", action="store_true",
                   help="write a small data set in the real layout to --data-dir, train on it")
    g.add_argument("--synthetic-lesions", type=int, default=60,
                   help="lesions in the synthetic set (1-4 images each)" + _D)
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of lesions in the validation split" + _D)
    g.add_argument("--image-size", type=int, default=224, help="training image side" + _D)
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="data loader worker processes (0: the main process)" + _D)
    g.add_argument("--cam-images", type=int, default=7,
                   help="validation images in the Grad-CAM grid (one per class first)" + _D)
    m = p.add_argument_group("models and optimisation")
    m.add_argument("--archs", default=",".join(ARCHS),
                   help="comma list of torchvision models, trained in this order" + _D)
    m.add_argument("--pretrained", action="store_true",
                   help="start from torchvision's ImageNet weights (downloads them)")
    m.add_argument("--epochs", type=int, default=20, help="epochs per architecture" + _D)
    m.add_argument("--batch-size", type=int, default=32,
                   help="images per step on each process (torchrun: the global batch is N times it)" + _D)
    m.add_argument("--eval-batch-size", type=int, default=64, help="validation batch" + _D)
    m.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate" + _D)
    m.add_argument("--balance", choices=["none", "sampler", "loss"], default="none",
                   help="class balance: draw classes equally often, or weight the loss by "
                        "inverse class frequency" + _D)
    m.add_argument("--amp", choices=["auto", "fp16", "bf16", "off"], default="auto",
                   help="mixed precision: auto = fp16 with a GradScaler on CUDA, off on CPU" + _D)
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N" + _D)
    m.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    m.add_argument("--deterministic", choices=["auto", "on", "off"], default="auto",
                   help="deterministic kernels (exact resume); auto = on for CPU" + _D)
    m.add_argument("--seed", type=int, default=42, help="seed of split, init, order, "
                                                        "augmentation" + _D)
    add_harness_args(p, ckpt_every=200, log_every=20)
    args = p.parse_args(argv)
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    if not args.archs or len(set(args.archs)) != len(args.archs):
        p.error("--archs must name at least one architecture, each once")
    if min(args.epochs, args.batch_size - 1, args.image_size, args.eval_batch_size) < 1:
        p.error("--epochs, --image-size, --eval-batch-size must be >= 1, --batch-size >= 2")
    if not 0 < args.val_fraction < 1:
        p.error("--val-fraction must be between 0 and 1")
    return args


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    try:  # under torchrun: the process group, and this rank's GPU
        args.device = distributed.init(args.device)
    except (ValueError, RuntimeError) as e:  # no GPU for --device cuda, a device torch does not know
        raise HarnessError(str(e)) from e
    try:
        args.amp = resolve_amp(args.amp, args.device)
    except ValueError as e:
        raise HarnessError(str(e)) from e
    if args.deterministic == "auto":
        args.deterministic = "on" if args.device.type == "cpu" else "off"
    args.data_dir = Path(args.data_dir or (DEFAULT_SYNTHETIC_DATA if args.synthetic
                                           else DEFAULT_DATA))
    return args


def fingerprinted_config(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that changes the numbers; paths, workers and save frequency are left out."""
    keys = ["archs", "pretrained", "epochs", "batch_size", "lr", "balance", "amp", "seed",
            "image_size", "val_fraction", "synthetic", "cam_images"]
    if args.synthetic:
        keys.append("synthetic_lesions")
    return {k: getattr(args, k) for k in keys}


def load_data(args: argparse.Namespace):
    """Records, their split (``"train"``/``"val"`` each) and the two datasets."""
    try:
        try:
            if args.synthetic and distributed.world().local_rank == 0:  # one writer per machine
                write_synthetic(args.data_dir, lesions=args.synthetic_lesions,
                                width=max(32, args.image_size), seed=args.seed)
        finally:
            distributed.barrier()  # also when it failed: the others would wait for it forever
        records = read_metadata(args.data_dir)
        split = lesion_split(records, args.val_fraction, args.seed)
    except DataError as e:
        raise HarnessError(str(e)) from None
    train = [r for r, s in zip(records, split) if s == "train"]
    val = [r for r, s in zip(records, split) if s == "val"]
    if len(train) < 2 or len(val) < distributed.world().size:
        raise HarnessError(f"{args.data_dir}: {len(train)} training and {len(val)} validation "
                           f"images after the lesion split; need more lesions")
    return records, split, (LesionImages(train, args.image_size, TrainTransform()),
                            LesionImages(val, args.image_size, val_transform))


def cam_indices(val_records, n: int) -> list[int]:
    """A fixed set of validation images: the first of each class (in CLASSES order), then the
    next ones in split order, ``n`` in all."""
    first = []
    for c in CLASSES:
        idx = next((i for i, r in enumerate(val_records) if r.dx == c), None)
        if idx is not None:
            first.append(idx)
    rest = [i for i in range(len(val_records)) if i not in first]
    return (first + rest)[:n]


def peek_arch(ckpt_root: Path) -> int:
    """The architecture index the latest verified checkpoint is in (0 without one)."""
    extra = peek_extra(ckpt_root)
    return 0 if extra is None else int(extra["arch_index"])


class Arch:
    """One architecture's model, optimizer, scaler and loss, built from its own seed (so its
    initial weights do not depend on what ran before it). ``net`` is what trains: the model
    itself, or under torchrun ``DistributedDataParallel(model)``; the harness tracks the bare
    model, and evaluation and Grad-CAM use it."""

    def __init__(self, args: argparse.Namespace, index: int, class_weights):
        self.name, self.index = args.archs[index], index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed + 1000 * (index + 1))
            try:
                model = build_model(self.name, len(CLASSES), args.pretrained, args.image_size)
            except ValueError as e:
                raise HarnessError(str(e)) from e
        self.model = model.to(args.device)
        self.net = distributed.parallel(self.model)  # the same weights on every rank (one seed)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None
        self.autocast = autocast_for(args.amp, args.device)
        self.class_weights = None if class_weights is None else class_weights.to(args.device)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.net(x)
        loss = F.cross_entropy(logits.float(), y, weight=self.class_weights)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return {"loss": float(loss.detach()), "acc": float((logits.argmax(1) == y).float().mean())}


def batches(loader):
    """The loader's batches; a bad image met by a worker becomes the one-line DataError it
    raised (a DataLoader re-raises a worker's error with the worker's traceback in its text)."""
    try:
        yield from loader
    except Exception as e:
        lines = str(e).strip().splitlines() or [""]
        if not (isinstance(e, DataError) or "DataError: " in lines[-1]):
            raise
        raise DataError(lines[-1].split("DataError: ", 1)[-1]) from None


def finish_arch(args, arch: Arch, logits, labels, val_set, cam_idx,
                seconds: float) -> dict[str, Any]:
    """The finished architecture's record: analysis, predictions, Grad-CAM maps, weights."""
    result = ev.analyse(logits, labels)
    images = torch.stack([val_set[i][0] for i in cam_idx]).to(args.device)
    cams = ev.gradcam_maps(arch.model, arch.name, images)
    result |= {"arch": arch.name, "params": param_count(arch.model), "epochs": args.epochs,
               "train_time": round(seconds, 3)}
    return {"result": result, "logits": logits, "labels": labels, "cams": cams,
            "weights": {k: v.detach().cpu().clone()
                                         for k, v in arch.model.state_dict().items()}}


def configure(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic == "on":
        enable_determinism(args.seed)
        if args.device.type == "cuda":  # some CUDA backward kernels have no deterministic form
            torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        seed_everything(args.seed)
        torch.backends.cudnn.benchmark = True


def main(argv: Sequence[str] | None = None) -> dict:
    args = resolve(parse_args(argv))
    configure(args)
    records, split, (train_set, val_set) = load_data(args)
    n_arch = len(args.archs)
    weights = balance_weights(train_set.records) if args.balance == "sampler" else None
    sampler = ArchSampler(len(train_set), args.seed, args.epochs, weights)  # this rank's shard
    pin = args.device.type == "cuda"
    train_loader = make_loader(train_set, EpochBatches(sampler, args.batch_size, args.seed),
                               args.workers, pin)
    val_loader = make_loader(val_set, eval_batches(len(val_set), args.eval_batch_size),
                             args.workers, pin)  # this rank's share; collect_logits gathers
    class_weights = loss_weights(train_set.records) if args.balance == "loss" else None
    cam_idx = cam_indices(val_set.records, args.cam_images)
    steps_per_epoch = len(epoch_plan(sampler.epoch_size, args.batch_size, sampler.world_size))

    with Harness.from_args(args, name=NAME, config=fingerprinted_config(args),
                           total_epochs=n_arch * args.epochs,
                           steps_per_epoch=steps_per_epoch) as h:
        if h.main:  # rank 0 writes the outputs
            write_split(h.out_dir / SPLIT_NAME, records, split)
        # Rank 0's checkpoint is the one resumed (another node's folder may hold another).
        first = distributed.broadcast(min(peek_arch(h.ckpt_root), n_arch - 1) if h.main else None)
        arch = Arch(args, first, class_weights)
        h.track(model=arch.model, optimizer=arch.optimizer, scaler=arch.scaler, sampler=sampler)
        h.extra = {"arch_index": arch.index, "arch_train_time": 0.0, "finished": {}}
        h.resume()
        extra = h.extra  # updated in place from here on: every checkpoint takes it as it is
        outputs = report.Outputs(h.out_dir, args.archs, val_set.records, cam_idx,
                                 args.image_size, plot=h.plot)
        h.say(f"{', '.join(args.archs)} on {args.device} ({args.amp} AMP, deterministic "
              f"{args.deterministic}), {len(train_set)} train / {len(val_set)} val images "
              f"({len({r.lesion_id for r in train_set.records})} / "
              f"{len({r.lesion_id for r in val_set.records})} lesions), balance {args.balance}")
        try:
            for epoch in h.epochs():
                if epoch // args.epochs != arch.index:
                    raise HarnessError(f"the checkpoint names architecture {arch.index} at "
                                       f"epoch {epoch}: inconsistent state")
                arch.model.train()
                t0 = time.perf_counter()
                for x, y in batches(train_loader):
                    x = x.to(args.device, non_blocking=True)
                    y = y.to(args.device, non_blocking=True)
                    scalars = arch.step(x, y)
                    sampler.advance(len(y))  # consumed (workers read further ahead); on every rank
                    extra["arch_train_time"] += time.perf_counter() - t0
                    h.step_done(n=len(y), **scalars)
                    t0 = time.perf_counter()
                logits, labels = ev.collect_logits(arch.model, batches(val_loader), args.device,
                                                   arch.autocast, len(val_set))
                metrics = epoch_metrics(arch, epoch % args.epochs, logits, labels)
                if epoch % args.epochs == args.epochs - 1:  # the architecture is done
                    done = finish_arch(args, arch, logits, labels, val_set, cam_idx,
                                       extra["arch_train_time"])
                    extra["finished"][arch.name] = done
                    if h.main:
                        outputs.write(extra["finished"], h.history + [metrics])
                    h.say(f"{arch.name} done: {report.one_line(done['result'])}")
                    if arch.index + 1 < n_arch:  # built before the epoch's checkpoint
                        arch = Arch(args, arch.index + 1, class_weights)
                        h.track(model=arch.model, optimizer=arch.optimizer, scaler=arch.scaler,
                                sampler=sampler)
                        extra.update(arch_index=arch.index, arch_train_time=0.0)
                h.epoch_done(metrics)
        except DataError as e:
            raise HarnessError(str(e)) from None
        comparison = outputs.write(extra["finished"], h.history) if h.main else None
        return h.finish({"comparison": comparison, "device": str(args.device),
                         "train_images": len(train_set), "val_images": len(val_set)},
                        panels=report.PANELS)


def epoch_metrics(arch: Arch, local_epoch: int, logits, labels) -> dict[str, Any]:
    probs = ev.probabilities(logits)
    m = ev.classification_metrics(probs, labels)
    return {"arch": arch.name, "arch_epoch": local_epoch + 1, "val_loss": ev.nll(logits, labels),
            "val_acc": m["accuracy"], "val_balanced_acc": m["balanced_accuracy"],
            "val_macro_f1": m["macro_f1"], "val_auc_macro": m["roc_auc_macro"]}
