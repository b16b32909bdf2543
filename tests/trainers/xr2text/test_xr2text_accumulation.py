"""Gradient accumulation: 8 micro-batches per optimizer step, and an epoch's remainder flushed
as one more step whose gradient is the mean over the micro-batches it really has."""

from __future__ import annotations

import copy

import torch

from trainers.xr2text.text import BOS, EOS, PAD
from trainers.xr2text.train import Trainer, groups, parse_args, resolve

VOCAB = 20


def micro_batch(i: int, batch: int = 4, length: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    images = torch.randn(batch, 1, 3, 32, 32, generator=g)
    ids = torch.randint(4, VOCAB, (batch, length), generator=g)
    ids[:, 0] = BOS
    for row, n in enumerate(torch.randint(3, length, (batch,), generator=g).tolist()):
        ids[row, n] = EOS
        ids[row, n + 1:] = PAD
    return images, ids


def test_8k_plus_3_micro_batches_make_k_plus_1_steps_the_last_the_mean_of_3(tiny):
    k = 2
    args = resolve(parse_args(tiny + ["--synthetic", "--views", "1", "--dropout", "0",
                                      "--clip", "0"]))
    assert args.accum_steps == 8 and args.batch_size == 4  # the defaults the issue asks for
    torch.manual_seed(0)
    t = Trainer(args, VOCAB)
    epoch = [micro_batch(i) for i in range(8 * k + 3)]
    steps: list[dict[str, torch.Tensor]] = []
    expected: dict[str, torch.Tensor] = {}

    def before_step(optimizer, *_):
        grads = {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}
        steps.append(grads)
        if len(steps) == k + 1:  # the flushed remainder: recompute its mean gradient apart
            twin = copy.deepcopy(t.model)
            per_micro = []
            for images, ids in epoch[8 * k:]:
                twin.zero_grad(set_to_none=True)
                n = int((ids != PAD).sum(1).max())
                twin(images, ids[:, :n]).backward()
                per_micro.append({m: p.grad.clone() for m, p in twin.named_parameters()
                                  if p.grad is not None})
            expected.update({m: sum(g[m] for g in per_micro) / 3 for m in per_micro[0]})

    t.optimizer.register_step_pre_hook(before_step)
    sizes, counts = [], []
    for group in groups(epoch, args.accum_steps):
        sizes.append(len(group))
        counts.append(t.step(group)["n"])

    assert sizes == [8] * k + [3] and counts == [32] * k + [12]
    assert len(steps) == k + 1  # exactly k + 1 optimizer steps
    last = steps[-1]
    assert set(last) == set(expected) and len(last) > 10
    for name, grad in expected.items():
        torch.testing.assert_close(last[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # Not the sum, not the mean over a full group of 8.
    big = max(expected, key=lambda m: float(expected[m].abs().max()))
    assert not torch.allclose(last[big], expected[big] * 3, rtol=1e-3)
    assert not torch.allclose(last[big], expected[big] * 3 / 8, rtol=1e-3)
