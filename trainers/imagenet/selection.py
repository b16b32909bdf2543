"""Adaptive sparse training: score every sample, keep the informative ones, steer the rate.

Per batch of B samples, a pass without gradients scores each sample

    s_i = 0.7 * CE(logits_i, y_i) + 0.3 * entropy(softmax(logits_i))

and the samples with ``s_i > thr`` are selected, at least ``ceil(0.1 * B)`` of them (the top-k by
score when fewer pass). Only the selected samples then go through forward *and* backward: that is
where the compute is saved (the published version ran every sample and zeroed the loss of the
others, which saves nothing).

A PI controller moves ``thr`` so that the activation rate (selected / seen) tracks its target::

    ema = a*r + (1-a)*ema;  e = ema - target
    I   = clip(I + e, -100, 100)          (anti-windup, see PIController.update)
    thr = clip(thr + kp*e + ki*I, thr_min, thr_max)

Everything here is a pure function of its inputs, and the controller's state is plain Python
numbers, so a checkpoint restores it exactly and a resumed run makes the same selections.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

CE_WEIGHT, ENTROPY_WEIGHT = 0.7, 0.3
MIN_FRACTION = 0.1  # at least ceil(0.1 * B) samples of every batch are trained on
INTEGRAL_LIMIT = 100.0


@torch.no_grad()
def sample_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample ``score``, ``ce`` and ``correct`` (float32, whatever dtype the logits had)."""
    logp = F.log_softmax(logits.float(), dim=1)
    ce = -logp.gather(1, labels[:, None]).squeeze(1)
    entropy = -(logp.exp() * logp).sum(1)
    return {"score": CE_WEIGHT * ce + ENTROPY_WEIGHT * entropy, "ce": ce,
            "correct": (logits.argmax(1) == labels).float()}


def min_selected(batch_size: int) -> int:
    """The floor on the selection: ``ceil(0.1 B)``, and never a single sample when the batch has
    more (batch norm cannot normalise one sample whose feature map is 1x1)."""
    return min(batch_size, max(math.ceil(MIN_FRACTION * batch_size), 2))


def select(scores: torch.Tensor, thr: float, round_to: int = 1) -> torch.Tensor:
    """The indices (ascending) of the samples to train on.

    Those with ``score > thr``; when fewer than ``min_selected(B)`` pass, the top-k by score.
    ``round_to > 1`` rounds the count up to a multiple (the next-best samples fill it) so that a
    GPU sees few distinct batch shapes; the caller reports the true count either way.
    """
    b = scores.numel()
    passed = scores > thr
    k = max(int(passed.sum()), min_selected(b))
    if round_to > 1:
        k = min(b, math.ceil(k / round_to) * round_to)
    if k == int(passed.sum()):
        return passed.nonzero().squeeze(1)
    # Stable descending sort: ties are broken by position, the same on every run.
    order = torch.sort(scores, descending=True, stable=True).indices
    return torch.sort(order[:k]).values


@dataclass
class ControllerConfig:
    target: float = 0.20  # activation rate to reach
    kp: float = 1.0  # proportional gain (score units per unit of rate error)
    ki: float = 0.05  # integral gain
    ema: float = 0.3  # weight of the newest batch's rate in the moving average
    thr_min: float = 0.0
    thr_max: float = 20.0  # scores are nats: ln(1000) = 6.9 at chance on ImageNet
    thr_init: float | None = None  # None: the (1 - target) quantile of the first batch's scores


class PIController:
    """Steers the selection threshold toward the target activation rate.

    State (all in ``state_dict``): ``thr``, ``integral``, ``ema``, ``updates`` (batches seen),
    ``seen`` and ``selected`` (samples, over the whole run) and the same two for the current epoch.
    """

    def __init__(self, config: ControllerConfig):
        c = config
        if not 0 < c.target <= 1:
            raise ValueError(f"target activation rate must be in (0, 1], got {c.target}")
        if not 0 < c.ema <= 1:
            raise ValueError(f"ema weight must be in (0, 1], got {c.ema}")
        if not c.thr_min < c.thr_max:
            raise ValueError(f"thr_min ({c.thr_min}) must be below thr_max ({c.thr_max})")
        self.config = c
        self.thr = float(c.thr_init) if c.thr_init is not None else float("nan")
        self.integral = 0.0
        self.ema = float(c.target)
        self.updates = self.seen = self.selected = 0
        self.epoch_seen = self.epoch_selected = 0

    @property
    def initialized(self) -> bool:
        return not math.isnan(self.thr)

    def init_from(self, scores: torch.Tensor) -> None:
        """Start where the first batch would have given the target rate (when no thr_init)."""
        if not self.initialized:
            q = torch.quantile(scores.double(), 1.0 - self.config.target).item()
            self.thr = min(max(q, self.config.thr_min), self.config.thr_max)

    def update(self, selected: int, batch_size: int) -> float:
        """Record one batch's selection and move the threshold; returns the new threshold.

        Anti-windup by conditional integration: inside the bounds the integral always integrates;
        at a bound it may only move in the direction that brings ``thr`` back inside. So the
        integral never grows while the threshold is saturated (it cannot wind up), and it is never
        stuck either: once the error changes sign the controller leaves the bound.
        """
        c = self.config
        r = selected / batch_size
        self.updates += 1
        self.seen += batch_size
        self.selected += selected
        self.epoch_seen += batch_size
        self.epoch_selected += selected
        self.ema = c.ema * r + (1.0 - c.ema) * self.ema
        e = self.ema - c.target  # > 0: too many selected, the threshold must rise
        inside = c.thr_min < self.thr < c.thr_max
        unwinds = (self.thr >= c.thr_max and e < 0) or (self.thr <= c.thr_min and e > 0)
        if inside or unwinds:
            self.integral = min(max(self.integral + e, -INTEGRAL_LIMIT), INTEGRAL_LIMIT)
        self.thr = min(max(self.thr + c.kp * e + c.ki * self.integral, c.thr_min), c.thr_max)
        return self.thr

    def start_epoch(self) -> None:
        self.epoch_seen = self.epoch_selected = 0

    @property
    def rate(self) -> float:
        """The true activation rate over the run so far (selected / seen)."""
        return self.selected / self.seen if self.seen else float("nan")

    @property
    def epoch_rate(self) -> float:
        return self.epoch_selected / self.epoch_seen if self.epoch_seen else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {"thr": self.thr, "integral": self.integral, "ema": self.ema,
                "updates": self.updates, "seen": self.seen, "selected": self.selected,
                "epoch_seen": self.epoch_seen, "epoch_selected": self.epoch_selected,
                "config": asdict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.thr, self.integral, self.ema = state["thr"], state["integral"], state["ema"]
        self.updates, self.seen, self.selected = state["updates"], state["seen"], state["selected"]
        self.epoch_seen, self.epoch_selected = state["epoch_seen"], state["epoch_selected"]
