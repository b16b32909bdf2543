"""Graph diffusion over overlapping patches, with every parameter learned by gradient descent.

An image is cut into overlapping ``patch x patch`` patches ``p_i`` on a grid of stride ``stride``
(centres ``c_i``). Patches are the nodes of a graph; an edge joins patches whose centres are
within the radius, weighted by how close their centres are and how alike they look::

    W_ij = exp(-|c_i - c_j|^2 / 2 sigma_s^2) * exp(-[d(p_i, p_j) - 2 b noise^2]_+ / 2 (sigma noise)^2)
           * m(|c_i - c_j|)

with ``d`` the mean squared difference of the two patches, ``noise`` the noise level of the input
(so one trained model serves every noise level: ``sigma`` and ``b`` are relative to it) and ``m``
a soft radius ``sigmoid((radius - |c_i - c_j|) / 0.5 px)``. Two noisy copies of the same patch are
``2 noise^2`` apart on average while a patch is 0 from itself; without taking that offset off
(``b``, learned, starts at 1) every patch would trust itself far more than its equals, and a sharp
``sigma`` would stop the averaging altogether. Each of the ``steps`` diffusion steps is

    P <- P - tau * L P,    L = I - D^-1 W   (the random-walk normalised Laplacian, D = diag(W 1))

with the weights recomputed from the current patches, so later steps see cleaner patches. The
random-walk normalisation keeps a flat patch flat (L 1 = 0); the symmetric one, I - D^-1/2 W
D^-1/2, does not, and darkens or brightens patches with few neighbours near the borders. The image
is the average of the diffused patches where they overlap.

Learned, per step: ``sigma``, ``b`` and ``tau``; shared: ``sigma_s`` and the soft ``radius``. Each is a
free parameter passed through a map that keeps it in range (exp for the widths, a sigmoid for
0 < tau < 1, a scaled sigmoid for 0 < radius < max_radius). The optional attention multiplies each
edge by ``2 * sum_h a_h * sigmoid(q_h(p_i) . k_h(p_j) / sqrt(d))`` (heads mixed by a softmax
``a``), so it can strengthen or cut edges that the patch distance alone gets wrong; its keys start
at zero, so every gate starts at 1.

Where training starts: one step with ``tau`` near 1 replaces each patch by the weighted mean of its
neighbours, the weights ``exp(-[d - 2 noise^2]_+ / h^2)`` of the patch distance less the noise's
share: that is non-local means (its block-wise form, patches averaged back where they overlap),
provided the patch grid has stride 1 (every position is a candidate, not one in ``stride^2``),
the spatial weight is nearly flat and the radius covers the search window. The defaults are that
filter with scikit-image's recommended ``h = 0.8 noise`` (``sigma = 0.8 / sqrt 2``) on 5 x 5
patches searched within 6 pixels, so the untrained model already denoises about as well as
non-local means, and far better than any blur; gradient descent then tunes every parameter (and
the attention) from there. Steps after the first start gentle (``init_tau_later``): with the
same widths a second full step would blur the already-cleaned image.

The neighbour structure is banded: the offsets within ``max_radius`` on the patch grid, the same
for every patch, so a batch of images runs as shifted views of one tensor on the device, never as
a dense N x N matrix. When the patches are those of an image (every step with ``reaggregate``,
and the only step when ``steps`` is 1) a step never materialises a patch: the distance of patch
i to patch i + o is a box filter of the squared difference between the image and its shift by o,
and the overlap-averaged weighted mean is a sum over offsets of shifted images times the
normalised weights spread over each patch's pixels; that is the literal patch step's result
(tested) at a fraction of the memory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

SOFT_RADIUS_PX = 0.5  # width of the soft edge of the radius, in pixels


@dataclass
class DiffusionConfig:
    patch: int = 5
    stride: int = 1
    steps: int = 1
    max_radius: float = 6.0      # pixels; bounds the learned radius and sets the band
    attention: bool = True
    heads: int = 4
    head_dim: int = 8
    init_sigma: float = 0.55     # patch-distance width, in units of the noise level
    init_sigma_s: float = 10.0   # pixels: nearly flat within the radius
    init_tau: float = 0.99       # the first step
    init_tau_later: float = 0.1  # the steps after it
    init_radius: float = 5.5     # pixels
    init_bias: float = 1.0       # share of the noise's expected patch distance taken off
    reaggregate: bool = False    # overlap-average back to an image between steps

    def to_dict(self) -> dict:
        return asdict(self)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class GraphDiffusionDenoiser(nn.Module):
    def __init__(self, config: DiffusionConfig | None = None, channels: int = 3):
        super().__init__()
        self.config = c = config or DiffusionConfig()
        if not 0 < c.init_radius < c.max_radius:
            raise ValueError("init_radius must lie in (0, max_radius)")
        self.channels = channels
        self.raw_sigma = nn.Parameter(torch.full((c.steps,), math.log(c.init_sigma)))
        self.raw_tau = nn.Parameter(torch.tensor(
            [_logit(c.init_tau)] + [_logit(c.init_tau_later)] * (c.steps - 1)))
        self.raw_bias = nn.Parameter(torch.full((c.steps,), math.log(c.init_bias)))
        self.raw_sigma_s = nn.Parameter(torch.tensor(math.log(c.init_sigma_s)))
        self.raw_radius = nn.Parameter(torch.tensor(_logit(c.init_radius / c.max_radius)))
        dim = channels * c.patch * c.patch
        if c.attention:
            self.query = nn.Linear(dim, c.heads * c.head_dim, bias=False)
            self.key = nn.Linear(dim, c.heads * c.head_dim, bias=False)
            nn.init.zeros_(self.key.weight)  # every gate starts at 1: the plain filter
            self.head_mix = nn.Parameter(torch.zeros(c.heads))
        k = int(c.max_radius // c.stride)
        offsets = [(dy, dx) for dy in range(-k, k + 1) for dx in range(-k, k + 1)
                   if c.stride * math.hypot(dy, dx) <= c.max_radius]
        self.band = k
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("offset_dist", c.stride * torch.tensor(
            [math.hypot(dy, dx) for dy, dx in offsets]), persistent=False)

    # --- the learned parameters, in their own units ------------------------------------------------
    def sigma(self) -> torch.Tensor:
        return self.raw_sigma.exp()

    def bias(self) -> torch.Tensor:
        return self.raw_bias.exp()

    def tau(self) -> torch.Tensor:
        return torch.sigmoid(self.raw_tau)

    def sigma_s(self) -> torch.Tensor:
        return self.raw_sigma_s.exp()

    def radius(self) -> torch.Tensor:
        return self.config.max_radius * torch.sigmoid(self.raw_radius)

    def learned(self) -> dict[str, float | list[float]]:
        """The interpretable parameters, for the metrics and the figures."""
        with torch.no_grad():
            return {"sigma": [round(float(v), 6) for v in self.sigma()],
                    "tau": [round(float(v), 6) for v in self.tau()],
                    "bias": [round(float(v), 6) for v in self.bias()],
                    "sigma_s": round(float(self.sigma_s()), 6),
                    "radius": round(float(self.radius()), 6)}

    # --- geometry ----------------------------------------------------------------------------------
    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """The smallest size >= (h, w) that the patch grid covers exactly."""
        p, s = self.config.patch, self.config.stride

        def fit(n: int) -> int:
            n = max(n, p)
            return n + (-(n - p)) % s
        return fit(h), fit(w)

    def forward(self, noisy: torch.Tensor, noise_sigma: float | torch.Tensor) -> torch.Tensor:
        """Denoise a batch ``B x C x H x W`` (values on the 0-1 scale) whose additive noise has
        standard deviation ``noise_sigma`` (same scale). Any size: the image is reflect-padded to
        fit the patch grid and cropped back."""
        b, ch, h, w = noisy.shape
        if ch != self.channels:
            raise ValueError(f"the model was built for {self.channels} channels, got {ch}")
        c = self.config
        ph, pw = self.padded_size(h, w)
        x = noisy
        if (ph, pw) != (h, w):
            mode = "reflect" if ph - h < h and pw - w < w else "replicate"
            x = F.pad(x, (0, pw - w, 0, ph - h), mode=mode)
        noise = torch.as_tensor(noise_sigma, dtype=x.dtype, device=x.device).clamp_min(1e-4)
        var = noise ** 2
        spatial = (torch.exp(-self.offset_dist ** 2 / (2 * self.sigma_s() ** 2))
                   * torch.sigmoid((self.radius() - self.offset_dist) / SOFT_RADIUS_PX))
        ones = torch.ones(1, 1, ph, pw, dtype=x.dtype, device=x.device)
        count = F.fold(F.unfold(ones, c.patch, stride=c.stride), (ph, pw), c.patch,
                       stride=c.stride)
        if c.reaggregate or c.steps == 1:
            # Each step diffuses the patches of an image and averages them back: done per pixel.
            for t in range(c.steps):
                x = self._image_step(x, spatial, 2 * self.sigma()[t] ** 2 * var,
                                     2 * self.bias()[t] * var, self.tau()[t], count)
            return x[..., :h, :w]
        gh, gw = (ph - c.patch) // c.stride + 1, (pw - c.patch) // c.stride + 1
        P = F.unfold(x, c.patch, stride=c.stride).view(b, -1, gh, gw)   # B x D x gh x gw
        for t in range(c.steps):
            P = self._step(P, spatial, 2 * self.sigma()[t] ** 2 * var, 2 * self.bias()[t] * var,
                           self.tau()[t])
        P = F.fold(P.reshape(b, -1, gh * gw), (ph, pw), c.patch, stride=c.stride)
        return (P / count)[..., :h, :w]

    def _image_step(self, x: torch.Tensor, spatial: torch.Tensor, width: torch.Tensor,
                    offset: torch.Tensor, tau: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """``_step`` on the patches of the image ``x`` followed by the overlap-average, computed
        per pixel, without materialising a patch: the distance of patch i to patch i + o is a box
        filter of the squared difference of ``x`` and ``x`` shifted by o, and the weighted average
        of patch i's neighbours, overlap-averaged, is a sum over offsets of the shifted image
        times the normalised edge weights spread over the pixels each patch covers."""
        c = self.config
        b, ch, hh, ww = x.shape
        gh, gw = (hh - c.patch) // c.stride + 1, (ww - c.patch) // c.stride + 1
        k, s = self.band, c.stride
        padded = F.pad(x, (k * s, k * s, k * s, k * s))
        valid = F.pad(torch.ones(1, 1, gh, gw, dtype=x.dtype, device=x.device), (k, k, k, k))
        if c.attention:
            heads, hd = c.heads, c.head_dim
            shape = (-1, ch, c.patch, c.patch)  # a linear map of the patch is a strided conv
            q = F.conv2d(x, self.query.weight.view(shape), stride=s).view(b, heads, hd, gh, gw)
            keys = F.pad(F.conv2d(x, self.key.weight.view(shape), stride=s), (k, k, k, k))
            mix = torch.softmax(self.head_mix, 0)
        weights, shifted = [], []
        for o, (dy, dx) in enumerate(self.offsets.tolist()):
            nb = padded[:, :, (k + dy) * s:(k + dy) * s + hh, (k + dx) * s:(k + dx) * s + ww]
            dist = F.avg_pool2d((x - nb).pow(2).mean(1, keepdim=True), c.patch, stride=s)
            wgt = (torch.exp(-F.relu(dist - offset) / width) * spatial[o]
                   * valid[:, :, k + dy:k + dy + gh, k + dx:k + dx + gw])
            if c.attention:
                kj = keys[:, :, k + dy:k + dy + gh, k + dx:k + dx + gw].view(b, heads, hd, gh, gw)
                score = (q * kj).sum(2) / math.sqrt(hd)                    # B x H x gh x gw
                wgt = wgt * 2 * (torch.sigmoid(score) * mix[:, None, None]).sum(1, keepdim=True)
            weights.append(wgt)
            shifted.append(nb)
        den = torch.stack(weights).sum(0).clamp_min(1e-12)
        spread = torch.ones(1, 1, c.patch, c.patch, dtype=x.dtype, device=x.device)
        avg = torch.zeros_like(x)
        for wgt, nb in zip(weights, shifted):
            avg = avg + F.conv_transpose2d(wgt / den, spread, stride=s) * nb
        return x + tau * (avg / count - x)

    def _step(self, P: torch.Tensor, spatial: torch.Tensor, width: torch.Tensor,
              offset: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """One explicit diffusion step ``P - tau * (I - D^-1 W) P`` on the banded graph."""
        b, d, gh, gw = P.shape
        k = self.band
        padded = F.pad(P, (k, k, k, k))
        valid = F.pad(torch.ones(1, 1, gh, gw, dtype=P.dtype, device=P.device), (k, k, k, k))
        if self.config.attention:
            heads, hd = self.config.heads, self.config.head_dim
            flat = P.permute(0, 2, 3, 1)                                # B x gh x gw x D
            q = self.query(flat).view(b, gh, gw, heads, hd)
            keys = F.pad(self.key(flat).permute(0, 3, 1, 2), (k, k, k, k))  # B x HD x ..
            mix = torch.softmax(self.head_mix, 0)
        num = torch.zeros_like(P)
        den = torch.zeros(b, 1, gh, gw, dtype=P.dtype, device=P.device)
        for o, (dy, dx) in enumerate(self.offsets.tolist()):
            ys, xs = slice(k + dy, k + dy + gh), slice(k + dx, k + dx + gw)
            nb = padded[:, :, ys, xs]
            dist = F.relu((P - nb).pow(2).mean(1, keepdim=True) - offset)
            wgt = torch.exp(-dist / width) * spatial[o] * valid[:, :, ys, xs]
            if self.config.attention:
                kj = keys[:, :, ys, xs].permute(0, 2, 3, 1).reshape(b, gh, gw, heads, hd)
                score = (q * kj).sum(-1) / math.sqrt(hd)                 # B x gh x gw x H
                gate = 2 * (torch.sigmoid(score) * mix).sum(-1)
                wgt = wgt * gate.unsqueeze(1)
            num = num + wgt * nb
            den = den + wgt
        return P + tau * (num / den.clamp_min(1e-12) - P)


def build(config: dict | None = None, channels: int = 3) -> GraphDiffusionDenoiser:
    return GraphDiffusionDenoiser(DiffusionConfig(**(config or {})), channels=channels)
