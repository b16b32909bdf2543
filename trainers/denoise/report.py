"""Scores on real photographs and the figures of a run.

The photographs are the colour ones that ship inside scikit-image (an astronaut, a cup of coffee,
a cat): real camera images, not CIFAR-10, so they test whether what was learned on 32 x 32 images
carries over. A centred crop of each gets noise fixed by the seed, and every method runs on the
same noisy pixels.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from trainers.denoise import baselines, data
from trainers.denoise.apply import denoise

PHOTOS = ("astronaut", "coffee", "chelsea")
PHOTO_CROP = 128
METHODS = ("noisy", "ours", "gaussian_blur", "bilateral", "nl_means")


def photo(name: str, crop: int = PHOTO_CROP) -> torch.Tensor:
    import skimage.data

    img = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
    _, h, w = img.shape
    y, x = (h - crop) // 2, (w - crop) // 2
    return img[:3, y:y + crop, x:x + crop].contiguous()


def run_methods(model, clean: torch.Tensor, noisy: torch.Tensor, sigma: float,
                fitted: dict) -> dict[str, torch.Tensor]:
    outs = baselines.run_all(noisy[None], fitted)
    outs = {k: v[0] for k, v in outs.items()}
    outs["ours"] = denoise(model, noisy, sigma)
    return {k: outs[k] for k in METHODS}


def photographs(model, sigma: float, fitted: dict, seed: int) -> dict[str, Any]:
    """PSNR/SSIM of every method on each photograph, and their means."""
    per: dict[str, dict[str, dict[str, float]]] = {}
    for i, name in enumerate(PHOTOS):
        clean = photo(name)
        noisy = clean + data.fixed_noise(clean[None].shape, sigma, seed + 100 + i)[0]
        outs = run_methods(model, clean, noisy, sigma, fitted)
        per[name] = {m: baselines.score(o[None], clean[None]) for m, o in outs.items()}
    mean = {m: {k: round(sum(per[p][m][k] for p in per) / len(per), 4) for k in ("psnr", "ssim")}
            for m in METHODS}
    return {"crop": PHOTO_CROP, "images": per, "mean": mean,
            "gain_over_noisy_db": round(mean["ours"]["psnr"] - mean["noisy"]["psnr"], 4)}


def figures(history: list[dict], model, split: data.Split, val_noisy: torch.Tensor,
            sigma: float, fitted: dict, out_dir: Path, count: int = 4) -> list[Path]:
    """``examples.png``: clean | noisy | ours | non-local means | blur for a few validation
    images and one photograph; ``parameters.png``: the learned parameters over training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = copy.deepcopy(model).to("cpu").eval()
    rows = []
    for i in range(min(count, len(split.val))):
        rows.append((f"val {i}", split.val[i], run_methods(model, split.val[i], val_noisy[i],
                                                            sigma, fitted)))
    clean = photo(PHOTOS[0], 96)
    noisy = clean + data.fixed_noise(clean[None].shape, sigma, 7)[0]
    rows.append((PHOTOS[0], clean, run_methods(model, clean, noisy, sigma, fitted)))
    cols = ["clean", "noisy", "ours", "nl_means", "gaussian_blur"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.2 * len(rows)))
    for r, (label, ref, outs) in enumerate(rows):
        for c, name in enumerate(cols):
            img = ref if name == "clean" else outs[name]
            ax = axes[r][c]
            ax.imshow(img.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if name != "clean":
                psnr = baselines.score(img[None], ref[None])["psnr"]
                ax.set_xlabel(f"{psnr:.2f} dB", fontsize=8)
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    paths = [out_dir / "examples.png"]
    fig.savefig(paths[0], dpi=90)
    plt.close(fig)

    if history:
        keys = [k for k in history[-1] if k.split("_")[0] in ("sigma", "tau")
                or k in ("sigma_s", "radius")]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k in keys:
            ax.plot([r["epoch"] for r in history], [r[k] for r in history], marker="o", label=k)
        ax.set_xlabel("epoch"), ax.set_title("learned diffusion parameters")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        paths.append(out_dir / "parameters.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths
