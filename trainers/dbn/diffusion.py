"""Diffusion over bit codes: the forward chain of bit flips, sampling back through the RBMs, and
the check that samples look like real codes.

Forward: ``x_t = x_{t-1} XOR Bern(beta_t)``, t = 1..T. Two flips compose as one, so after t steps
``x_t = x_0 XOR Bern(p_t)`` with ``1 - 2 p_t = prod_{s <= t} (1 - 2 beta_s)``; a schedule ends
near 0.5 when ``p_T`` does (the code is then coin flips). A training pair for timestep t is drawn
along one chain: ``x_{t-1}`` from x_0 in one jump (``p_{t-1}``), then ``x_t`` from ``x_{t-1}``
with one more step (``beta_t``), so the pair has exactly the chain's joint law.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear")


def betas(kind: str, timesteps: int, beta_start: float = 1e-3,
          beta_end: float = 0.5) -> torch.Tensor:
    """Per-step flip probabilities beta_1..beta_T (float64).

    ``cosine``: the keep term ``prod(1 - 2 beta)`` follows Nichol & Dhariwal's squared cosine
    from 1 to 0, so p_T = 0.5 exactly. ``linear``: beta from ``beta_start`` to ``beta_end``.
    """
    t = torch.arange(timesteps + 1, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        keep = torch.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2
        keep = keep / keep[0]
        out = (1 - keep[1:] / keep[:-1]) / 2
    elif kind == "linear":
        out = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    else:
        raise ValueError(f"schedule {kind!r}: one of {', '.join(SCHEDULES)}")
    return out.clamp(1e-6, 0.5)


def flip_probs(beta: torch.Tensor) -> torch.Tensor:
    """p_0..p_T: the chance that a bit of x_t differs from x_0 (p_0 = 0)."""
    keep = torch.cumprod(1 - 2 * beta, 0)
    return torch.cat([beta.new_zeros(1), (1 - keep) / 2])


def flip(x: torch.Tensor, p: float | torch.Tensor, generator: torch.Generator | None = None
         ) -> torch.Tensor:
    """``x XOR Bern(p)`` for 0/1 floats."""
    noise = torch.rand(x.shape, generator=generator, device=x.device) < p
    return (x.bool() ^ noise).to(x.dtype)


def pair(x0: torch.Tensor, t: int, beta: torch.Tensor, cum: torch.Tensor,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_{t-1}, x_t) along one forward chain from the codes ``x0`` (t counts from 1)."""
    prev = flip(x0, float(cum[t - 1]), generator)
    return prev, flip(prev, float(beta[t - 1]), generator)


@torch.no_grad()
def sample_codes(rbms, n: int, steps: int, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` codes: x_T ~ Bern(0.5), then for t = T..1 a Gibbs chain of ``steps`` sweeps in the
    RBM of timestep t conditioned on x_t, started at x_t; its last visible sample is x_{t-1}."""
    d = rbms[0].visible
    x = torch.bernoulli(torch.full((n, d), 0.5, device=device), generator=generator)
    for rbm in reversed(rbms):
        c, v = x, x.clone()
        for _ in range(steps):
            h = torch.bernoulli(torch.sigmoid(rbm.hidden_field(v, c)), generator=generator)
            v = torch.bernoulli(torch.sigmoid(rbm.visible_field(h, c)), generator=generator)
        x = v
    return x


def nearest_hamming(codes: torch.Tensor, reference: torch.Tensor,
                    chunk: int = 1024) -> torch.Tensor:
    """For each row of ``codes``, the Hamming distance to its nearest row of ``reference``."""
    out = []
    ref = reference.float()
    for part in codes.float().split(chunk):
        dist = part @ (1 - ref).t() + (1 - part) @ ref.t()
        out.append(dist.min(1).values)
    return torch.cat(out)


def sample_check(samples: torch.Tensor, train: torch.Tensor, heldout: torch.Tensor,
                 generator: torch.Generator) -> dict[str, float]:
    """Mean Hamming distance to the nearest training code, for the sampled codes and, beside
    them, as many codes of coin flips, codes drawn bit by bit from the training codes' bit
    means (right marginals, no structure), and the held-out images' own codes (what real codes
    from outside the training set score)."""
    n, d = samples.shape
    device = samples.device
    coins = torch.bernoulli(torch.full((n, d), 0.5, device=device), generator=generator)
    marginal = torch.bernoulli(train.float().mean(0).expand(n, d).contiguous(),
                               generator=generator)

    def mean(x):
        return round(float(nearest_hamming(x, train).mean()), 4)

    return {"bits": d, "samples": n, "sampled": mean(samples), "random": mean(coins),
            "random_marginals": mean(marginal), "heldout": mean(heldout)}
