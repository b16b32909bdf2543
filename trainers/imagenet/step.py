"""One micro-batch of training: the selection pass, then forward and backward on what it chose.

Batch norm and the selection pass. The pass runs in *training* mode (batch statistics, as the
training forward will use) with the running statistics switched off for its duration
(``track_running_stats = False`` makes ``F.batch_norm`` neither read nor update them). So:

- the scores are those of the network as it trains, not of its eval-mode twin, whose running
  statistics are a moving average over past weights (at the start, the initial 0 and 1) and lag
  behind it most when the selection matters most, early in training;
- the running statistics are updated exactly once per step, by the training forward, as in the
  baseline; a second update from the same images would double their momentum;
- ``num_batches_tracked`` is untouched by the pass, so it counts training forwards in both modes
  (``--ast on`` and ``off``).

The running statistics then follow the selected (harder) samples; validation uses them, and the
reported val accuracy includes that effect, as it should.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from trainers.common import distributed
from trainers.imagenet.selection import PIController, sample_scores, select


@contextlib.contextmanager
def running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Batch norm layers normalise with batch statistics and leave their buffers alone."""
    layers = [m for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


@dataclass
class MicroStats:
    seen: int = 0  # samples in the micro-batch
    selected: int = 0  # samples that went through forward + backward
    loss_sum: float = 0.0  # cross-entropy summed over every sample seen
    correct: int = 0  # top-1 hits over every sample seen
    thr: float = float("nan")  # the threshold the selection used

    def add(self, other: "MicroStats") -> None:
        self.seen += other.seen
        self.selected += other.selected
        self.loss_sum += other.loss_sum
        self.correct += other.correct
        self.thr = other.thr


def micro_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               controller: PIController | None,
               autocast: Callable[[], contextlib.AbstractContextManager],
               scaler: torch.amp.GradScaler | None, loss_weight: float,
               round_to: int = 1) -> MicroStats:
    """Accumulate the gradients of one micro-batch (the caller steps the optimizer).

    With a controller: score the whole batch without gradients, select, update the controller,
    and run forward + backward on ``x[idx]`` only. Without one (``--ast off``): every sample.
    The loss is the mean cross-entropy of the samples trained on, times ``loss_weight``
    (1 / micro-batches per step, for gradient accumulation).
    """
    b = len(y)
    stats = MicroStats(seen=b)
    if controller is None:
        with autocast():
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            stats.loss_sum = float(F.cross_entropy(logits.float(), y, reduction="sum"))
            stats.correct = int((logits.argmax(1) == y).sum())
        stats.selected = b
        _backward(loss * loss_weight, scaler)
        return stats

    with torch.no_grad(), running_stats_frozen(model), autocast():
        logits = model(x)
    scored = sample_scores(logits, y)
    stats.loss_sum = float(scored["ce"].sum())
    stats.correct = int(scored["correct"].sum())
    # Under torchrun every rank's controller sees the whole step (all ranks' scores and counts),
    # so they keep one threshold, the one rank 0's checkpoint saves.
    controller.init_from(scored["score"] if controller.initialized else distributed.all_gather_cat(scored["score"]))
    stats.thr = controller.thr
    idx = select(scored["score"], controller.thr, round_to)
    stats.selected = int(idx.numel())
    selected, seen = distributed.all_sum([stats.selected, b])
    controller.update(int(selected), int(seen))
    xs, ys = x[idx], y[idx]
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        xs = xs.contiguous(memory_format=torch.channels_last)
    with autocast():
        loss = F.cross_entropy(model(xs), ys)
    _backward(loss * loss_weight, scaler)
    return stats


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()
