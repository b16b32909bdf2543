"""The classic denoisers ours is judged against, and the metrics, from the libraries the field uses.

- Gaussian blur (torchvision), its width fitted on noisy/clean training pairs by a grid search on
  the MSE: the best any blur can do on this data, not a guess.
- The bilateral filter (scikit-image), its two widths fitted the same way on training pairs.
- Non-local means (scikit-image, ``denoise_nl_means`` with ``estimate_sigma``) with the settings
  scikit-image's documentation uses for it: ``h = 0.8 * sigma``, fast mode, 5 x 5 patches searched
  within 6 pixels. It estimates the noise itself, so it is given nothing we know.
- PSNR and SSIM (torchmetrics), per image on the 0-1 scale after clamping every output to [0, 1]
  (what an 8-bit image shows), then averaged over images.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BLUR_SIGMAS = [round(0.3 + 0.1 * i, 1) for i in range(28)]          # 0.3 .. 3.0 pixels
BILATERAL_GRID = [(c, s) for c in (0.02, 0.04, 0.06, 0.08, 0.1, 0.14) for s in (0.75, 1.0, 1.5, 2.0)]


def to_numpy(images: torch.Tensor) -> np.ndarray:
    """B x C x H x W tensor -> B x H x W x C float64 array."""
    return images.detach().cpu().permute(0, 2, 3, 1).double().numpy()


def to_torch(images, like: torch.Tensor) -> torch.Tensor:
    arr = np.stack(list(images)) if not isinstance(images, np.ndarray) else images
    return torch.from_numpy(arr).permute(0, 3, 1, 2).to(dtype=like.dtype, device=like.device)


def psnr_ssim(pred: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM of ``pred`` against ``clean`` (B x C x H x W, 0-1 scale)."""
    from torchmetrics.functional.image import (peak_signal_noise_ratio,
                                               structural_similarity_index_measure)

    pred = pred.clamp(0, 1).float()
    clean = clean.float()
    psnr = peak_signal_noise_ratio(pred, clean, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(pred, clean, data_range=1.0, reduction="none")
    return psnr, ssim


def score(pred: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    psnr, ssim = psnr_ssim(pred, clean)
    return {"psnr": round(float(psnr.mean()), 4), "ssim": round(float(ssim.mean()), 5)}


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    k = 2 * math.ceil(3 * sigma) + 1
    h, w = images.shape[-2:]
    if k > min(h, w):  # torchvision's reflect padding needs the kernel inside the image
        k = min(h, w) - (1 - min(h, w) % 2)
    return gaussian_blur(images, [k, k], [sigma, sigma])


def fit_blur(noisy: torch.Tensor, clean: torch.Tensor) -> float:
    """The blur width with the lowest MSE on these training pairs."""
    errors = {s: float(((blur(noisy, s) - clean) ** 2).mean()) for s in BLUR_SIGMAS}
    return min(errors, key=errors.get)


def bilateral(images: torch.Tensor, sigma_color: float, sigma_spatial: float) -> torch.Tensor:
    from skimage.restoration import denoise_bilateral

    arr = np.clip(to_numpy(images), 0, 1)  # the filter expects an image in [0, 1]
    out = [denoise_bilateral(im, sigma_color=sigma_color, sigma_spatial=sigma_spatial,
                             channel_axis=-1) for im in arr]
    return to_torch(out, images)


def fit_bilateral(noisy: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    errors = {cs: float(((bilateral(noisy, *cs) - clean) ** 2).mean()) for cs in BILATERAL_GRID}
    c, s = min(errors, key=errors.get)
    return {"sigma_color": c, "sigma_spatial": s}


def nl_means(images: torch.Tensor) -> torch.Tensor:
    from skimage.restoration import denoise_nl_means, estimate_sigma

    out = []
    for im in to_numpy(images):
        sigma = float(np.mean(estimate_sigma(im, channel_axis=-1)))
        out.append(denoise_nl_means(im, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5,
                                    patch_distance=6, channel_axis=-1))
    return to_torch(out, images)


def fit_all(noisy: torch.Tensor, clean: torch.Tensor) -> dict:
    """The fitted settings of the blur and the bilateral filter (on training pairs)."""
    return {"blur_sigma": fit_blur(noisy, clean), "bilateral": fit_bilateral(noisy, clean)}


def run_all(noisy: torch.Tensor, fitted: dict) -> dict[str, torch.Tensor]:
    """Every classic method's output on ``noisy``, by name."""
    return {"noisy": noisy,
            "gaussian_blur": blur(noisy, fitted["blur_sigma"]),
            "bilateral": bilateral(noisy, **fitted["bilateral"]),
            "nl_means": nl_means(noisy)}
