"""Binary latent diffusion on one CIFAR-10 class: a binary autoencoder, then one conditional RBM
per timestep of a bit-flip diffusion over its codes. Resumable to the bit at any step.

Run ``python -m trainers.dbn --help``; ``--synthetic`` writes generated images as real CIFAR-10
batches and trains on them through the same loader (CPU-sized, a minute or so).

One harness run holds every stage. Harness epoch e is autoencoder epoch e while
``e < ae_epochs``, then epoch ``(e - ae_epochs) % E`` of timestep ``(e - ae_epochs) // E + 1``
(E = ``--epochs-per-timestep``), so the resume unit (stage, timestep, epoch, position in the
epoch) is the harness's own (epoch, position); the persistent chains are a buffer of the model
and the random generators are the harness's. When a stage ends, the next one is set up (codes
written into the trainer state, the next RBM initialised, chains zeroed, a fresh AdamW) before
that epoch's checkpoint, so a checkpoint always holds the stage it names. RBM epochs are short:
inside a timestep only every ``--ckpt-every`` steps is a checkpoint taken, and at its end.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from trainers.common import (Harness, HarnessError, ResumableSampler, add_harness_args,
                             enable_determinism)
from trainers.common.checkpoint import check_trainer, peek_state
from trainers.common.state import KEY_EXTRA
from trainers.dbn import data, diffusion, report
from trainers.dbn.model import ModelConfig, build
from trainers.dbn.rbm import linear_decay, make_optimizer

NAME = "dbn"
EVAL_DRAWS = 4  # pairs drawn per scored code (each with its own noise and flipped bit)
_D = " (default: %(default)s)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trainers.dbn", allow_abbrev=False,
        description="Binary latent diffusion: a binary autoencoder on one CIFAR-10 class, then "
                    "one conditional RBM per timestep of a bit-flip diffusion over its codes, "
                    "trained by persistent contrastive divergence; resumable exactly.",
        epilog="example: python -m trainers.dbn --synthetic --data-dir /tmp/dbn-data "
               "--timesteps 4 --epochs-per-timestep 5 --output-dir out --checkpoint-dir ckpt")
    c = ModelConfig()
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default="data",
                   help="folder holding cifar-10-batches-py/ (or that folder itself)" + _D)
    g.add_argument("--class", dest="cls", default="airplane", metavar="NAME",
                   help="the CIFAR-10 class to model (airplane, automobile, ..., truck)" + _D)
    g.add_argument("--synthetic", action="store_true",
                   help="first write generated images of ten kinds there as CIFAR-10 batches")
    g.add_argument("--synthetic-train", type=int, default=200,
                   help="generated training images per class" + _D)
    g.add_argument("--synthetic-test", type=int, default=50,
                   help="generated test (held-out) images per class" + _D)
    g.add_argument("--train-size", type=int, default=0,
                   help="use only the class's first N training images (0: all)" + _D)
    g.add_argument("--heldout-size", type=int, default=0,
                   help="use only the class's first N test images (0: all)" + _D)
    g = p.add_argument_group("binary autoencoder (the first stage)")
    g.add_argument("--ae-epochs", type=int, default=30, help="epochs" + _D)
    g.add_argument("--ae-width", type=int, default=c.width, help="channels of the first conv" + _D)
    g.add_argument("--code-channels", type=int, default=c.code_channels,
                   help="bits per cell of the 4x4 code grid (code bits = 16 x this)" + _D)
    g.add_argument("--ae-lr", type=float, default=2e-3, help="Adam learning rate" + _D)
    g = p.add_argument_group("diffusion and RBMs")
    g.add_argument("--timesteps", type=int, default=50, help="T, one RBM each" + _D)
    g.add_argument("--epochs-per-timestep", type=int, default=100, help="RBM epochs each" + _D)
    g.add_argument("--schedule", choices=diffusion.SCHEDULES, default="cosine",
                   help="flip schedule; cosine ends at flip probability 0.5 exactly" + _D)
    g.add_argument("--beta-start", type=float, default=1e-3, help="linear: beta_1" + _D)
    g.add_argument("--beta-end", type=float, default=0.5, help="linear: beta_T (<= 0.5)" + _D)
    g.add_argument("--hidden", type=int, default=c.hidden, help="hidden units per RBM" + _D)
    g.add_argument("--gibbs-steps", type=int, default=1, help="k of PCD-k" + _D)
    g.add_argument("--lr", type=float, default=0.02,
                   help="AdamW learning rate of the RBMs, decayed linearly to 0 over each "
                        "timestep" + _D)
    g.add_argument("--weight-decay", type=float, default=1e-4,
                   help="AdamW weight decay of the couplings W, G, F" + _D)
    g.add_argument("--eval-codes", type=int, default=1000,
                   help="training codes scored for the train pseudo-likelihood" + _D)
    g.add_argument("--sample-n", type=int, default=64, help="codes sampled at the end" + _D)
    g.add_argument("--sample-steps", type=int, default=20,
                   help="Gibbs sweeps per timestep when sampling" + _D)
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=int, default=64,
                   help="images (autoencoder) and codes (RBMs) per step" + _D)
    g.add_argument("--seed", type=int, default=0, help="seed of everything random" + _D)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N" + _D)
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    add_harness_args(p, ckpt_every=2000, log_every=50)
    args = p.parse_args(argv)
    positive = ("ae_epochs", "ae_width", "code_channels", "timesteps", "epochs_per_timestep",
                "hidden", "gibbs_steps", "eval_codes", "sample_n", "sample_steps", "batch_size")
    for key in positive:
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if not 0 < args.beta_start <= args.beta_end <= 0.5:
        p.error("need 0 < --beta-start <= --beta-end <= 0.5")
    return args


def fingerprinted_config(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that changes the numbers; paths, device and save frequency are left out."""
    keys = ["cls", "synthetic", "train_size", "heldout_size", "ae_epochs", "ae_width",
            "code_channels", "ae_lr", "timesteps", "epochs_per_timestep", "schedule", "hidden",
            "gibbs_steps", "lr", "weight_decay", "eval_codes", "sample_n", "sample_steps",
            "batch_size", "seed"]
    keys += ["beta_start", "beta_end"] if args.schedule == "linear" else []
    keys += ["synthetic_train", "synthetic_test"] if args.synthetic else []
    return {k: getattr(args, k) for k in keys}


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    return ModelConfig(width=args.ae_width, code_channels=args.code_channels, hidden=args.hidden,
                       timesteps=args.timesteps, chains=args.batch_size).to_dict()


