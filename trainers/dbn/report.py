"""What the run reports: the autoencoder's scores, the per-timestep pseudo-likelihoods, the
sample check, and the figures (``pll.png``, ``reconstructions.png``, ``samples.png``; the
harness draws ``dashboard.png``). Everything is computed from the final weights and the trainer
state, so any attempt that finishes the run writes all of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainers.dbn import diffusion

PANELS = [("autoencoder MSE", ["train_loss", "val_mse"]),
          ("autoencoder PSNR (dB, held-out)", ["ae_psnr"]),
          ("pseudo-log-likelihood", ["pll_train", "pll_heldout"]),
          ("free energy: held-out minus train", ["fe_gap"])]
RECONSTRUCTIONS, SAMPLES, PLL_FIGURE = "reconstructions.png", "samples.png", "pll.png"


@torch.no_grad()
def ae_scores(ae, train_x: torch.Tensor, heldout_x: torch.Tensor) -> dict[str, Any]:
    """Held-out reconstruction through the deterministic codes: PSNR (torchmetrics, over all
    pixels of all images, data range 1) and MSE; and how many bits the codes really use."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    recon = ae.decode(ae.encode(heldout_x))
    codes = ae.encode(train_x)
    used = codes.min(0).values != codes.max(0).values
    return {"ae_psnr": round(float(peak_signal_noise_ratio(recon, heldout_x, data_range=1.0)), 4),
            "val_mse": round(float(torch.mean((recon - heldout_x) ** 2)), 6),
            "active_bits": int(used.sum()), "distinct_codes": len(torch.unique(codes, dim=0))}


def sample(model, n: int, steps: int, seed: int, device) -> tuple[torch.Tensor, torch.Generator]:
    """``n`` codes from the trained chain of RBMs, from a generator of their own (``seed``)."""
    g = torch.Generator(device=device).manual_seed(seed)
    return diffusion.sample_codes(model.rbms, n, steps, g, device), g


def timestep_table(job, extra: dict[str, Any], history: list[dict[str, Any]]) -> list[dict]:
    """Per timestep: beta, flip probability from x_0, the pseudo-log-likelihood before training
    and after its last epoch (train and held-out pairs), and the final free-energy gap."""
    last = {r["timestep"]: r for r in history if r.get("stage") == "rbm"}
    rows = []
    for t in range(1, job.args.timesteps + 1):
        start, end = extra["pll_start"].get(str(t)), last.get(t)
        if start is None or end is None:
            continue
        rows.append({"timestep": t, "beta": round(float(job.beta[t - 1]), 6),
                     "flip_prob": round(float(job.cum[t]), 6),
                     "pll_start_train": start["pll_train"],
                     "pll_start_heldout": start["pll_heldout"],
                     "pll_train": end["pll_train"], "pll_heldout": end["pll_heldout"],
                     "fe_gap": end["fe_gap"]})
    return rows


def summarise(job, extra: dict[str, Any], history: list[dict[str, Any]],
              out_dir: Path | None) -> dict[str, Any]:
    args, model = job.args, job.model
    codes, g = sample(model, args.sample_n, args.sample_steps, args.seed, job.device)
    check = diffusion.sample_check(codes, job.codes["train"], job.codes["heldout"], g)
    table = timestep_table(job, extra, history)
    if out_dir is not None:
        save_grid(model.ae.decode(codes), Path(out_dir) / SAMPLES)
        save_reconstructions(model.ae, job.heldout_x, Path(out_dir) / RECONSTRUCTIONS)
        draw_pll(history, extra, Path(out_dir) / PLL_FIGURE)
    return {
        "class": args.cls, "device": str(job.device), "train_images": len(job.train_x),
        "heldout_images": len(job.heldout_x), "autoencoder": extra["ae"],
        "schedule": {"kind": args.schedule, "betas": [round(float(b), 6) for b in job.beta],
                     "flip_prob_at_T": round(float(job.cum[-1]), 6)},
        "timesteps": table,
        "pll_rises_at_every_timestep": bool(table) and all(
            r["pll_train"] > r["pll_start_train"] for r in table),
        "sample_check": check,
        "samples_closer_than_random": check["sampled"] < check["random"],
    }


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.detach().float().cpu().clamp(0, 1), path, nrow=nrow, padding=2,
               pad_value=1.0)
    return path


def save_reconstructions(ae, images: torch.Tensor, path: Path, n: int = 16) -> Path:
    """Rows of 8: held-out images, then their reconstructions through the bits, twice."""
    x = images[:n]
    r = ae.decode(ae.encode(x))
    rows = [part for i in range(0, len(x), 8) for part in (x[i:i + 8], r[i:i + 8])]
    return save_grid(torch.cat(rows), path)


def draw_pll(history: list[dict[str, Any]], extra: dict[str, Any], path: Path) -> Path:
    """Left: held-out pseudo-log-likelihood against the epoch inside each timestep (epoch 0 is
    the starting point), one line per timestep. Right: start and end per timestep."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in history if r.get("stage") == "rbm"]
    steps = sorted({r["timestep"] for r in rows})
    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    cmap = colormaps["viridis"]
    for t in steps:
        start = extra["pll_start"].get(str(t), {})
        pts = [(0, start.get("pll_heldout"))] + [(r["t_epoch"], r["pll_heldout"])
                                                for r in rows if r["timestep"] == t]
        xs, ys = zip(*[p for p in pts if p[1] is not None])
        left.plot(xs, ys, color=cmap(t / max(steps)), lw=1, label=f"t={t}" if len(steps) <= 10
                  else None)
    left.set(xlabel="epoch inside the timestep", ylabel="pseudo-log-likelihood (held-out)",
             title="PLL per timestep over training")
    if 0 < len(steps) <= 10:
        left.legend(fontsize=7)
    final = {r["timestep"]: r for r in rows}
    for key, style, label in (("pll_train", "-o", "train, end"),
                              ("pll_heldout", "-s", "held-out, end")):
        right.plot(steps, [final[t][key] for t in steps], style, ms=3, label=label)
    right.plot(steps, [extra["pll_start"].get(str(t), {}).get("pll_train") for t in steps],
               "--", color="grey", label="train, start")
    right.set(xlabel="timestep", ylabel="pseudo-log-likelihood", title="start and end")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
