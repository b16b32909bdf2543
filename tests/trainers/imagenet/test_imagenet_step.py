"""The compute saving is real: only the selected samples go through forward-with-grad and
backward, and batch norm's running statistics are updated once per step."""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

from trainers.imagenet.selection import ControllerConfig, PIController, sample_scores, select
from trainers.imagenet.step import micro_step

B = 20


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        return self.head(self.body(x))


class Counter:
    """Batch sizes seen by the head's forward (with/without grad) and backward."""

    def __init__(self, model: Net):
        self.forward_grad, self.forward_nograd, self.backward = [], [], []
        model.head.register_forward_hook(self._fwd)
        model.head.register_full_backward_hook(self._bwd)

    def _fwd(self, module, inputs, output):
        (self.forward_grad if torch.is_grad_enabled() else self.forward_nograd).append(
            len(inputs[0]))

    def _bwd(self, module, grad_input, grad_output):
        self.backward.append(len(grad_output[0]))


def batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(B, 3, 8, 8, generator=g), torch.randint(0, 5, (B,), generator=g)


def run(model, x, y, controller):
    model.train()
    return micro_step(model, x, y, controller=controller, autocast=contextlib.nullcontext,
                      scaler=None, loss_weight=1.0)


def test_forward_and_backward_run_on_the_selected_subset_only():
    model, (x, y) = Net(), batch()
    counter = Counter(model)
    c = PIController(ControllerConfig(thr_init=1e6))  # nothing passes: the top 10% (2 of 20)
    stats = run(model, x, y, c)
    assert counter.forward_nograd == [B]  # the selection pass scores everyone
    assert counter.forward_grad == [2] and counter.backward == [2]
    assert (stats.seen, stats.selected) == (B, 2)
    assert (c.seen, c.selected, c.updates) == (B, 2, 1)


def test_gradient_is_the_subset_loss_gradient():
    model, (x, y) = Net(), batch()
    reference = copy.deepcopy(model)
    c = PIController(ControllerConfig(thr_init=1.55))
    run(model, x, y, c)
    # The same selection by hand: scores with batch statistics, then the subset's mean CE.
    with torch.no_grad():
        frozen = copy.deepcopy(reference).train()
        for m in frozen.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.track_running_stats = False
        idx = select(sample_scores(frozen(x), y)["score"], 1.55)
    assert 2 < len(idx) < B  # a real partial selection
    F.cross_entropy(reference.train()(x[idx]), y[idx]).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(p.grad, q.grad), name
    # Running statistics: updated once, from the selected samples (as the reference's one pass).
    bn, ref_bn = model.body[1], reference.body[1]
    assert torch.equal(bn.running_mean, ref_bn.running_mean)
    assert torch.equal(bn.running_var, ref_bn.running_var)
    assert int(bn.num_batches_tracked) == 1


def test_ast_off_trains_on_every_sample():
    model, (x, y) = Net(), batch()
    counter = Counter(model)
    stats = run(model, x, y, None)
    assert counter.forward_grad == [B] and counter.forward_nograd == [] and counter.backward == [B]
    assert stats.selected == B
