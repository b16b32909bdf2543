"""Denoise any image with a trained checkpoint.

    python -m trainers.denoise.apply --checkpoint CKPT --sigma 25 IN.png OUT.png

CKPT is the checkpoint folder the trainer wrote (its newest verified ``step-*`` is used) or one
``step-*`` folder. RGB and grey images of any size work: a grey image is run as three equal
channels (the patch distance is then the grey one) and averaged back; an alpha channel is kept
as it is. Large images are cut into tiles whose margins cover everything a pixel's result
depends on (``steps`` times the radius, plus a patch), so tiling gives the same pixels as one
pass would, in bounded memory.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import torch

from trainers.common import HarnessError
from trainers.common.checkpoint import open_checkpoint
from trainers.common import state as S
from trainers.denoise.model import GraphDiffusionDenoiser, build

TRAINER = "denoise"


def load_model(checkpoint: str | Path) -> tuple[GraphDiffusionDenoiser, dict]:
    """The model of a denoise checkpoint and its extra state; a one-line error otherwise."""
    _, state = open_checkpoint(checkpoint, TRAINER)
    extra = state[S.KEY_EXTRA]
    model = build(extra["model"])
    model.load_state_dict(state[S.KEY_MODEL])
    model.eval()
    return model, extra


def margin(model: GraphDiffusionDenoiser) -> int:
    """Pixels beyond a tile that can change its result, rounded up to the stride."""
    c = model.config
    m = c.steps * (c.max_radius + c.patch) + c.patch
    return int(math.ceil(m / c.stride) * c.stride)


@torch.no_grad()
def denoise(model: GraphDiffusionDenoiser, image: torch.Tensor, sigma: float,
            tile: int = 192) -> torch.Tensor:
    """Denoise one ``C x H x W`` image (0-1 scale, noise std ``sigma`` on that scale)."""
    grey = image.shape[0] == 1
    x = image.expand(3, -1, -1) if grey else image
    _, h, w = x.shape
    s = model.config.stride
    tile = max(s, tile // s * s)
    if h <= tile and w <= tile:
        out = model(x[None], sigma)[0]
    else:
        m = margin(model)
        out = torch.empty_like(x)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                # Tiles start on the stride grid of the whole image, so patches line up.
                ya, xa = max(0, y0 - m), max(0, x0 - m)
                yb, xb = min(h, y0 + tile + m), min(w, x0 + tile + m)
                part = model(x[None, :, ya:yb, xa:xb], sigma)[0]
                out[:, y0:y0 + tile, x0:x0 + tile] = part[:, y0 - ya:y0 - ya + tile,
                                                          x0 - xa:x0 - xa + tile]
    return out.mean(0, keepdim=True) if grey else out


def read_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (FileNotFoundError, IsADirectoryError):
        raise HarnessError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise HarnessError(f"{path}: not an image that can be read ({e})") from e


def estimate_sigma_255(image: torch.Tensor) -> float:
    from skimage.restoration import estimate_sigma

    arr = image.permute(1, 2, 0).double().numpy()
    return float(estimate_sigma(arr, channel_axis=-1, average_sigmas=True)) * 255


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainers.denoise.apply", allow_abbrev=False,
                                description="Denoise an RGB or grey image with a trained "
                                            "graph-diffusion checkpoint.")
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="the trainer's checkpoint folder, or one step-* folder in it")
    p.add_argument("--sigma", type=float, default=None,
                   help="noise std on the 0-255 scale (default: estimated from the image)")
    p.add_argument("--tile", type=int, default=192, help="tile side in pixels (default: 192)")
    p.add_argument("input", type=Path, help="noisy image (PNG, JPEG, ...)")
    p.add_argument("output", type=Path, help="where to write the denoised image")
    args = p.parse_args(argv)
    try:
        import numpy as np
        from PIL import Image

        model, _ = load_model(args.checkpoint)
        im = read_image(args.input)
        alpha = im.getchannel("A") if im.mode in ("RGBA", "LA") else None
        im = im.convert("L" if im.mode in ("L", "LA", "I", "I;16", "1") else "RGB")
        arr = np.asarray(im, dtype=np.float32) / 255.0
        x = torch.from_numpy(arr[..., None] if arr.ndim == 2 else arr).permute(2, 0, 1)
        sigma = args.sigma if args.sigma is not None else estimate_sigma_255(x)
        if sigma <= 0:
            raise HarnessError(f"--sigma must be > 0, got {sigma}")
        out = denoise(model, x, sigma / 255.0, tile=args.tile).clamp(0, 1)
        data = (out.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        result = Image.fromarray(data[..., 0] if data.shape[-1] == 1 else data)
        if alpha is not None:
            result.putalpha(alpha)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        result.save(args.output)
    except HarnessError as e:
        print(f"denoise.apply: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"denoise.apply: error: {e}", file=sys.stderr)
        return 1
    print(f"{args.input} -> {args.output} (sigma {sigma:.1f}, {x.shape[2]}x{x.shape[1]})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