def configure(args: argparse.Namespace) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    enable_determinism(args.seed)  # every op here has a deterministic kernel, CUDA included
    return device


def resume_timestep(h: Harness) -> int:
    """The stage of the newest verified checkpoint (0: the autoencoder, t: timestep t), after
    checking that it is one of ours; 0 without a checkpoint."""
    found = peek_state(h.ckpt_root)
    if found is None:
        return 0
    check_trainer(*found, NAME)
    return int(found[1][KEY_EXTRA]["timestep"])


class Job:
    """The data, the model and the stage the loop is in, with what each stage does."""

    def __init__(self, args: argparse.Namespace, device: torch.device, images: data.ClassImages):
        self.args, self.device = args, device
        self.train_x, self.heldout_x = images.train.to(device), images.heldout.to(device)
        self.beta = diffusion.betas(args.schedule, args.timesteps, args.beta_start,
                                    args.beta_end)
        self.cum = diffusion.flip_probs(self.beta)
        self.model = build(model_config(args), args.seed).to(device)
        self.sampler = ResumableSampler(len(self.train_x), seed=args.seed)
        self.codes: dict[str, torch.Tensor] = {}
        self._eval: dict[int, tuple] = {}

    def stage(self, epoch: int) -> tuple[int, int]:
        """(timestep, epoch inside the stage) of harness epoch ``epoch``; timestep 0 is the
        autoencoder."""
        a, e = self.args.ae_epochs, self.args.epochs_per_timestep
        return (0, epoch) if epoch < a else ((epoch - a) // e + 1, (epoch - a) % e)

    def optimizer(self, t: int) -> tuple[torch.optim.Optimizer, Any]:
        """The stage's optimizer and LR schedule: Adam at a constant rate for the autoencoder;
        for an RBM, AdamW whose rate falls linearly to zero over the timestep's steps."""
        if t == 0:
            return torch.optim.Adam(self.model.ae.parameters(), lr=self.args.ae_lr), None
        opt = make_optimizer(self.model.rbms[t - 1], self.args.lr, self.args.weight_decay,
                             condition_informative=float(self.beta[t - 1]) < 0.5)
        steps = self.args.epochs_per_timestep * math.ceil(len(self.train_x) / self.args.batch_size)
        return opt, linear_decay(opt, steps)

    def load_codes(self, extra: dict[str, Any]) -> None:
        if extra.get("codes") is not None:
            self.codes = {k: v.to(self.device).float() for k, v in extra["codes"].items()}

    # --- the autoencoder --------------------------------------------------------------------------
    def ae_epoch(self, h: Harness) -> dict[str, Any]:
        ae, opt = self.model.ae, h.optimizer
        ae.train()
        for idx in self.sampler.batches(self.args.batch_size):
            x = self.train_x[idx.to(self.device)]
            loss = F.mse_loss(ae(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            h.step_done(n=len(idx), loss=loss.item())
        ae.eval()
        return {"stage": "autoencoder", **report.ae_scores(ae, self.train_x, self.heldout_x)}

    def finish_ae(self, extra: dict[str, Any], metrics: dict[str, Any]) -> None:
        """The codes of every image, into the trainer state (a resume reads them, never
        re-encodes: the same bits on any device)."""
        ae = self.model.ae
        extra["codes"] = {"train": ae.encode(self.train_x).to(torch.uint8),
                          "heldout": ae.encode(self.heldout_x).to(torch.uint8)}
        extra["ae"] = {k: v for k, v in metrics.items() if k != "stage"}
        self.load_codes(extra)

    # --- the RBMs ---------------------------------------------------------------------------------
    def start_timestep(self, t: int, extra: dict[str, Any]) -> None:
        """Initialise RBM t from the flip kernel, zero the chains, score the starting point."""
        self.model.rbms[t - 1].init_from_kernel(float(self.beta[t - 1]))
        self.model.chains.zero_()
        extra["timestep"] = t
        extra["pll_start"][str(t)] = self.evaluate(t)

    def eval_pairs(self, t: int) -> tuple:
        """Fixed pairs (each code ``EVAL_DRAWS`` times, each time with its own noise and its own
        flipped bit) for scoring timestep t, the same at every epoch: drawn on the CPU from a
        generator of their own, so no training draw moves them."""
        if t not in self._eval:
            g = torch.Generator().manual_seed(self.args.seed * 7919 + t)
            sets = []
            for codes in (self.codes["train"][:self.args.eval_codes], self.codes["heldout"]):
                v, c = diffusion.pair(codes.cpu().repeat(EVAL_DRAWS, 1), t, self.beta,
                                      self.cum, g)
                flip = torch.randint(0, v.shape[1], (len(v),), generator=g)
                sets.append(tuple(x.to(self.device) for x in (v, c, flip)))
            self._eval = {t: tuple(sets)}
        return self._eval[t]

    @torch.no_grad()
    def evaluate(self, t: int) -> dict[str, float]:
        rbm = self.model.rbms[t - 1]
        out: dict[str, float] = {}
        for name, (v, c, flip) in zip(("train", "heldout"), self.eval_pairs(t)):
            out[f"pll_{name}"] = round(float(rbm.pseudo_log_likelihood(v, c, flip).mean()), 5)
            out[f"fe_{name}"] = round(float(rbm.free_energy(v, c).mean()), 5)
        out["fe_gap"] = round(out["fe_heldout"] - out["fe_train"], 5)
        return out

    def rbm_epoch(self, h: Harness, t: int, local: int) -> dict[str, Any]:
        rbm, opt, codes = self.model.rbms[t - 1], h.optimizer, self.codes["train"]
        sched = h.scheduler
        for idx in self.sampler.batches(self.args.batch_size):
            v, c = diffusion.pair(codes[idx.to(self.device)], t, self.beta, self.cum)
            fe = rbm.pcd_step(v, c, self.model.chains, self.args.gibbs_steps)
            opt.step()
            sched.step()
            h.step_done(n=len(idx), free_energy=fe)
        return {"stage": "rbm", "timestep": t, "t_epoch": local + 1, **self.evaluate(t)}


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    device = configure(args)
    counts = (args.synthetic_train, args.synthetic_test) if args.synthetic else None
    images = data.load(args.data_dir, args.cls, synthetic_counts=counts, seed=args.seed,
                       train_size=args.train_size, heldout_size=args.heldout_size)
    job = Job(args, device, images)
    total = args.ae_epochs + args.timesteps * args.epochs_per_timestep
    with Harness.from_args(args, name=NAME, config=fingerprinted_config(args),
                           total_epochs=total,
                           steps_per_epoch=math.ceil(len(job.train_x) / args.batch_size)) as h:
        opt, sched = job.optimizer(resume_timestep(h))
        h.track(model=job.model, optimizer=opt, scheduler=sched, sampler=job.sampler)
        h.extra = {"trainer": NAME, "model": model_config(args), "timestep": 0, "codes": None,
                   "ae": None, "pll_start": {}}
        h.resume()
        extra = h.extra  # updated in place from here on: every checkpoint takes it as it is
        job.load_codes(extra)
        h.say(f"class {args.cls!r}: {len(job.train_x)} training / {len(job.heldout_x)} held-out "
              f"images on {device}; {job.model.config.bits}-bit codes, {args.timesteps} "
              f"timesteps x {args.epochs_per_timestep} epochs, flip probability at T "
              f"{float(job.cum[-1]):.4f}")
        for epoch in h.epochs():
            t, local = job.stage(epoch)
            if t != extra["timestep"]:
                raise HarnessError(f"the checkpoint names timestep {extra['timestep']} at epoch "
                                   f"{epoch}: inconsistent state")
            if t == 0:
                metrics = job.ae_epoch(h)
                last = local == args.ae_epochs - 1
                if last:
                    job.finish_ae(extra, metrics)
                    h.say(f"autoencoder done: PSNR {metrics['ae_psnr']:.2f} dB on held-out "
                          f"images, {metrics['active_bits']} of {job.model.config.bits} bits "
                          f"in use")
            else:
                metrics = job.rbm_epoch(h, t, local)
                last = local == args.epochs_per_timestep - 1
            if last and t < args.timesteps:  # the next stage, before this epoch's checkpoint
                job.start_timestep(t + 1, extra)
                opt, sched = job.optimizer(t + 1)
                h.track(model=job.model, optimizer=opt, scheduler=sched, sampler=job.sampler)
            h.epoch_done(metrics, save=t == 0 or last)
        results = report.summarise(job, extra, h.history, h.out_dir if h.plot else None)
        return h.finish(results, panels=report.PANELS)
