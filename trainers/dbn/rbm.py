"""A conditional RBM over bit vectors, trained by persistent contrastive divergence.

Visible ``v`` (D bits), hidden ``h`` (H bits), condition ``c`` (D bits):

    E(v, h | c) = -(a + G c).v - (b + F^T c).h - v^T W h
    F(v | c)    = -(a + G c).v - sum_j softplus(b_j + (F^T c)_j + (W^T v)_j)      (free energy)

so ``p(h_j = 1 | v, c) = sigmoid(b + F^T c + W^T v)_j`` and ``p(v_i = 1 | h, c) =
sigmoid(a + G c + W h)_i``. With ``conditional=False`` there is no G and no F: a plain Bernoulli
RBM, the model scikit-learn's ``BernoulliRBM`` fits.

The log-likelihood gradient of every parameter is a data statistic minus a model statistic; the
model side comes from persistent chains (PCD: the chains are carried from one step to the next,
never restarted at the data). ``pcd_step`` writes these differences into ``.grad`` directly, as
the gradient of the negative log-likelihood, and any torch optimizer (AdamW here) takes the step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConditionalRBM(nn.Module):
    """Parameters: ``W`` (D x H), ``a`` (D), ``b`` (H) and, when conditional, ``G`` (D x D,
    condition to visible) and ``F`` (D x H, condition to hidden)."""

    def __init__(self, visible: int, hidden: int, conditional: bool = True):
        super().__init__()
        self.visible, self.hidden, self.conditional = int(visible), int(hidden), conditional
        self.W = nn.Parameter(torch.randn(visible, hidden) * 0.01)
        self.a = nn.Parameter(torch.zeros(visible))
        self.b = nn.Parameter(torch.zeros(hidden))
        if conditional:
            self.G = nn.Parameter(torch.zeros(visible, visible))
            self.F = nn.Parameter(torch.zeros(visible, hidden))
        else:
            self.register_parameter("G", None)
            self.register_parameter("F", None)

    # --- the two conditionals and the free energy ------------------------------------------------
    def hidden_field(self, v: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """``b + F^T c + W^T v`` per row (n x H): the logits of p(h | v, c)."""
        x = torch.addmm(self.b, v, self.W)
        return x if self.F is None else x.addmm_(c, self.F)

    def visible_field(self, h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """``a + G c + W h`` per row (n x D): the logits of p(v | h, c)."""
        x = torch.addmm(self.a, h, self.W.t())
        return x if self.G is None else x.addmm_(c, self.G.t())

    def free_energy(self, v: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """F(v | c) per row; lower is more probable."""
        bias = self.a if self.G is None else self.a + c @ self.G.t()
        return -(v * bias).sum(1) - F.softplus(self.hidden_field(v, c)).sum(1)

    def pseudo_log_likelihood(self, v: torch.Tensor, c: torch.Tensor | None = None,
                              flip: torch.Tensor | None = None,
                              generator: torch.Generator | None = None) -> torch.Tensor:
        """scikit-learn's estimator (``BernoulliRBM.score_samples``), per row: flip one bit per
        row (``flip[i]``, else drawn at random), and return ``D * log sigmoid(F(v') - F(v))``,
        an unbiased estimate of the sum over bits of log p(v_i | v_-i, c)."""
        n, d = v.shape
        if flip is None:
            flip = torch.randint(0, d, (n,), generator=generator, device=v.device)
        rows = torch.arange(n, device=v.device)
        flipped = v.clone()
        flipped[rows, flip] = 1 - flipped[rows, flip]
        return d * F.logsigmoid(self.free_energy(flipped, c) - self.free_energy(v, c))

    # --- initialisation from the data ------------------------------------------------------------
    @torch.no_grad()
    def init_from_kernel(self, beta: float) -> None:
        """Start as the exact inverse of one flip step under a uniform prior: for
        ``c = v XOR Bern(beta)``, ``p(v_i = 1 | c) = sigmoid(L (2 c_i - 1))`` with
        ``L = log((1 - beta) / beta)``, i.e. ``a_i = -L``, ``G_ii = 2 L``. Nothing here comes from
        the data; training learns the prior (bit means and everything the bits share)."""
        beta = min(max(float(beta), 1e-6), 0.5)
        odds = math.log((1 - beta) / beta)
        self.a.fill_(-odds)
        self.G.zero_().diagonal().fill_(2 * odds)

    # --- one PCD update --------------------------------------------------------------------------
    def pcd_step(self, v: torch.Tensor, c: torch.Tensor | None, chains: torch.Tensor,
                 k: int = 1, generator: torch.Generator | None = None) -> float:
        """Set ``.grad`` of every parameter to (model - data) statistics of this batch, after
        ``k`` Gibbs steps of the persistent chains (``chains``: hidden samples, one row per
        chain; its first ``len(v)`` rows run under this batch's conditions and are updated in
        place). Returns the batch's mean free energy.

        One Gibbs step is v ~ p(v | h, c), then p(h | v, c), then h ~ Bernoulli(that); with
        ``k = 1`` and no condition this is exactly scikit-learn's update.
        """
        n = len(v)
        with torch.no_grad():
            field = self.hidden_field(v, c)
            h_data = torch.sigmoid(field)
            h = chains[:n]
            for _ in range(k):
                v_model = torch.bernoulli(torch.sigmoid(self.visible_field(h, c)),
                                          generator=generator)
                h_model = torch.sigmoid(self.hidden_field(v_model, c))
                h = torch.bernoulli(h_model, generator=generator)
            chains[:n] = h
            dv, dh = (v - v_model) / n, (h_data - h_model)
            # Gradients of the negative log-likelihood: model statistics minus data statistics.
            self.W.grad = -(v.t() @ h_data - v_model.t() @ h_model) / n
            self.a.grad = -dv.sum(0)
            self.b.grad = -dh.sum(0) / n
            if self.G is not None:
                self.G.grad = -(dv.t() @ c)
                self.F.grad = -(c.t() @ dh) / n
            bias = self.a if self.G is None else self.a + c @ self.G.t()
            energy = -(v * bias).sum(1) - F.softplus(field).sum(1)
        return float(energy.mean())


def make_optimizer(rbm: ConditionalRBM, lr: float, weight_decay: float,
                   condition_informative: bool = True) -> torch.optim.AdamW:
    """AdamW, with weight decay on the couplings (W, G, F) only, not on the biases. When the
    condition carries no information about v (a flip with beta = 0.5 makes ``c`` independent of
    ``v``), the true G and F are zero: they stay at zero, out of the optimizer, instead of
    fitting noise."""
    conditional = [rbm.G, rbm.F] if condition_informative else []
    couplings = [p for p in (rbm.W, *conditional) if p is not None]
    return torch.optim.AdamW([{"params": couplings, "weight_decay": weight_decay},
                              {"params": [rbm.a, rbm.b], "weight_decay": 0.0}], lr=lr)


class LinearDecay:
    """``1 - step / steps``, floored at zero: the LR factor of a ``LambdaLR`` that brings the
    rate down to zero over a timestep (the last PCD updates are then small, so the noise of the
    chains does not stay in the weights). A class, not a lambda, so that it pickles."""

    def __init__(self, steps: int):
        self.steps = int(steps)

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - step / self.steps)


def linear_decay(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, LinearDecay(steps))


def fit(rbm: ConditionalRBM, v: torch.Tensor, c: torch.Tensor | None = None, *, epochs: int,
        batch_size: int, k: int = 1, lr: float = 0.02, weight_decay: float = 1e-4,
        seed: int = 0) -> torch.Tensor:
    """Train ``rbm`` on rows ``v`` (given ``c``) without the harness, as the trainer trains one
    timestep (AdamW, linear decay), for tests and benchmarks. Returns the persistent chains."""
    from trainers.common import ResumableSampler

    opt = make_optimizer(rbm, lr, weight_decay)
    sched = linear_decay(opt, epochs * math.ceil(len(v) / batch_size))
    chains = torch.zeros(batch_size, rbm.hidden, device=v.device, dtype=v.dtype)
    sampler = ResumableSampler(len(v), seed=seed)
    g = torch.Generator(device=v.device).manual_seed(seed)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for idx in sampler.batches(batch_size):
            idx = idx.to(v.device)
            rbm.pcd_step(v[idx], None if c is None else c[idx], chains, k, generator=g)
            opt.step()
            sched.step()
    return chains
