"""Train the graph-diffusion patch denoiser on CIFAR-10, judged against classic denoisers.

Run ``python -m trainers.denoise --help``. Each step draws fresh Gaussian noise of std ``--sigma``
(0-255 scale) for a batch of clean training images and moves the diffusion's parameters down the
gradient of the MSE between its output and the clean images. Each epoch scores ours (PSNR, SSIM)
on the validation images with noise fixed per image, next to the noisy input, a Gaussian blur and
a bilateral filter whose widths were fitted on training pairs, and non-local means; at the end
the same methods also run on real photographs that ship with scikit-image (not CIFAR-10), and
everything goes into ``results.json``.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from trainers.common import Harness, ResumableSampler, add_harness_args
from trainers.common import enable_determinism
from trainers.denoise import baselines, data, report
from trainers.denoise.apply import TRAINER
from trainers.denoise.model import DiffusionConfig, build

PANELS = [("MSE loss", ["train_loss", "val_loss"]),
          ("validation PSNR (dB)", ["val_psnr", "noisy_psnr", "gaussian_blur_psnr",
                                    "bilateral_psnr", "nl_means_psnr"]),
          ("validation SSIM", ["val_ssim", "nl_means_ssim", "gaussian_blur_ssim"]),
          ("diffusion step size tau", ["tau_0", "tau_1", "tau_2"]),
          ("patch width sigma / noise", ["sigma_0", "sigma_1", "sigma_2"]),
          ("spatial width, radius (px)", ["sigma_s", "radius"])]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trainers.denoise", allow_abbrev=False,
        description="Graph diffusion over overlapping patches, its parameters learned by "
                    "gradient descent, on CIFAR-10 with Gaussian noise; exact resume.")
    d = " (default: %(default)s)"
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default="data",
                   help="folder holding cifar-10-batches-py/ (or that folder itself)" + d)
    g.add_argument("--synthetic", action="store_true",
                   help="first write generated natural-looking images there as CIFAR-10 batches")
    g.add_argument("--synthetic-train", type=int, default=512, help="generated training images" + d)
    g.add_argument("--synthetic-test", type=int, default=128, help="generated test images" + d)
    g.add_argument("--train-size", type=int, default=0,
                   help="use only the first N training images (0: all)" + d)
    g.add_argument("--val-size", type=int, default=500, help="validation images (test split)" + d)
    g.add_argument("--sigma", type=float, default=25.0, help="noise std, 0-255 scale" + d)
    g.add_argument("--no-photos", action="store_true",
                   help="skip the final evaluation on scikit-image's photographs")
    g = p.add_argument_group("model")
    c = DiffusionConfig()
    g.add_argument("--patch", type=int, default=c.patch, help="patch side" + d)
    g.add_argument("--stride", type=int, default=c.stride, help="patch grid stride" + d)
    g.add_argument("--steps", type=int, default=c.steps, help="diffusion steps" + d)
    g.add_argument("--reaggregate", action="store_true",
                   help="average the patches back into an image between steps (each step then "
                        "runs per pixel, in far less memory than on the patches)")
    g.add_argument("--max-radius", type=float, default=c.max_radius,
                   help="neighbourhood bound in pixels (the learned radius stays below)" + d)
    g.add_argument("--no-attention", action="store_true", help="no attention over the edges")
    g.add_argument("--heads", type=int, default=c.heads, help="attention heads" + d)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=10, help="epochs" + d)
    g.add_argument("--batch-size", type=int, default=32, help="images per step" + d)
    g.add_argument("--lr", type=float, default=0.02, help="Adam learning rate" + d)
    g.add_argument("--seed", type=int, default=0, help="seed of everything random" + d)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto = cuda when available" + d)
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    add_harness_args(p, ckpt_every=50, log_every=10)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.sigma <= 0 or args.val_size < 1:
        p.error("--epochs, --batch-size and --val-size must be >= 1 and --sigma > 0")
    if args.patch < 2 or args.stride < 1 or args.stride > args.patch or args.steps < 1:
        p.error("need --patch >= 2, 1 <= --stride <= --patch and --steps >= 1")
    return args


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    c = DiffusionConfig(patch=args.patch, stride=args.stride, steps=args.steps,
                        max_radius=args.max_radius, attention=not args.no_attention,
                        heads=args.heads, reaggregate=args.reaggregate)
    c.init_radius = min(c.init_radius, 0.95 * c.max_radius)
    return c.to_dict()


def learned_scalars(model) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in model.learned().items():
        if isinstance(value, list):
            out.update({f"{name}_{i}": v for i, v in enumerate(value)})
        else:
            out[name] = value
    return out


@torch.no_grad()
def evaluate(model, noisy: torch.Tensor, clean: torch.Tensor, sigma: float,
             batch_size: int = 128) -> tuple[dict[str, float], torch.Tensor]:
    model.eval()
    out = torch.cat([model(noisy[i:i + batch_size], sigma)
                     for i in range(0, len(noisy), batch_size)])
    model.train()
    s = baselines.score(out, clean)
    return {"val_loss": round(float(F.mse_loss(out, clean)), 7), "val_psnr": s["psnr"],
            "val_ssim": s["ssim"]}, out


def classic_scores(split: data.Split, val_noisy: torch.Tensor, sigma: float,
                   seed: int) -> dict[str, Any]:
    """Fit the blur and the bilateral filter on noisy/clean training pairs (their own noise),
    then score every classic method on the validation images once."""
    fit_clean = split.train[:256]
    fit_noisy = fit_clean + data.fixed_noise(fit_clean.shape, sigma, seed + 1)
    fitted = baselines.fit_all(fit_noisy, fit_clean)
    scores = {name: baselines.score(out, split.val)
              for name, out in baselines.run_all(val_noisy, fitted).items()}
    return {"fitted": fitted, "val": scores}


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sigma = args.sigma / 255.0
    mcfg = model_config(args)
    config = {"sigma": args.sigma, "epochs": args.epochs, "batch_size": args.batch_size,
              "lr": args.lr, "seed": args.seed, "train_size": args.train_size,
              "val_size": args.val_size, "synthetic": args.synthetic, "model": mcfg}
    enable_determinism(args.seed)
    counts = (args.synthetic_train, args.synthetic_test) if args.synthetic else None
    split = data.load(args.data_dir, synthetic_counts=counts, seed=args.seed,
                      train_size=args.train_size, val_size=args.val_size)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    val_noisy = split.val + data.fixed_noise(split.val.shape, sigma, args.seed)
    train_x, val_x, val_noisy_d = (split.train.to(device), split.val.to(device),
                                   val_noisy.to(device))
    steps_per_epoch = math.ceil(len(train_x) / args.batch_size)

    torch.manual_seed(args.seed)
    model = build(mcfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    sampler = ResumableSampler(len(train_x), seed=args.seed)

    with Harness.from_args(args, name=TRAINER, config=config, total_epochs=args.epochs,
                           steps_per_epoch=steps_per_epoch, best=("val_psnr", "max")) as h:
        h.track(model=model, optimizer=optimizer, sampler=sampler)
        h.resume()
        if "classic" not in h.extra:  # deterministic, but minutes on a full split: once per job
            h.say("fitting and scoring the classic denoisers on the validation images")
            h.extra.update(trainer=TRAINER, model=mcfg,
                           classic=classic_scores(split, val_noisy, sigma, args.seed))
        classic = h.extra["classic"]
        flat_classic = {f"{name}_{k}": v for name, s in classic["val"].items()
                        for k, v in s.items()}
        for _epoch in h.epochs():
            model.train()
            for idx in sampler.batches(args.batch_size):
                clean = train_x[idx]
                flip = torch.rand(len(idx), device=device) < 0.5
                clean = torch.where(flip[:, None, None, None], clean.flip(3), clean)
                noisy = clean + torch.randn_like(clean) * sigma
                loss = F.mse_loss(model(noisy, sigma), clean)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                h.step_done(n=len(idx), loss=loss.item(), **learned_scalars(model))
            metrics, _ = evaluate(model, val_noisy_d, val_x, sigma)
            h.epoch_done({**metrics, **flat_classic, **learned_scalars(model)})
        results = summarise(h, model, split, val_noisy, sigma, classic, args)
        if h.plot:
            report.figures(h.history, model, split, val_noisy, sigma, classic["fitted"],
                           h.out_dir)
        return h.finish(results, panels=PANELS)


def summarise(h: Harness, model, split: data.Split, val_noisy: torch.Tensor, sigma: float,
              classic: dict, args: argparse.Namespace) -> dict[str, Any]:
    model_cpu = copy.deepcopy(model).to("cpu")  # the tracked model stays where it trains
    metrics, _ = evaluate(model_cpu, val_noisy, split.val, sigma)
    val = {"ours": {"psnr": metrics["val_psnr"], "ssim": metrics["val_ssim"]}, **classic["val"]}
    out: dict[str, Any] = {
        "sigma": args.sigma, "learned": model_cpu.learned(), "fitted": classic["fitted"],
        "validation": val, "val_images": len(split.val), "train_images": len(split.train),
        "gain_over_noisy_db": round(val["ours"]["psnr"] - val["noisy"]["psnr"], 4),
        "parameters": sum(p.numel() for p in model_cpu.parameters()),
    }
    if not args.no_photos:
        t0 = time.perf_counter()
        out["photographs"] = report.photographs(model_cpu, sigma, classic["fitted"], args.seed)
        h.say(f"photographs scored in {time.perf_counter() - t0:.1f}s")
    return out

