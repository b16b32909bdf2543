"""Quickstart: train a small CNN on synthetic images, resumable at any step.

Run ``python -m trainers.quickstart --help``; on several processes
``torchrun --nproc_per_node 2 -m trainers.quickstart`` (``--batch-size`` is per process). Under ``launch`` the checkpoint and output folders
come from the environment (``launcher.contract``); run by hand they default to ./checkpoints and
./outputs. Running it again after it finished finds the final checkpoint and only rewrites the
outputs.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import torch
import torch.nn.functional as F

from trainers.common import Harness, ResumableSampler, add_harness_args, distributed, enable_determinism
from trainers.quickstart.data import make_images, split
from trainers.quickstart.model import SmallCNN

PANELS = [("loss", ["train_loss", "val_loss"]), ("validation accuracy", ["val_acc"]),
          ("learning rate", ["lr"]), ("seconds per epoch", ["epoch_time"])]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trainers.quickstart", allow_abbrev=False,
        description="Train a small CNN on synthetic class-structured images (CPU-sized), "
                    "with exact resume after preemption.")
    d = " (default: %(default)s)"
    p.add_argument("--epochs", type=int, default=5, help="epochs to train" + d)
    p.add_argument("--batch-size", type=int, default=64,
                   help="training batch size of each process (under torchrun)" + d)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (cosine decay)" + d)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd",
                   help="SGD with Nesterov momentum 0.9, or Adam" + d)
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay" + d)
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data, the model init and the sample order" + d)
    p.add_argument("--num-samples", type=int, default=8000,
                   help="images generated, training and validation together" + d)
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the images held out for validation" + d)
    p.add_argument("--image-size", type=int, default=32, help="image side in pixels" + d)
    p.add_argument("--noise", type=float, default=1.5,
                   help="std of the noise added to each class pattern" + d)
    p.add_argument("--width", type=int, default=32, help="channels of the first conv block" + d)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to train; auto = cuda when available. Resume is bit-identical "
                        "on the same kind of device" + d)
    add_harness_args(p, ckpt_every=25, log_every=10)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.num_samples < 10:
        p.error("--epochs and --batch-size must be >= 1, --num-samples >= 10")
    return args


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flips, drawn from the global RNG (restored by the checkpoint)."""
    flip = torch.rand(len(x), device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 256) -> dict[str, float]:
    """Loss and accuracy on the held-out split. Eval mode draws nothing from any RNG."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(labels), batch_size):
        logits = model(images[i:i + batch_size])
        y = labels[i:i + batch_size]
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    model.train()
    return {"val_loss": loss_sum / len(labels), "val_acc": correct / len(labels)}


def build_optimizer(args: argparse.Namespace, model: torch.nn.Module) -> torch.optim.Optimizer:
    if args.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                           weight_decay=args.weight_decay)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    # Everything that changes the numbers is in the config, and so in its fingerprint; where the
    # files go, how often to save and the device are not (changing them must not block a resume:
    # the next attempt may land on another kind of machine).
    config = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "optimizer",
                                            "weight_decay", "seed", "num_samples", "val_fraction",
                                            "image_size", "noise", "width")}
    enable_determinism(args.seed)

    images, labels = make_images(args.num_samples, args.seed, size=args.image_size,
                                 noise=args.noise)
    device = distributed.init(args.device)  # under torchrun: the process group, this rank's GPU
    images, labels = images.to(device), labels.to(device)  # small enough to live on the device
    (train_x, train_y), (val_x, val_y) = split(images, labels, args.val_fraction)
    sampler = ResumableSampler(len(train_y), seed=args.seed)  # this rank's shard of one order
    steps_per_epoch = sampler.steps_per_epoch(args.batch_size)

    model = SmallCNN(width=args.width).to(device)
    optimizer = build_optimizer(args, model)
    # Cosine decay per step over the whole run: the schedule's position is part of the checkpoint.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer,
                                                           T_max=args.epochs * steps_per_epoch)

    with Harness.from_args(args, name="quickstart", config=config, total_epochs=args.epochs,
                           steps_per_epoch=steps_per_epoch, best=("val_acc", "max")) as h:
        h.track(model=model, optimizer=optimizer, scheduler=scheduler, sampler=sampler)
        h.resume()
        net = distributed.parallel(model)  # DDP on several processes; the model itself on one
        for _epoch in h.epochs():
            model.train()
            for idx in sampler.batches(args.batch_size):
                loss = F.cross_entropy(net(augment(train_x[idx])), train_y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                h.step_done(n=len(idx), loss=loss.item())
            h.epoch_done(evaluate(model, val_x, val_y))
        return h.finish({"val_acc": h.metrics.get("val_acc"), "chance_acc": 1 / 10,
                         "train_samples": len(train_y), "val_samples": len(val_y)}, panels=PANELS)
